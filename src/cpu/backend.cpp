// CPU backend: the GPT-2 block as a sequence of op calls (include/mdi/cpu_ops.h), over a batch
// of rows from several samples, with a per-sample KV cache. Rows are processed in chunks so the
// scratch buffers stay small however long a prefill is; everything is allocated in the constructor.
#include "mdi/backend.h"

#include <algorithm>
#include <cstring>

#include "mdi/aligned.h"
#include "mdi/cpu_ops.h"
#include "mdi/error.h"
#include "mdi/half.h"
#include "mdi/kv_cache.h"

namespace mdi {

namespace {

constexpr int kChunkRows = 128;  // rows per pass through a layer: weight reuse vs scratch size

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Config& cfg, const Weights& w, const BackendSpec& spec)
      : cfg_(cfg), w_(w), spec_(spec), chunk_(std::min(kChunkRows, std::max(1, spec.max_rows))),
        T_(kv_positions(spec, cfg)) {
    const size_t C = cfg.n_embd;
    kv_ = KVCache(w.layer_end - w.layer_begin, spec.samples, T_, cfg.n_embd);
    ln_.resize(chunk_ * C);
    qkv_.resize(chunk_ * 3 * C);
    q_.resize(chunk_ * C);
    att_.resize(chunk_ * C);
    fc_.resize(chunk_ * 4 * C);
    kptr_.resize(chunk_);
    vptr_.resize(chunk_);
    row_sample_.resize(spec.max_rows);
    row_pos_.resize(spec.max_rows);
    cpu::set_threads(spec.threads);
    scratch_.resize(cpu::attention_scratch_floats(T_, std::max(1, spec.threads)));
    if (w.head.lnf_w) lnf_.resize(size_t(std::max(1, spec.max_rows)) * C);
  }

  std::string name() const override { return "cpu"; }

  size_t workspace_bytes() const override {
    size_t floats = ln_.size() + qkv_.size() + q_.size() + att_.size() + fc_.size() +
                    scratch_.size() + lnf_.size();
    return kv_.bytes() + floats * sizeof(float) +
           (row_sample_.size() + row_pos_.size()) * sizeof(int);
  }

  void forward(float* x, const BatchItem* items, int n_items) override {
    const int R = expand_rows(items, n_items);
    const int C = cfg_.n_embd;
    for (int l = 0; l < int(w_.layers.size()); ++l)
      for (int r0 = 0; r0 < R; r0 += chunk_) block_forward(l, x + size_t(r0) * C, r0, std::min(chunk_, R - r0));
  }

  void embed(float* x, const int* tokens, const BatchItem* items, int n_items) override {
    require_head("embed");
    const int R = expand_rows(items, n_items);
    const int C = cfg_.n_embd;
    for (int r = 0; r < R; ++r) {
      const int tok = tokens[r];
      if (tok < 0 || tok >= cfg_.vocab_size)
        abort_job(fmt::format("token id {} out of range [0, {})", tok, cfg_.vocab_size));
      const size_t te = size_t(tok) * C, pe = size_t(row_pos_[r]) * C;
      float* o = x + size_t(r) * C;
      if (w_.matrices_f16) {
        const uint16_t *te16 = Weights::f16(w_.head.wte) + te,
                       *pe16 = Weights::f16(w_.head.wpe) + pe;
        for (int i = 0; i < C; ++i) o[i] = half_to_float(te16[i]) + half_to_float(pe16[i]);
      } else {
        for (int i = 0; i < C; ++i) o[i] = w_.head.wte[te + i] + w_.head.wpe[pe + i];
      }
    }
  }

  void logits(float* out, const float* x, const BatchItem* items, int n_items) override {
    if (!w_.head.lnf_w) abort_job("internal error: logits called on a rank without lm_head rows");
    const int C = cfg_.n_embd;
    expand_rows(items, n_items);
    size_t row = 0;
    for (int i = 0; i < n_items; ++i) {
      row += items[i].rows;
      std::memcpy(lnf_.data() + size_t(i) * C, x + (row - 1) * C, C * sizeof(float));
    }
    cpu::layernorm_forward(lnf_.data(), lnf_.data(), w_.head.lnf_w, w_.head.lnf_b, n_items, C,
                           cfg_.layer_norm_eps);
    // The lm_head (this rank's rows of it) in slices of the vocabulary (head_slice_rows), the
    // ring's progress hook after each: the head is rank 0's longest computation.
    const int V = w_.head.lm_end - w_.head.lm_begin, slice = head_slice_rows(C);
    for (int o0 = 0; o0 < V; o0 += slice) {
      matmul(out + o0, lnf_.data(), w_.head.lm_head, size_t(o0), nullptr, n_items, C,
             std::min(slice, V - o0), V);
      progress();
    }
  }

 private:
  // Vocabulary rows per slice of logits(): about 4 MiB of the lm_head, a multiple of 64 rows.
  static int head_slice_rows(int C) { return std::max(64, (4 << 20) / (4 * std::max(C, 1)) / 64 * 64); }

  // out (B, OC) = inp (B, IC) . rows [row0, row0 + OC) of matrix m ^T + bias: m is one of
  // Weights' matrices, fp32 or the file's halves (Weights::matrices_f16; the same bits).
  void matmul(float* out, const float* inp, const float* m, size_t row0, const float* bias, int B,
              int IC, int OC, int ldo = 0) const {
    if (w_.matrices_f16)
      cpu::matmul_forward(out, inp, Weights::f16(m) + row0 * IC, bias, B, IC, OC, ldo);
    else
      cpu::matmul_forward(out, inp, m + row0 * IC, bias, B, IC, OC, ldo);
  }

  void require_head(const char* what) const {
    if (!w_.has_head) abort_job(fmt::format("internal error: {} called on a rank without the head", what));
  }

  // Fills row_sample_ / row_pos_ for the batch (expand_batch).
  int expand_rows(const BatchItem* items, int n_items) {
    return expand_batch(items, n_items, spec_, T_, row_sample_.data(), row_pos_.data());
  }

  // One transformer block (layer l of this rank) on rows [r0, r0 + B) of the batch, in place. The
  // ring's progress hook runs after each of its four matrix products (a GPT-2 124M block on one
  // core: 0.3-1 ms apart), so that a rendezvous send waits that long at most.
  void block_forward(int l, float* x, int r0, int B) {
    const LayerWeights& w = w_.layers[l];
    const int C = cfg_.n_embd;
    const float eps = cfg_.layer_norm_eps;
    cpu::layernorm_forward(ln_.data(), x, w.ln1_w, w.ln1_b, B, C, eps);
    matmul(qkv_.data(), ln_.data(), w.attn_w, 0, w.attn_b, B, C, 3 * C);
    progress();
    for (int b = 0; b < B; ++b) {  // scatter k, v into the cache; gather q
      const int s = row_sample_[r0 + b], p = row_pos_[r0 + b];
      const float* row = qkv_.data() + size_t(b) * 3 * C;
      float* k = kv_.k(l, s);
      float* v = kv_.v(l, s);
      std::memcpy(q_.data() + size_t(b) * C, row, C * sizeof(float));
      std::memcpy(k + size_t(p) * C, row + C, C * sizeof(float));
      std::memcpy(v + size_t(p) * C, row + 2 * C, C * sizeof(float));
      kptr_[b] = k;
      vptr_[b] = v;
    }
    cpu::attention_forward(att_.data(), q_.data(), kptr_.data(), vptr_.data(), row_pos_.data() + r0,
                           B, C, cfg_.n_head, T_, scratch_.data());
    matmul(ln_.data(), att_.data(), w.aproj_w, 0, w.aproj_b, B, C, C);
    progress();
    cpu::residual_forward(x, ln_.data(), long(B) * C);
    cpu::layernorm_forward(ln_.data(), x, w.ln2_w, w.ln2_b, B, C, eps);
    matmul(fc_.data(), ln_.data(), w.fc_w, 0, w.fc_b, B, C, 4 * C);
    progress();
    cpu::gelu_forward(fc_.data(), long(B) * 4 * C);
    matmul(ln_.data(), fc_.data(), w.mproj_w, 0, w.mproj_b, B, 4 * C, C);
    cpu::residual_forward(x, ln_.data(), long(B) * C);
    progress();
  }

  Config cfg_;
  const Weights& w_;
  BackendSpec spec_;
  int chunk_;
  int T_;  // KV cache rows per sample (kv_positions)
  KVCache kv_;
  aligned_vector<float> ln_, qkv_, q_, att_, fc_, scratch_, lnf_;
  std::vector<const float*> kptr_, vptr_;
  std::vector<int> row_sample_, row_pos_;
};

}  // namespace

int expand_batch(const BatchItem* items, int n_items, const BackendSpec& spec, int positions,
                 int* row_sample, int* row_pos) {
  int R = 0;
  for (int i = 0; i < n_items; ++i) {
    const BatchItem& it = items[i];
    if (it.sample < 0 || it.sample >= spec.samples || it.rows < 1 || it.pos < 0 ||
        it.pos + it.rows > positions || R + it.rows > spec.max_rows)
      abort_job(fmt::format("internal error: bad batch item (sample {}, pos {}, rows {}; "
                            "samples {}, positions {}, max rows {})",
                            it.sample, it.pos, it.rows, spec.samples, positions, spec.max_rows));
    for (int r = 0; r < it.rows; ++r, ++R) {
      row_sample[R] = it.sample;
      row_pos[R] = it.pos + r;
    }
  }
  return R;
}

HostBuffer heap_buffer(size_t bytes) {
  return HostBuffer(new std::byte[bytes](), [](std::byte* p) { delete[] p; });
}

std::unique_ptr<Backend> make_cpu_backend(const Config& cfg, const Weights& w,
                                          const BackendSpec& spec) {
  return std::make_unique<CpuBackend>(cfg, w, spec);
}

}  // namespace mdi
