// Model tests: the CPU backend's logits against PyTorch reference values (tests/fixtures, made by
// tools/make_fixtures.py), and the invariants the ring relies on: decoding one token at a time,
// splitting the layers over stages and batching samples together all give bit-identical logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "mdi/backend.h"
#include "mdi/cpu_ops.h"
#include "mdi/h5.h"
#include "mdi/weights.h"

namespace {

const std::string kFixtures = MDI_FIXTURES;

struct Reference {
  std::vector<int> tokens;
  std::vector<float> logits;  // (T, V)
};

Reference read_reference(const std::string& name, int V) {
  const std::string path = kFixtures + "/" + name;
  mdi::h5::Handle f = mdi::h5::open_file(path);
  Reference r;
  for (int64_t t : mdi::h5::read_int64s(f.get(), "/tokens", path)) r.tokens.push_back(int(t));
  const hsize_t T = r.tokens.size();
  r.logits.resize(T * V);
  mdi::h5::read_floats(f.get(), "/logits", {T, hsize_t(V)}, r.logits.data(), path);
  return r;
}

// One "stage" of the pipeline: a layer range of the model on its own backend.
struct Stage {
  mdi::Weights w;
  std::unique_ptr<mdi::Backend> be;
  Stage(const std::string& path, const mdi::Config& cfg, int l0, int l1, bool head, int samples,
        int threads = 1, bool keep_halves = false)
      : w(mdi::load_weights(path, cfg, l0, l1, head, 0, -1, keep_halves)),
        be(mdi::make_cpu_backend(cfg, w,
                                 mdi::BackendSpec{cfg.block_size * samples, samples, threads})) {}
};

// Logits at every position of a prefill of `tokens` through the given stages (first has the head).
std::vector<float> prefill_logits(std::vector<Stage*> stages, const mdi::Config& cfg,
                                  const std::vector<int>& tokens, int sample = 0) {
  const int T = int(tokens.size()), C = cfg.n_embd, V = cfg.vocab_size;
  std::vector<float> x(size_t(T) * C), out(size_t(T) * V);
  mdi::BatchItem all{sample, 0, T};
  stages[0]->be->embed(x.data(), tokens.data(), &all, 1);
  for (Stage* s : stages) s->be->forward(x.data(), &all, 1);
  std::vector<mdi::BatchItem> rows;  // one item per row: logits of every position
  for (int p = 0; p < T; ++p) rows.push_back({sample, p, 1});
  stages[0]->be->logits(out.data(), x.data(), rows.data(), T);
  return out;
}

class ModelVsPyTorch : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelVsPyTorch, LogitsMatchReferenceAtEveryPosition) {
  const std::string name = GetParam();
  const std::string path = kFixtures + "/" + name + ".h5";
  const mdi::Config cfg = mdi::read_config(path);
  const Reference ref = read_reference(name + "_ref.h5", cfg.vocab_size);
  ASSERT_EQ(int(ref.tokens.size()), cfg.block_size);
  Stage whole(path, cfg, 0, cfg.n_layer, true, 1);
  const std::vector<float> got = prefill_logits({&whole}, cfg, ref.tokens);
  double max_err = 0;
  for (size_t i = 0; i < got.size(); ++i) max_err = std::max(max_err, double(std::fabs(got[i] - ref.logits[i])));
  std::printf("[ figure ] %s: max abs logit error vs PyTorch over %zu logits = %.3g\n", name.c_str(),
              got.size(), max_err);
  RecordProperty("max_abs_err", std::to_string(max_err));
  EXPECT_LE(max_err, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelVsPyTorch,
                         ::testing::Values("tiny_gpt2", "tiny_nanogpt", "tiny_gpt2_fp16"));

class Invariants : public ::testing::Test {
 protected:
  const std::string path = kFixtures + "/tiny_gpt2.h5";
  const mdi::Config cfg = mdi::read_config(path);
  const Reference ref = read_reference("tiny_gpt2_ref.h5", cfg.vocab_size);
};

// Decoding token by token through the KV cache gives the prefill's logits, bit for bit.
TEST_F(Invariants, DecodeEqualsPrefillBitwise) {
  Stage whole(path, cfg, 0, cfg.n_layer, true, 2);
  const std::vector<float> pre = prefill_logits({&whole}, cfg, ref.tokens, 1);
  const int C = cfg.n_embd, V = cfg.vocab_size;
  std::vector<float> x(C), out(V);
  for (int p = 0; p < cfg.block_size; ++p) {
    mdi::BatchItem it{0, p, 1};
    whole.be->embed(x.data(), &ref.tokens[p], &it, 1);
    whole.be->forward(x.data(), &it, 1);
    whole.be->logits(out.data(), x.data(), &it, 1);
    ASSERT_EQ(0, std::memcmp(out.data(), pre.data() + size_t(p) * V, V * sizeof(float))) << "position " << p;
  }
}

// Layers split over stages (as over ranks) give the single stage's logits, bit for bit, and each
// stage holds only its share of the weights.
TEST_F(Invariants, SplitEqualsWholeBitwise) {
  Stage whole(path, cfg, 0, cfg.n_layer, true, 1);
  const std::vector<float> a = prefill_logits({&whole}, cfg, ref.tokens);
  Stage s0(path, cfg, 0, 1, true, 1), s1(path, cfg, 1, 3, false, 1), s2(path, cfg, 3, 4, false, 1);
  const std::vector<float> b = prefill_logits({&s0, &s1, &s2}, cfg, ref.tokens);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  // Each tensor starts 64-byte aligned: at most 64 bytes of padding per tensor (12 per layer).
  EXPECT_NEAR(double(s1.w.bytes()), 2.0 * cfg.block_params() * sizeof(float), 2 * 12 * 64);
  EXPECT_NEAR(double(s2.w.bytes()), 1.0 * cfg.block_params() * sizeof(float), 12 * 64);
  EXPECT_NEAR(double(s0.w.bytes()), double(cfg.block_params() + cfg.head_params()) * sizeof(float), 17 * 64);
}

// A sample's logits do not depend on the other samples in its batch, nor on the thread count.
TEST_F(Invariants, BatchingAndThreadsDoNotChangeBits) {
  const int T = 8, C = cfg.n_embd, V = cfg.vocab_size;
  std::vector<int> toks(ref.tokens.begin(), ref.tokens.begin() + T);
  Stage one(path, cfg, 0, cfg.n_layer, true, 3, 1);
  const std::vector<float> alone = prefill_logits({&one}, cfg, toks, 0);
  Stage many(path, cfg, 0, cfg.n_layer, true, 3, 2);
  // Three samples in one batch: the middle one is `toks`, the others are different prompts.
  std::vector<int> batch_tokens;
  for (int s = 0; s < 3; ++s)
    for (int t = 0; t < T; ++t) batch_tokens.push_back(s == 1 ? toks[t] : ref.tokens[(t * 7 + s) % ref.tokens.size()]);
  std::vector<mdi::BatchItem> items = {{0, 0, T}, {1, 0, T}, {2, 0, T}};
  std::vector<float> x(size_t(3) * T * C), out(3 * size_t(V));
  many.be->embed(x.data(), batch_tokens.data(), items.data(), 3);
  many.be->forward(x.data(), items.data(), 3);
  many.be->logits(out.data(), x.data(), items.data(), 3);
  EXPECT_EQ(0, std::memcmp(out.data() + V, alone.data() + size_t(T - 1) * V, V * sizeof(float)));
}

// The ring's progress hook (Backend::set_progress): forward() calls it after each of a layer's four
// matrix products, and the activations are those of a forward without it.
TEST_F(Invariants, ForwardCallsProgressAfterEveryMatmul) {
  const int T = 5, C = cfg.n_embd;
  Stage plain(path, cfg, 1, 4, false, 1), hooked(path, cfg, 1, 4, false, 1);
  int calls = 0;
  hooked.be->set_progress([&] { ++calls; });
  std::vector<float> a(size_t(T) * C), b;
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.1f * float(i));
  b = a;
  const mdi::BatchItem all{0, 0, T};
  plain.be->forward(a.data(), &all, 1);
  hooked.be->forward(b.data(), &all, 1);
  EXPECT_EQ(calls, 4 * 3);  // layers 1, 2 and 3
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  hooked.be->set_progress(nullptr);
  hooked.be->forward(b.data(), &all, 1);
  EXPECT_EQ(calls, 4 * 3);
}

// Rank 0's lm_head runs in slices of the vocabulary with the progress hook after each (4 for
// 50257 rows of C = 64): the logits are one whole matmul's, bit for bit.
TEST(HeadSlices, ProgressBetweenSlicesSameBits) {
  mdi::Config cfg;
  cfg.model_type = "gpt2";
  cfg.n_layer = 1;
  cfg.n_head = 4;
  cfg.n_embd = 64;
  cfg.block_size = 8;
  cfg.vocab_size = 50257;
  const size_t C = cfg.n_embd, V = cfg.vocab_size, T = cfg.block_size;
  mdi::Weights w;
  w.layer_begin = w.layer_end = 0;  // the head only, as rank 0 with no layers
  w.has_head = true;
  w.storage.resize(V * C + T * C + 2 * C);
  for (size_t i = 0; i < w.storage.size(); ++i) w.storage[i] = std::sin(0.37f * float(i % 9973)) * 0.1f;
  w.head.wte = w.head.lm_head = w.storage.data();
  w.head.wpe = w.storage.data() + V * C;
  w.head.lnf_w = w.head.wpe + T * C;
  w.head.lnf_b = w.head.lnf_w + C;
  w.head.lm_end = int(V);
  auto be = mdi::make_cpu_backend(cfg, w, mdi::BackendSpec{int(T), 2, 2});
  int calls = 0;
  be->set_progress([&] { ++calls; });
  const std::vector<mdi::BatchItem> items = {{0, 0, 3}, {1, 0, 2}};  // last rows: 2 and 4
  std::vector<float> x(5 * C), out(2 * V), want(2 * V), rows(2 * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.05f * float(i));
  be->logits(out.data(), x.data(), items.data(), 2);
  EXPECT_EQ(calls, 4);
  std::memcpy(rows.data(), x.data() + 2 * C, C * sizeof(float));
  std::memcpy(rows.data() + C, x.data() + 4 * C, C * sizeof(float));
  mdi::cpu::layernorm_forward(rows.data(), rows.data(), w.head.lnf_w, w.head.lnf_b, 2, int(C), cfg.layer_norm_eps);
  mdi::cpu::matmul_forward(want.data(), rows.data(), w.head.lm_head, nullptr, 2, int(C), int(V));
  EXPECT_EQ(0, std::memcmp(out.data(), want.data(), out.size() * sizeof(float)));
}

// A KV cache sized to the run's longest context (BackendSpec::positions) instead of block_size:
// the same logits bit for bit through a prefill and decode steps of two samples, in less memory.
TEST(KvCache, SizedToTheLongestContextGivesTheSameBits) {
  const std::string path = kFixtures + "/tiny_gpt2.h5";
  const mdi::Config cfg = mdi::read_config(path);
  const int C = cfg.n_embd, V = cfg.vocab_size, P = 3, steps = 3, positions = P + steps;
  ASSERT_LT(positions, cfg.block_size);
  const mdi::Weights w = mdi::load_weights(path, cfg, 0, cfg.n_layer, true);
  auto full = mdi::make_cpu_backend(cfg, w, mdi::BackendSpec{2 * P, 2, 1});
  auto small = mdi::make_cpu_backend(cfg, w, mdi::BackendSpec{2 * P, 2, 1, 0, positions});
  EXPECT_LT(small->workspace_bytes(), full->workspace_bytes());
  std::vector<float> want(2 * size_t(V)), got(2 * size_t(V));
  for (int pos = 0; pos < positions; pos += pos == 0 ? P : 1) {
    const int rows = pos == 0 ? P : 1;  // a prefill of P rows, then one row per sample and step
    const std::vector<mdi::BatchItem> items = {{0, pos, rows}, {1, pos, rows}};
    std::vector<int> tokens(2 * size_t(rows));
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int(5 * i + 7 * pos + 1) % V;
    for (auto* be : {full.get(), small.get()}) {
      std::vector<float> x(tokens.size() * C);
      be->embed(x.data(), tokens.data(), items.data(), 2);
      be->forward(x.data(), items.data(), 2);
      be->logits(be == full.get() ? want.data() : got.data(), x.data(), items.data(), 2);
    }
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << "pos " << pos;
  }
}

// The head split: a rank holding rows [a, b) of the lm_head (rank 0 the first rows, with the
// embeddings; the last rank the rest, with ln_f and no embeddings) gives exactly those columns of
// the whole head's logits, for a tied, an untied and an fp16 lm_head, and loads only its rows.
TEST(HeadSplit, RowsOfTheLmHeadGiveThoseColumnsBitwise) {
  for (const char* name : {"tiny_gpt2.h5", "tiny_nanogpt.h5", "tiny_gpt2_fp16.h5"}) {
    const std::string path = kFixtures + "/" + name;
    const mdi::Config cfg = mdi::read_config(path);
    const int V = cfg.vocab_size, C = cfg.n_embd, L = cfg.n_layer, T = 9;
    Stage whole(path, cfg, 0, L, true, 1);
    std::vector<int> tokens(T);
    for (int i = 0; i < T; ++i) tokens[i] = (7 * i + 3) % V;
    std::vector<float> x(size_t(T) * C);
    mdi::BatchItem all{0, 0, T};
    whole.be->embed(x.data(), tokens.data(), &all, 1);
    whole.be->forward(x.data(), &all, 1);
    std::vector<mdi::BatchItem> rows;
    for (int p = 0; p < T; ++p) rows.push_back({0, p, 1});
    std::vector<float> want(size_t(T) * V);
    whole.be->logits(want.data(), x.data(), rows.data(), T);
    for (int t : {1, V / 3, V - 1, V}) {
      const mdi::Weights w0 = mdi::load_weights(path, cfg, 0, 0, true, 0, V - t);
      const mdi::Weights wl = mdi::load_weights(path, cfg, L, L, false, V - t, V);
      EXPECT_FALSE(wl.has_head);
      EXPECT_EQ(wl.head.wte, nullptr);
      EXPECT_LE(wl.bytes(), (size_t(t) * C + 2 * C + 48) * sizeof(float)) << name;  // its rows and ln_f only
      const mdi::BackendSpec spec{T, 1, 1};
      auto b0 = mdi::make_cpu_backend(cfg, w0, spec), bl = mdi::make_cpu_backend(cfg, wl, spec);
      std::vector<float> got0(size_t(T) * (V - t) + 1), gotl(size_t(T) * t);
      b0->logits(got0.data(), x.data(), rows.data(), T);
      bl->logits(gotl.data(), x.data(), rows.data(), T);
      for (int p = 0; p < T; ++p) {
        EXPECT_EQ(0, std::memcmp(got0.data() + size_t(p) * (V - t), want.data() + size_t(p) * V,
                                 size_t(V - t) * sizeof(float))) << name << " t=" << t << " p=" << p;
        EXPECT_EQ(0, std::memcmp(gotl.data() + size_t(p) * t, want.data() + size_t(p) * V + (V - t),
                                 size_t(t) * sizeof(float))) << name << " t=" << t << " p=" << p;
      }
    }
  }
}

// A float16 file's matrices kept as halves (what the pipeline gives a CPU rank) give the logits of
// the file loaded as fp32, bit for bit: a prefill through two stages, then decode steps of two
// samples together, with 1 and 2 threads; and the rows of a head split's last rank.
TEST(Halves, CpuStagesOnAFloat16FilesHalvesGiveTheBitsOfItsFp32Load) {
  const std::string path = kFixtures + "/tiny_gpt2_fp16.h5";
  const mdi::Config cfg = mdi::read_config(path);
  const int V = cfg.vocab_size, C = cfg.n_embd, L = cfg.n_layer, T = 9;
  std::vector<int> tokens(T);
  for (int i = 0; i < T; ++i) tokens[i] = (5 * i + 2) % V;
  auto run = [&](bool halves, int threads) {
    Stage a(path, cfg, 0, 1, true, 2, threads, halves),
        b(path, cfg, 1, L, false, 2, threads, halves);
    EXPECT_EQ(a.w.matrices_f16, halves);
    EXPECT_EQ(b.w.matrices_f16, halves);
    std::vector<float> out = prefill_logits({&a, &b}, cfg, tokens, 1);
    // Two decode steps of samples 0 (after a 3-token prefill) and 1, in one batch.
    std::vector<float> x(size_t(T) * C), lg(2 * size_t(V));
    mdi::BatchItem first{0, 0, 3};
    a.be->embed(x.data(), tokens.data(), &first, 1);
    a.be->forward(x.data(), &first, 1);
    b.be->forward(x.data(), &first, 1);
    for (int step = 0; step < 2; ++step) {
      const int ids[2] = {tokens[3 + step], tokens[step]};
      const mdi::BatchItem items[2] = {{0, 3 + step, 1}, {1, T + step, 1}};
      a.be->embed(x.data(), ids, items, 2);
      a.be->forward(x.data(), items, 2);
      b.be->forward(x.data(), items, 2);
      a.be->logits(lg.data(), x.data(), items, 2);
      out.insert(out.end(), lg.begin(), lg.end());
    }
    return out;
  };
  for (int threads : {1, 2}) {
    const std::vector<float> want = run(false, threads), got = run(true, threads);
    ASSERT_EQ(want.size(), got.size());
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
        << threads << " threads";
  }
  // The last rank of a head split: its rows of the lm_head, as halves.
  const int t = V / 3;
  const mdi::Weights w32 = mdi::load_weights(path, cfg, L, L, false, V - t, V),
                     w16 = mdi::load_weights(path, cfg, L, L, false, V - t, V, true);
  EXPECT_TRUE(w16.matrices_f16);
  const mdi::BackendSpec spec{T, 1, 1};
  auto b32 = mdi::make_cpu_backend(cfg, w32, spec), b16 = mdi::make_cpu_backend(cfg, w16, spec);
  std::vector<float> x(size_t(T) * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 17) - 8) / 8.0f;
  std::vector<mdi::BatchItem> rows;
  for (int p = 0; p < T; ++p) rows.push_back({0, p, 1});
  std::vector<float> want(size_t(T) * t), got(want.size());
  b32->logits(want.data(), x.data(), rows.data(), T);
  b16->logits(got.data(), x.data(), rows.data(), T);
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
}

}  // namespace
