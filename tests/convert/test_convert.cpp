// mdi-convert tests: the committed fixtures (tests/fixtures/hf_tiny, nanogpt_tiny, made by
// tools/make_hf_fixture.py) converted and run on the CPU backend against their reference logits;
// safetensors made here in C++ (no Python) checked tensor by tensor; --random; and bad inputs,
// each of which must give exit status 1, one clear message and no output file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "convert.h"
#include "mdi/backend.h"
#include "mdi/bpe.h"
#include "mdi/error.h"
#include "mdi/h5.h"
#include "mdi/half.h"
#include "mdi/tokenizer.h"
#include "mdi/weights.h"
#include "safetensors.h"

namespace {

using json = nlohmann::json;
namespace cv = mdi::convert;

const std::string kFixtures = MDI_FIXTURES;
const std::string kExe = MDI_CONVERT_EXE;

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void spit(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
bool exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0;
}

struct CliResult {
  int rc;
  std::string out;  // stdout + stderr
};
CliResult run(const std::string& args) {
  std::string log = ::testing::TempDir() + "/mdi_convert_run_XXXXXX";  // unique: ctest -j
  const int fd = mkstemp(log.data());
  if (fd >= 0) ::close(fd);
  const int st = std::system((kExe + " " + args + " >" + log + " 2>&1").c_str());
  CliResult r{WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(log)};
  std::remove(log.c_str());
  return r;
}

// A Python 3 with torch for the .pt/.bin paths, or "" (then those tests are skipped).
std::string python_with_torch() {
  for (const char* py : {"/usr/bin/python3", "python3"})
    if (std::system((std::string(py) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0) return py;
  return "";
}

class TmpDir {
 public:
  TmpDir() {
    std::string t = ::testing::TempDir() + "/mdi_convert_XXXXXX";
    path = mkdtemp(t.data()) ? t : "";
  }
  ~TmpDir() {
    std::error_code ignored;  // a folder that cannot be removed is no test failure
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
  std::string path;
};

// Logits at every position of a prefill on the CPU backend, whole model on one stage.
std::vector<float> model_logits(const std::string& path, const std::vector<int>& tokens) {
  const mdi::Config cfg = mdi::read_config(path);
  const mdi::Weights w = mdi::load_weights(path, cfg, 0, cfg.n_layer, true);
  auto be = mdi::make_cpu_backend(cfg, w, mdi::BackendSpec{cfg.block_size, 1, 1});
  const int T = int(tokens.size());
  std::vector<float> x(size_t(T) * cfg.n_embd), out(size_t(T) * cfg.vocab_size);
  mdi::BatchItem all{0, 0, T};
  be->embed(x.data(), tokens.data(), &all, 1);
  be->forward(x.data(), &all, 1);
  std::vector<mdi::BatchItem> rows;
  for (int p = 0; p < T; ++p) rows.push_back({0, p, 1});
  be->logits(out.data(), x.data(), rows.data(), T);
  return out;
}

// Max abs error of the converted model's logits against the fixture's reference.
double error_vs_reference(const std::string& model, const std::string& ref_name) {
  const std::string ref = kFixtures + "/" + ref_name;
  mdi::h5::Handle f = mdi::h5::open_file(ref);
  std::vector<int> tokens;
  for (int64_t t : mdi::h5::read_int64s(f.get(), "/tokens", ref)) tokens.push_back(int(t));
  const mdi::Config cfg = mdi::read_config(model);
  std::vector<float> want(tokens.size() * cfg.vocab_size);
  mdi::h5::read_floats(f.get(), "/logits", {tokens.size(), hsize_t(cfg.vocab_size)}, want.data(), ref);
  const std::vector<float> got = model_logits(model, tokens);
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, double(std::fabs(got[i] - want[i])));
  return err;
}

// ---- the committed fixtures

TEST(ConvertFixtures, HfSafetensorsMatchesReference) {
  TmpDir d;
  const CliResult r = run("--hf " + kFixtures + "/hf_tiny --out " + d.path + "/m.h5");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("34976 parameters"), std::string::npos) << r.out;
  const double err = error_vs_reference(d.path + "/m.h5", "hf_tiny_ref.h5");
  std::printf("[ figure ] hf_tiny (safetensors) converted: max abs logit error vs reference = %.3g\n", err);
  EXPECT_LE(err, 1e-4);
  // The tokenizer in the file is the directory's, id for id.
  auto tok = mdi::load_tokenizer(d.path + "/m.h5");
  const mdi::Gpt2Bpe ref = mdi::Gpt2Bpe::from_files(kFixtures + "/hf_tiny/vocab.json", kFixtures + "/hf_tiny/merges.txt");
  const std::string text = "First Citizen: speak, speak! All: résolved 123\n\xff";
  EXPECT_EQ(tok->type(), "gpt2-bpe");
  EXPECT_EQ(tok->encode(text), ref.encode(text));
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
  EXPECT_EQ(tok->eot(), std::optional<int>(280));
}

TEST(ConvertFixtures, HfFp16IsCloseToFp32) {
  TmpDir d;
  ASSERT_EQ(run("--hf " + kFixtures + "/hf_tiny --dtype fp16 -q --out " + d.path + "/m.h5").rc, 0);
  mdi::h5::Handle f = mdi::h5::open_file(d.path + "/m.h5");
  mdi::h5::Handle ds(H5Dopen2(f.get(), "/wte", H5P_DEFAULT));
  mdi::h5::Handle type(H5Dget_type(ds.get()));
  EXPECT_EQ(H5Tget_size(type.get()), 2u);
  const double err = error_vs_reference(d.path + "/m.h5", "hf_tiny_ref.h5");
  std::printf("[ figure ] hf_tiny stored fp16: max abs logit error vs reference = %.3g\n", err);
  EXPECT_LE(err, 2e-3);
}

TEST(ConvertFixtures, HfPytorchBinMatchesReference) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no Python 3 with torch: the .bin path is not tested";
  TmpDir d;
  const CliResult r = run("--hf " + kFixtures + "/hf_tiny --bin --python " + py + " --out " + d.path + "/m.h5");
  ASSERT_EQ(r.rc, 0) << r.out;
  // transformers 5 writes no causal-mask buffers (older .bin files do: HfInCpp covers those);
  // lm_head.weight is there, sharing wte's storage, and is recognised as tied.
  EXPECT_TRUE(mdi::read_config(d.path + "/m.h5").tied_lm_head);
  const double err = error_vs_reference(d.path + "/m.h5", "hf_tiny_ref.h5");
  std::printf("[ figure ] hf_tiny (pytorch_model.bin) converted: max abs logit error = %.3g\n", err);
  EXPECT_LE(err, 1e-4);
}

TEST(ConvertFixtures, NanoGptCkptMatchesReference) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no Python 3 with torch: the ckpt.pt path is not tested";
  TmpDir d;
  const CliResult r = run("--nanogpt " + kFixtures + "/nanogpt_tiny/ckpt.pt --python " + py + " --out " + d.path + "/m.h5");
  ASSERT_EQ(r.rc, 0) << r.out;
  const mdi::Config cfg = mdi::read_config(d.path + "/m.h5");
  EXPECT_EQ(cfg.model_type, "nanogpt");
  EXPECT_FALSE(cfg.bias);
  const double err = error_vs_reference(d.path + "/m.h5", "nanogpt_tiny_ref.h5");
  std::printf("[ figure ] nanogpt_tiny (ckpt.pt, _orig_mod.) converted: max abs logit error = %.3g\n", err);
  EXPECT_LE(err, 1e-4);
  auto tok = mdi::load_tokenizer(d.path + "/m.h5");
  EXPECT_EQ(tok->type(), "char");
  EXPECT_EQ(tok->decode(tok->encode("ROMEO: café")), "ROMEO: café");
}

TEST(ConvertFixtures, MissingPythonIsAClearError) {
  TmpDir d;
  const CliResult r = run("--nanogpt " + kFixtures + "/nanogpt_tiny/ckpt.pt --python /nonexistent/python3 --out " +
                    d.path + "/m.h5");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("needs Python 3 with torch"), std::string::npos) << r.out;
  EXPECT_FALSE(exists(d.path + "/m.h5"));
}

// ---- safetensors written here: an HF GPT-2 of random weights, checked tensor by tensor

struct StEntry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::string st_file(const std::vector<StEntry>& es) {
  json h = json::object();
  std::string data;
  for (const StEntry& e : es) {
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.bytes.size()}}};
    data += e.bytes;
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((uint64_t(hs.size()) >> (8 * i)) & 0xff);
  return out + hs + data;
}

std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }
std::string f16_bytes(const std::vector<float>& v) {
  std::string s;
  for (float x : v) {
    uint16_t h = cv::float_to_half(x);
    s += char(h & 0xff);
    s += char(h >> 8);
  }
  return s;
}

// A random HF GPT-2 directory: config.json, model.safetensors (Conv1D (in, out)), the fixture's
// tokenizer. `want` gets every tensor under its file name, (out, in), as the converter must write it.
struct HfDir {
  std::string dir;
  int L = 2, NH = 2, C = 8, T = 8, V = 281;
  std::map<std::string, std::vector<float>> want;
  std::vector<StEntry> entries;

  explicit HfDir(const std::string& d, bool prefix = true, const std::string& dtype = "F32", bool untied = false) : dir(d) {
    std::mt19937 g(7);
    std::normal_distribution<float> n(0.f, 0.5f);
    auto add = [&](const std::string& file_name, const std::string& key, std::vector<int64_t> shape, bool conv) {
      size_t numel = 1;
      for (int64_t s : shape) numel *= size_t(s);
      std::vector<float> v(numel);
      for (float& x : v) x = n(g);
      if (dtype == "F16")
        for (float& x : v) x = mdi::half_to_float(cv::float_to_half(x));
      if (dtype == "BF16") for (float& x : v) { uint32_t b; std::memcpy(&b, &x, 4); x = cv::bf16_to_float(uint16_t(b >> 16)); }
      std::vector<int64_t> src_shape = shape;
      std::vector<float> src = v;
      if (conv) {  // stored (in, out)
        std::swap(src_shape[0], src_shape[1]);
        const size_t O = size_t(shape[0]), I = size_t(shape[1]);
        for (size_t o = 0; o < O; ++o)
          for (size_t i = 0; i < I; ++i) src[i * O + o] = v[o * I + i];
      }
      std::string bytes;
      if (dtype == "F32") bytes = f32_bytes(src);
      else if (dtype == "F16") bytes = f16_bytes(src);
      else if (dtype == "BF16")
        for (float x : src) {
          uint32_t b;
          std::memcpy(&b, &x, 4);
          bytes += char((b >> 16) & 0xff);
          bytes += char(b >> 24);
        }
      else
        for (double x : src) bytes.append(reinterpret_cast<const char*>(&x), 8);  // F64
      entries.push_back({(prefix ? "transformer." : "") + key, dtype, src_shape, bytes});
      if (!file_name.empty()) want[file_name] = v;
    };
    add("wte", "wte.weight", {V, C}, false);
    add("wpe", "wpe.weight", {T, C}, false);
    for (int i = 0; i < L; ++i) {
      const std::string h = "h." + std::to_string(i) + ".", f = "h/" + std::to_string(i) + "/";
      add(f + "ln_1/weight", h + "ln_1.weight", {C}, false);
      add(f + "ln_1/bias", h + "ln_1.bias", {C}, false);
      add(f + "attn/c_attn/weight", h + "attn.c_attn.weight", {3 * C, C}, true);
      add(f + "attn/c_attn/bias", h + "attn.c_attn.bias", {3 * C}, false);
      add(f + "attn/c_proj/weight", h + "attn.c_proj.weight", {C, C}, true);
      add(f + "attn/c_proj/bias", h + "attn.c_proj.bias", {C}, false);
      add(f + "ln_2/weight", h + "ln_2.weight", {C}, false);
      add(f + "ln_2/bias", h + "ln_2.bias", {C}, false);
      add(f + "mlp/c_fc/weight", h + "mlp.c_fc.weight", {4 * C, C}, true);
      add(f + "mlp/c_fc/bias", h + "mlp.c_fc.bias", {4 * C}, false);
      add(f + "mlp/c_proj/weight", h + "mlp.c_proj.weight", {C, 4 * C}, true);
      add(f + "mlp/c_proj/bias", h + "mlp.c_proj.bias", {C}, false);
      add("", h + "attn.bias", {1, 1, T, T}, false);  // mask buffer: ignored
    }
    add("ln_f/weight", "ln_f.weight", {C}, false);
    add("ln_f/bias", "ln_f.bias", {C}, false);
    if (untied) {
      add("lm_head/weight", "lm_head.weight", {V, C}, false);
      entries.back().name = "lm_head.weight";  // never prefixed
    }
    spit(dir + "/config.json", json{{"model_type", "gpt2"}, {"n_layer", L}, {"n_head", NH}, {"n_embd", C},
                                    {"n_positions", T}, {"vocab_size", V}, {"layer_norm_epsilon", 1e-5},
                                    {"activation_function", "gelu_new"}}.dump());
    spit(dir + "/vocab.json", slurp(kFixtures + "/hf_tiny/vocab.json"));
    spit(dir + "/merges.txt", slurp(kFixtures + "/hf_tiny/merges.txt"));
    write();
  }
  void write() const { spit(dir + "/model.safetensors", st_file(entries)); }
  StEntry* find(const std::string& key) {
    for (StEntry& e : entries)
      if (e.name.size() >= key.size() && e.name.compare(e.name.size() - key.size(), key.size(), key) == 0) return &e;
    return nullptr;
  }
};

void expect_written_exactly(const std::string& model, const HfDir& src) {
  mdi::h5::Handle f = mdi::h5::open_file(model);
  for (const auto& [name, v] : src.want) {
    std::vector<hsize_t> shape = mdi::h5::dataset_shape(f.get(), "/" + name, model);
    std::vector<float> got(v.size());
    mdi::h5::read_floats(f.get(), "/" + name, shape, got.data(), model);
    EXPECT_EQ(0, std::memcmp(got.data(), v.data(), v.size() * 4)) << name;
  }
}

class HfInCpp : public ::testing::TestWithParam<std::tuple<bool, const char*, bool>> {};

TEST_P(HfInCpp, EveryTensorLandsTransposedAndExact) {
  const auto [prefix, dtype, untied] = GetParam();
  TmpDir d;
  HfDir hf(d.path, prefix, dtype, untied);
  const cv::Summary s = cv::convert_hf(d.path, d.path + "/m.h5", cv::Dtype::F32, [](const std::string&) {});
  EXPECT_EQ(s.ignored, hf.L);
  EXPECT_EQ(s.cfg.tied_lm_head, !untied);
  const mdi::Config cfg = mdi::read_config(d.path + "/m.h5");
  EXPECT_EQ(cfg.tied_lm_head, !untied);
  EXPECT_EQ(s.params, cfg.block_params() * cfg.n_layer + cfg.head_params());
  expect_written_exactly(d.path + "/m.h5", hf);
  // And it runs.
  const std::vector<float> lg = model_logits(d.path + "/m.h5", {1, 2, 3, 4});
  for (float x : lg) ASSERT_TRUE(std::isfinite(x));
}

INSTANTIATE_TEST_SUITE_P(
    Variants, HfInCpp,
    ::testing::Values(std::make_tuple(true, "F32", false), std::make_tuple(false, "F32", false),
                      std::make_tuple(true, "F16", false), std::make_tuple(true, "BF16", false),
                      std::make_tuple(true, "F64", false), std::make_tuple(true, "F32", true)),
    [](const ::testing::TestParamInfo<HfInCpp::ParamType>& p) {
      return std::string(std::get<0>(p.param) ? "Prefixed" : "Bare") + std::get<1>(p.param) +
             (std::get<2>(p.param) ? "Untied" : "");
    });

TEST(HfInCpp, TokenizerJsonWorksLikeVocabAndMerges) {
  TmpDir d;
  HfDir hf(d.path);
  const cv::TokenizerData a = cv::gpt2_bpe_from_dir(d.path);
  json tj;
  tj["model"] = {{"type", "BPE"}, {"vocab", json::parse(slurp(d.path + "/vocab.json"))}, {"merges", json::array()}};
  std::istringstream m(slurp(d.path + "/merges.txt"));
  std::string line;
  std::getline(m, line);  // #version
  while (std::getline(m, line))
    if (!line.empty()) tj["model"]["merges"].push_back(line);
  std::remove((d.path + "/vocab.json").c_str());
  std::remove((d.path + "/merges.txt").c_str());
  spit(d.path + "/tokenizer.json", tj.dump());
  const cv::TokenizerData b = cv::gpt2_bpe_from_dir(d.path);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.eot, b.eot);
}

// ---- --random

TEST(Random, DeterministicBySeedAndRuns) {
  TmpDir d;
  ASSERT_EQ(run("--random 2,2,16,8,100 --seed 5 -q --out " + d.path + "/a.h5").rc, 0);
  ASSERT_EQ(run("--random 2,2,16,8,100 --seed 5 -q --out " + d.path + "/b.h5").rc, 0);
  ASSERT_EQ(run("--random 2,2,16,8,100 --seed 6 -q --out " + d.path + "/c.h5").rc, 0);
  EXPECT_EQ(slurp(d.path + "/a.h5"), slurp(d.path + "/b.h5"));
  EXPECT_NE(slurp(d.path + "/a.h5"), slurp(d.path + "/c.h5"));
  const mdi::Config cfg = mdi::read_config(d.path + "/a.h5");
  EXPECT_EQ(cfg.n_layer, 2);
  EXPECT_EQ(cfg.vocab_size, 100);
  for (float x : model_logits(d.path + "/a.h5", {0, 1, 2})) ASSERT_TRUE(std::isfinite(x));
  auto tok = mdi::load_tokenizer(d.path + "/a.h5");
  EXPECT_EQ(tok->type(), "char");
  EXPECT_EQ(tok->decode(tok->encode("ROMEO:")), "ROMEO:");
}

TEST(Random, Fp16HalvesTheWeights) {
  TmpDir d;
  ASSERT_EQ(run("--random 2,2,64,8,50 -q --out " + d.path + "/a.h5").rc, 0);
  ASSERT_EQ(run("--random 2,2,64,8,50 -q --dtype fp16 --out " + d.path + "/b.h5").rc, 0);
  struct stat a {}, b {};
  stat((d.path + "/a.h5").c_str(), &a);
  stat((d.path + "/b.h5").c_str(), &b);
  EXPECT_LT(double(b.st_size), 0.6 * double(a.st_size));
}

// ---- tools/random_hf_gpt2.py: the converter's benchmark input

// The script's directory is what mdi-convert --hf reads: the shape its config says, each Conv1D
// weight transposed into the file.
TEST(RandomHf, ScriptWritesWhatTheConverterReads) {
  std::string py;
  for (const char* p : {"/usr/bin/python3", "python3"})
    if (py.empty() &&
        std::system((std::string(p) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0)
      py = p;
  if (py.empty()) GTEST_SKIP() << "no python3 with numpy";
  TmpDir d;
  const std::string hf = d.path + "/hf", model = d.path + "/m.h5";
  ASSERT_EQ(std::system((py + " " + MDI_RANDOM_HF_SCRIPT + " 3,4,32,16,281 " + hf + " --vocab " +
                         kFixtures + "/hf_tiny >/dev/null")
                            .c_str()),
            0);
  ASSERT_EQ(run("--hf " + hf + " -q --out " + model).rc, 0);
  const mdi::Config cfg = mdi::read_config(model);
  EXPECT_EQ(cfg.n_layer, 3);
  EXPECT_EQ(cfg.n_head, 4);
  EXPECT_EQ(cfg.n_embd, 32);
  EXPECT_EQ(cfg.block_size, 16);
  EXPECT_EQ(cfg.vocab_size, 281);
  const cv::SafeTensors st(hf + "/model.safetensors");
  const std::vector<float> src = st.read_f32("h.2.mlp.c_fc.weight");  // (in 32, out 128)
  std::vector<float> got(src.size());
  mdi::h5::Handle f = mdi::h5::open_file(model);
  mdi::h5::read_floats(f.get(), "/h/2/mlp/c_fc/weight", {128, 32}, got.data(), model);
  for (size_t o = 0; o < 128; ++o)
    for (size_t i = 0; i < 32; ++i) ASSERT_EQ(got[o * 32 + i], src[i * 128 + o]) << o << "," << i;
}

// ---- float16 conversion

TEST(Half, RoundTripsEveryHalfAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN
    ASSERT_EQ(cv::float_to_half(mdi::half_to_float(uint16_t(h))), h) << h;
  }
  EXPECT_EQ(cv::float_to_half(1.0f + 0x1.0p-11f), 0x3c00);      // tie -> even
  EXPECT_EQ(cv::float_to_half(1.0f + 0x1.8p-11f), 0x3c01);      // above the tie -> up
  EXPECT_EQ(cv::float_to_half(1.0f + 0x1.8p-10f), 0x3c02);      // tie from odd -> even
  EXPECT_EQ(cv::float_to_half(65520.f), 0x7c00);                // overflows
  EXPECT_EQ(cv::float_to_half(0x1.0p-25f), 0x0000);             // tie at the bottom -> 0
  EXPECT_EQ(cv::float_to_half(0x1.1p-25f), 0x0001);
}

// Every one of the 2^32 floats narrows as the compiler's own float16 conversion does (round to
// nearest even, overflow to inf); a nan stays a nan of its sign, quiet.
TEST(Half, EveryFloatNarrowsAsTheCompilersFloat16) {
#ifdef __FLT16_MAX__
  constexpr size_t kChunk = size_t(1) << 20;
  std::vector<float> in(kChunk);
  std::vector<uint16_t> got(kChunk);
  size_t mismatches = 0;
  for (uint64_t base = 0; base < (uint64_t(1) << 32); base += kChunk) {
    for (size_t i = 0; i < kChunk; ++i) {
      const uint32_t bits = uint32_t(base + i);
      std::memcpy(&in[i], &bits, sizeof bits);
    }
    cv::floats_to_halves(in.data(), got.data(), kChunk);
    for (size_t i = 0; i < kChunk; ++i) {
      const _Float16 h = static_cast<_Float16>(in[i]);
      uint16_t want;
      std::memcpy(&want, &h, sizeof want);
      if (std::isnan(in[i])) want = uint16_t((std::signbit(in[i]) ? 0x8000u : 0u) | 0x7e00u);
      if (got[i] != want && ++mismatches <= 5)
        ADD_FAILURE() << std::hexfloat << in[i] << ": got 0x" << std::hex << got[i] << ", want 0x"
                      << want;
    }
  }
  EXPECT_EQ(mismatches, 0u);
#else
  GTEST_SKIP() << "this compiler has no _Float16 to compare with";
#endif
}

// ---- bad inputs: exit 1, one clear message, no output file

struct Bad {
  const char* name;
  std::function<std::string(HfDir&)> damage;  // returns extra CLI args, "" for the default
  const char* message;
};

class BadInput : public ::testing::TestWithParam<int> {};

const std::vector<Bad>& bad_cases() {
  static const std::vector<Bad> cases = {
      {"truncated", [](HfDir& h) {
         std::string s = st_file(h.entries);
         spit(h.dir + "/model.safetensors", s.substr(0, s.size() / 2));
         return std::string();
       }, "run past the end of the data"},
      {"header_longer_than_file", [](HfDir& h) {
         std::string s = st_file(h.entries);
         s[7] = 0x10;
         spit(h.dir + "/model.safetensors", s);
         return std::string();
       }, "runs past the end of the file"},
      {"tiny_file", [](HfDir& h) { spit(h.dir + "/model.safetensors", "abc"); return std::string(); },
       "shorter than the 8-byte header length"},
      {"header_not_json", [](HfDir& h) {
         std::string s = st_file(h.entries);
         s[8] = '[';
         s[9] = '[';
         spit(h.dir + "/model.safetensors", s);
         return std::string();
       }, "not valid JSON"},
      {"size_lie", [](HfDir& h) {  // shape says more elements than the offsets hold
         h.find("h.0.ln_1.bias")->shape = {int64_t(h.C + 1)};
         h.write();
         return std::string();
       }, "needs"},
      {"overlap", [](HfDir& h) {
         std::string s = st_file(h.entries);
         const size_t n = size_t(s[0] & 0xff) | size_t(s[1] & 0xff) << 8 | size_t(s[2] & 0xff) << 16;
         json j = json::parse(s.substr(8, n));
         auto& a = j["transformer.wpe.weight"]["data_offsets"];
         a = {a[0].get<uint64_t>() - 4, a[1].get<uint64_t>() - 4};
         std::string hs = j.dump();
         hs.append(n - hs.size(), ' ');
         spit(h.dir + "/model.safetensors", s.substr(0, 8) + hs + s.substr(8 + n));
         return std::string();
       }, "overlap"},
      {"missing_tensor", [](HfDir& h) {
         h.entries.erase(h.entries.begin() + 4);  // h.0.attn.c_attn.weight
         h.write();
         return std::string();
       }, "missing tensor(s): h/0/attn/c_attn/weight"},
      {"unknown_key", [](HfDir& h) {
         h.entries.push_back({"transformer.h.0.attn.rotary.weight", "F32", {1}, std::string(4, '\0')});
         h.write();
         return std::string();
       }, "unknown tensor(s)"},
      {"layer_beyond_n_layer", [](HfDir& h) {
         StEntry e = *h.find("h.1.ln_1.weight");
         e.name = "transformer.h.2.ln_1.weight";
         h.entries.push_back(e);
         h.write();
         return std::string();
       }, "transformer.h.2.ln_1.weight"},
      {"wrong_orientation", [](HfDir& h) {  // c_attn stored (out, in): shape check names it
         StEntry* e = h.find("h.0.attn.c_attn.weight");
         std::swap(e->shape[0], e->shape[1]);
         h.write();
         return std::string();
       }, "expected shape (8, 24) (Conv1D, (in, out)), got (24, 8)"},
      {"integer_weights", [](HfDir& h) {
         h.find("h.0.ln_1.weight")->dtype = "I32";
         h.write();
         return std::string();
       }, "only F32, F16, BF16 and F64"},
      {"unknown_dtype", [](HfDir& h) {
         h.find("h.0.ln_1.weight")->dtype = "F12";
         h.write();
         return std::string();
       }, "unknown dtype 'F12'"},
      {"config_vocab_mismatch", [](HfDir& h) {
         json c = json::parse(slurp(h.dir + "/config.json"));
         c["vocab_size"] = 300;
         spit(h.dir + "/config.json", c.dump());
         return std::string();
       }, "expected shape (300, 8), got (281, 8)"},
      {"unsupported_activation", [](HfDir& h) {
         json c = json::parse(slurp(h.dir + "/config.json"));
         c["activation_function"] = "relu";
         spit(h.dir + "/config.json", c.dump());
         return std::string();
       }, "activation_function \"relu\" is not supported"},
      {"no_config", [](HfDir& h) { std::remove((h.dir + "/config.json").c_str()); return std::string(); },
       "no config.json"},
      {"no_tokenizer", [](HfDir& h) { std::remove((h.dir + "/merges.txt").c_str()); return std::string(); },
       "no tokenizer files"},
      {"bad_merge", [](HfDir& h) {
         spit(h.dir + "/merges.txt", "#version: 0.2\nzz qq\n");
         return std::string();
       }, "is not in"},
      {"unknown_flavor", [](HfDir&) { return std::string("--random gpt5"); }, "unknown flavor 'gpt5'"},
      {"random_bad_dims", [](HfDir&) { return std::string("--random 2,3,16,8,50"); },
       "n_embd = 16 is not a multiple of n_head = 3"},
      {"nothing_to_do", [](HfDir&) { return std::string("--dtype fp16"); }, "nothing to convert"},
      {"bad_dtype", [](HfDir&) { return std::string("--random 1,1,8,8,8 --dtype int8"); }, "--dtype"},
      {"negative_seed", [](HfDir&) { return std::string("--random 1,1,8,8,8 --seed -1"); },
       "--seed: expected a decimal number >= 0"},
      {"nanogpt_no_tokenizer", [](HfDir& h) {
         spit(h.dir + "/info.json", R"({"model_args": {"n_layer": 2, "n_head": 2, "n_embd": 8,
              "block_size": 8, "vocab_size": 281, "bias": true, "dropout": 0.0}})");
         return "--nanogpt-safetensors " + h.dir + "/model.safetensors --nanogpt-info " + h.dir + "/info.json";
       }, "no tokenizer for this nanoGPT checkpoint"},
      {"nanogpt_unknown_arg", [](HfDir& h) {
         spit(h.dir + "/info.json", R"({"model_args": {"n_layer": 2, "n_head": 2, "n_embd": 8, "rope": 1,
              "block_size": 8, "vocab_size": 281, "bias": true}, "tokenizer": null})");
         return "--nanogpt-safetensors " + h.dir + "/model.safetensors --nanogpt-info " + h.dir + "/info.json";
       }, "unknown key \"rope\""},
  };
  return cases;
}

TEST_P(BadInput, ExitsOneWithClearMessageAndNoFile) {
  const Bad& b = bad_cases()[size_t(GetParam())];
  TmpDir d;
  HfDir hf(d.path);
  const std::string extra = b.damage(hf);
  const std::string out = d.path + "/out.h5";
  const CliResult r = run((extra.empty() ? "--hf " + d.path : extra) + " --out " + out);
  EXPECT_EQ(r.rc, 1) << b.name << ": " << r.out;
  EXPECT_NE(r.out.find(b.message), std::string::npos) << b.name << ": " << r.out;
  EXPECT_NE(r.out.find("error"), std::string::npos) << r.out;
  EXPECT_FALSE(exists(out)) << b.name;
  EXPECT_FALSE(exists(out + ".partial")) << b.name;
}

INSTANTIATE_TEST_SUITE_P(Cases, BadInput, ::testing::Range(0, int(bad_cases().size())),
                         [](const ::testing::TestParamInfo<int>& i) { return std::string(bad_cases()[size_t(i.param)].name); });

}  // namespace
