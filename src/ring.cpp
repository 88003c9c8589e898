// Ring communicator and message buffers.
#include "mdi/ring.h"

#include "mdi/error.h"

namespace mdi {

Message::Message(int max_items, int max_rows, int C, int samples, const Backend* be, int logit_cols)
    : size_(sizeof(MsgHeader) + sizeof(BatchItem) * size_t(max_items) +
            sizeof(float) * (size_t(max_rows) * C + size_t(max_items) * logit_cols)),
      data_(be ? be->host_buffer(size_) : heap_buffer(size_)),
      max_items_(max_items), max_rows_(max_rows), C_(C), samples_(samples), logit_cols_(logit_cols) {
  header() = MsgHeader{0, 0, 0, 0, 0};
}

void Message::validate(int received_bytes) const {
  const MsgHeader& h = header();
  const bool kind_ok = h.kind >= int32_t(MsgKind::kPrefill) && h.kind <= int32_t(MsgKind::kStop);
  const bool ok = kind_ok && h.n_items >= 0 && h.n_items <= max_items_ && h.rows >= 0 &&
                  h.rows <= max_rows_ && (h.logit_cols == 0 || h.logit_cols == logit_cols_) &&
                  size_t(received_bytes) == bytes();
  if (!ok)
    abort_job(fmt::format("corrupt ring message: kind {}, {} items, {} rows, {} logits per item, {} bytes "
                          "received", h.kind, h.n_items, h.rows, h.logit_cols, received_bytes));
  const BatchItem* items = reinterpret_cast<const BatchItem*>(data_.get() + sizeof(MsgHeader));
  int64_t rows = 0;
  for (int i = 0; i < h.n_items; ++i) {
    const BatchItem& it = items[i];
    if (it.sample < 0 || it.sample >= samples_ || it.rows < 1 || it.pos < 0)
      abort_job(fmt::format("corrupt ring message: item {} has sample {}, pos {}, rows {} ({} samples)", i,
                            it.sample, it.pos, it.rows, samples_));
    rows += it.rows;
  }
  if (rows != h.rows)
    abort_job(fmt::format("corrupt ring message: its items hold {} rows, its header says {}", rows, h.rows));
}

Ring::Ring(MPI_Comm world) {
  int n = 0;
  MDI_MPI_CHECK(MPI_Comm_size(world, &n));
  int dims[1] = {n}, periods[1] = {1};
  // MPI_Cart_create makes a new communicator (its own context): ring traffic never mixes with
  // anything else on MPI_COMM_WORLD. reorder = 0 keeps rank numbers equal to the world's.
  MDI_MPI_CHECK(MPI_Cart_create(world, 1, dims, periods, 0, &comm_));
  MDI_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MDI_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  size_ = n;
  MDI_MPI_CHECK(MPI_Cart_shift(comm_, 0, 1, &prev_, &next_));
  // The same, written out: prev = (rank - 1 + n) % n, next = (rank + 1) % n.
  if (prev_ != (rank_ - 1 + n) % n || next_ != (rank_ + 1) % n)
    abort_job("MPI_Cart_shift gave unexpected ring neighbours");
}

Ring::~Ring() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

}  // namespace mdi
