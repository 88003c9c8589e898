// The backend seam: "run my layer range on this batch". A batch is rows of activations of several
// samples stacked; each sample's rows are consecutive and sit at positions pos .. pos + rows - 1.
// The CPU backend (Eigen-era design, own fixed-order kernels, src/cpu) is always built and is the
// reference; the CUDA backend implements the same interface.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "mdi/config.h"
#include "mdi/weights.h"

namespace mdi {

struct BatchItem {
  int sample;  // sample id: selects the KV cache slot
  int pos;     // position of the item's first row (0 for a prefill)
  int rows;    // number of consecutive rows
};

struct BackendSpec {
  int max_rows = 0;   // most rows one batch may hold
  int samples = 0;    // KV cache slots (sample ids are 0 .. samples-1)
  int threads = 1;    // CPU threads
  int top_k = 0;      // rank 0: most candidates per row top() is asked for (0: top() unused)
  int positions = 0;  // KV cache rows per sample, <= block_size: the longest context a sample
                      // reaches in this run (0: block_size); a batch item's pos + rows stays within
};

// The KV cache rows per sample a backend allocates for spec (BackendSpec::positions).
inline int kv_positions(const BackendSpec& spec, const Config& cfg) {
  return spec.positions > 0 ? spec.positions : cfg.block_size;
}

// Checks a batch (it comes off the wire: a bad one is a bug or a corrupt message, never silently
// used) against the sizes fixed at start-up, spec and positions (kv_positions), and writes each
// row's sample id and position into row_sample / row_pos (spec.max_rows each). Returns the rows;
// aborts the job on a bad item.
int expand_batch(const BatchItem* items, int n_items, const BackendSpec& spec, int positions,
                 int* row_sample, int* row_pos);

// Host memory from Backend::host_buffer, freed by whoever allocated it.
using HostBuffer = std::unique_ptr<std::byte[], void (*)(std::byte*)>;

// Zeroed host memory from the heap (the default Backend::host_buffer).
HostBuffer heap_buffer(size_t bytes);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The GPU this backend computes on, as its PCI bus id ("0000:19:00.0"); empty on the CPU. Ranks
  // of one host with the same id share that GPU (report.h: shared_gpu_notes); MIG instances of one
  // GPU would too, though they do not take turns.
  virtual std::string gpu_id() const { return {}; }
  // x (rows, C): the residual stream, updated in place through this rank's layers. Writes the
  // rows' keys and values into the items' KV cache slots at their positions.
  virtual void forward(float* x, const BatchItem* items, int n_items) = 0;
  // Rank 0 only. x (rows, C) = wte[tokens] + wpe[positions]; tokens holds one id per row.
  virtual void embed(float* x, const int* tokens, const BatchItem* items, int n_items) = 0;
  // Ranks with lm_head rows (Weights::head; rank 0, and the last rank of a head split):
  // out (n_items, lm_end - lm_begin): ln_f + the rank's rows of the lm_head on the last row of
  // each item (the logits of ids lm_begin .. lm_end - 1).
  virtual void logits(float* out, const float* x, const BatchItem* items, int n_items) = 0;
  // Rank 0 only. For each item, what a sampler needs of its logits (Sampler::candidates()): the
  // k best of the first V logits of its last row, as mdi::select_top gives them (ids ascending,
  // and their logits), into ids and vals (n_items, k). A backend may select where the logits are
  // (the CUDA one does, on the GPU, and copies back only these); false means it does not, and
  // the caller takes logits() instead.
  virtual bool top(int k, int V, int* ids, float* vals, const float* x, const BatchItem* items,
                   int n_items) {
    (void)k, (void)V, (void)ids, (void)vals, (void)x, (void)items, (void)n_items;
    return false;
  }
  // Bytes of memory the backend holds beyond the weights (KV cache, scratch).
  virtual size_t workspace_bytes() const = 0;
  // Zeroed host memory for buffers whose rows forward() takes (the ring's messages: MPI receives
  // into it): page-locked where the backend copies faster from and to such memory (CUDA), from
  // the heap otherwise. It must not outlive the backend.
  virtual HostBuffer host_buffer(size_t bytes) const { return heap_buffer(bytes); }

  // What forward() and logits() call while they compute: the CPU backend after each matrix
  // product of a layer and each slice of the vocabulary, the CUDA one while it waits for the GPU
  // (at least once per call). The ring sets it to move the rank's pending sends on: in a
  // rendezvous protocol (Open MPI's shared-memory transport without single-copy support, from
  // 4 KiB on; TCP from 64 KiB) a message reaches the next rank only while its sender is inside an
  // MPI call, and a rank that went on computing would hold it back for a whole pass.
  void set_progress(std::function<void()> f) { progress_ = std::move(f); }

 protected:
  void progress() const {
    if (progress_) progress_();
  }
  bool has_progress() const { return bool(progress_); }

 private:
  std::function<void()> progress_;
};

std::unique_ptr<Backend> make_cpu_backend(const Config& cfg, const Weights& w,
                                          const BackendSpec& spec);

}  // namespace mdi
