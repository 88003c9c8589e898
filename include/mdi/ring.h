// The ring of ranks and the messages that travel on it (DESIGN.md, "Ring messages").
// A message is one contiguous buffer: a 20-byte header, one 12-byte item per sample
// (sample id, position, rows), rows x C fp32 activations, then, from the last rank of a head split
// to rank 0, logit_cols fp32 logits per item (its last row's logits of the lm_head rows the last
// rank computes). A decode message for one sample is therefore 32 + 4 C bytes (+ 4 logit_cols).
// STOP carries no items and travels once around the ring.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>

#include "mdi/backend.h"

namespace mdi {

enum class MsgKind : int32_t { kPrefill = 1, kDecode = 2, kStop = 3 };

struct MsgHeader {
  int32_t kind;         // MsgKind
  int32_t micro_batch;  // which micro-batch this is
  int32_t n_items;      // samples in the message
  int32_t rows;         // total rows of activations
  int32_t logit_cols;   // logits per item after the activations (head split; 0 otherwise)
};
static_assert(sizeof(MsgHeader) == 20 && sizeof(BatchItem) == 12, "wire layout");

// One preallocated message buffer of the largest size any message can have, from the heap or,
// given a backend, from its host_buffer (page-locked for a GPU: MPI receives straight into the
// memory the GPU copies from). logit_cols: room for that many logits per item (head split).
class Message {
 public:
  Message(int max_items, int max_rows, int C, int samples, const Backend* be = nullptr, int logit_cols = 0);
  MsgHeader& header() { return *reinterpret_cast<MsgHeader*>(data_.get()); }
  const MsgHeader& header() const { return *reinterpret_cast<const MsgHeader*>(data_.get()); }
  BatchItem* items() { return reinterpret_cast<BatchItem*>(data_.get() + sizeof(MsgHeader)); }
  // The activations follow the items actually present, so only used bytes travel.
  float* payload() {
    return reinterpret_cast<float*>(data_.get() + sizeof(MsgHeader) + sizeof(BatchItem) * header().n_items);
  }
  // The logit_cols logits of each item, after the activations.
  float* logits() { return payload() + size_t(header().rows) * C_; }
  size_t bytes() const {  // bytes on the wire for the current header
    const MsgHeader& h = header();
    return sizeof(MsgHeader) + sizeof(BatchItem) * h.n_items +
           sizeof(float) * (size_t(h.rows) * C_ + size_t(h.n_items) * h.logit_cols);
  }
  size_t capacity() const { return size_; }
  void* raw() { return data_.get(); }
  // Checks a received message against the buffer's limits (kind, counts, logit_cols, size; each item's sample
  // id in [0, samples), rows >= 1, pos >= 0, rows adding up to the header's) before anything
  // indexes with it; aborts the job on a corrupt message. Backends check pos + rows <= block_size.
  void validate(int received_bytes) const;

 private:
  size_t size_;
  HostBuffer data_;  // header, items, payload; sized once (uint32-aligned)
  int max_items_ = 0, max_rows_ = 0, C_ = 0, samples_ = 0, logit_cols_ = 0;
};

// Called before MPI_Init. Open MPI sends shared-memory messages above 4 KiB by rendezvous, which
// moves them only while the sender is inside an MPI call; where Open MPI has no single-copy
// transport (containers without ptrace) that held decode messages of C > 1016 and the head
// split's logits back by up to a matrix product per hop (docs/h200). This raises the limit to
// kEagerLimit bytes through OMPI_MCA_btl_vader_eager_limit (btl_sm_ in Open MPI 5), unless the
// environment (or mpirun --mca) already sets it. Other MPI libraries: nothing.
inline constexpr long kEagerLimit = 32768;
void default_transport_settings();
// After MPI_Init: the shared-memory transport's eager limit in bytes as Open MPI holds it (MPI_T),
// or -1 where the library has no such variable.
long shared_memory_eager_limit();

// The ring communicator: a 1-D periodic Cartesian topology duplicated from MPI_COMM_WORLD.
class Ring {
 public:
  explicit Ring(MPI_Comm world);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int prev() const { return prev_; }
  int next() const { return next_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, prev_ = 0, next_ = 0;
};

}  // namespace mdi
