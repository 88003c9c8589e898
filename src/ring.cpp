// Ring communicator and message buffers.
#include "mdi/ring.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "mdi/error.h"

namespace mdi {

namespace {
#if defined(OMPI_MAJOR_VERSION) && OMPI_MAJOR_VERSION >= 5
constexpr const char* kShmEager = "btl_sm_eager_limit";
#else
constexpr const char* kShmEager = "btl_vader_eager_limit";
#endif
}  // namespace

void default_transport_settings() {
#ifdef OMPI_MAJOR_VERSION
  const std::string var = std::string("OMPI_MCA_") + kShmEager;
  setenv(var.c_str(), std::to_string(kEagerLimit).c_str(), /*overwrite=*/0);
#endif
}

long shared_memory_eager_limit() {
  int provided = 0, n = 0;
  if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS) return -1;
  long value = -1;
  if (MPI_T_cvar_get_num(&n) == MPI_SUCCESS) {
    for (int i = 0; i < n && value < 0; ++i) {
      char name[256];
      int name_len = sizeof name, verbosity = 0, bind = 0, scope = 0;
      MPI_Datatype type = MPI_DATATYPE_NULL;
      MPI_T_enum enumtype;
      if (MPI_T_cvar_get_info(i, name, &name_len, &verbosity, &type, &enumtype, nullptr, nullptr, &bind,
                              &scope) != MPI_SUCCESS ||
          std::strcmp(name, kShmEager) != 0)
        continue;
      MPI_T_cvar_handle handle;
      int count = 0;
      if (MPI_T_cvar_handle_alloc(i, nullptr, &handle, &count) != MPI_SUCCESS) break;
      if (type == MPI_INT || type == MPI_UNSIGNED) {
        int v = 0;
        if (MPI_T_cvar_read(handle, &v) == MPI_SUCCESS) value = v;
      } else if (type == MPI_UNSIGNED_LONG || type == MPI_LONG || type == MPI_UNSIGNED_LONG_LONG ||
                 type == MPI_LONG_LONG) {
        long long v = 0;  // 8 bytes (LP64)
        if (MPI_T_cvar_read(handle, &v) == MPI_SUCCESS) value = long(v);
      }
      MPI_T_cvar_handle_free(&handle);
    }
  }
  MPI_T_finalize();
  return value;
}

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
