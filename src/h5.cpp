// HDF5 helpers: RAII handles, attribute and dataset readers with errors that name the object.
#include "mdi/h5.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "mdi/error.h"
#include "mdi/half.h"

namespace mdi::h5 {

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    this->~Handle();
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

Handle::~Handle() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = H5I_INVALID_HID;
}

std::string shape_str(const std::vector<hsize_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

Handle open_file(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // we report errors ourselves
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) user_error("cannot open model file {}: no such file", path);
  if (S_ISDIR(st.st_mode)) user_error("cannot open model file {}: it is a directory", path);
  if (H5Fis_hdf5(path.c_str()) <= 0)
    user_error("cannot open model file {}: not an HDF5 file (or truncated)", path);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) user_error("cannot open model file {}: HDF5 could not open it (corrupt?)", path);
  return Handle(f);
}

bool exists(hid_t loc, const std::string& name) {
  // H5Lexists fails on a missing intermediate group, so walk the path one component at a time.
  std::string prefix;
  size_t start = name[0] == '/' ? 1 : 0;
  if (start) prefix = "/";
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    prefix += part;
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) break;
    prefix += "/";
    start = slash + 1;
  }
  return true;
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

namespace {
Handle open_attr(hid_t obj, const std::string& name, const std::string& what) {
  if (!has_attr(obj, name)) user_error("{}: missing attribute '{}'", what, name);
  hid_t a = H5Aopen(obj, name.c_str(), H5P_DEFAULT);
  if (a < 0) user_error("{}: cannot open attribute '{}'", what, name);
  return Handle(a);
}

void check_scalar(hid_t attr, const std::string& name, const std::string& what) {
  Handle space(H5Aget_space(attr));
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    user_error("{}: attribute '{}' must be a single value", what, name);
}
}  // namespace

int64_t read_int_attr(hid_t obj, const std::string& name, const std::string& what) {
  Handle a = open_attr(obj, name, what);
  Handle type(H5Aget_type(a.get()));
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_INTEGER && cls != H5T_ENUM)  // h5py stores bool as an enum of int8
    user_error("{}: attribute '{}' must be an integer", what, name);
  check_scalar(a.get(), name, what);
  long long v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_LLONG, &v) < 0)
    user_error("{}: cannot read attribute '{}' as an integer", what, name);
  return v;
}

double read_float_attr(hid_t obj, const std::string& name, const std::string& what) {
  Handle a = open_attr(obj, name, what);
  Handle type(H5Aget_type(a.get()));
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    user_error("{}: attribute '{}' must be a number", what, name);
  check_scalar(a.get(), name, what);
  double v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v) < 0)
    user_error("{}: cannot read attribute '{}' as a number", what, name);
  return v;
}

std::string read_string_attr(hid_t obj, const std::string& name, const std::string& what) {
  Handle a = open_attr(obj, name, what);
  Handle type(H5Aget_type(a.get()));
  if (H5Tget_class(type.get()) != H5T_STRING)
    user_error("{}: attribute '{}' must be a string", what, name);
  check_scalar(a.get(), name, what);
  std::string out;
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* s = nullptr;
    if (H5Aread(a.get(), mem.get(), &s) < 0 || !s)
      user_error("{}: cannot read string attribute '{}'", what, name);
    out = s;
    H5free_memory(s);
  } else {
    size_t n = H5Tget_size(type.get());
    if (n == 0 || n > (1u << 20)) user_error("{}: attribute '{}' has an absurd size", what, name);
    std::string buf(n, '\0');
    if (H5Aread(a.get(), type.get(), buf.data()) < 0)
      user_error("{}: cannot read string attribute '{}'", what, name);
    out = buf.substr(0, buf.find('\0'));
  }
  return out;
}

namespace {
Handle open_dataset(hid_t file, const std::string& name, const std::string& file_name) {
  if (!exists(file, name)) user_error("{}: dataset {} is missing", file_name, name);
  hid_t d = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  if (d < 0) user_error("{}: {} is not a readable dataset", file_name, name);
  return Handle(d);
}

std::vector<hsize_t> shape_of(hid_t dset) {
  Handle space(H5Dget_space(dset));
  int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd < 0) return {};
  std::vector<hsize_t> dims(nd);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return dims;
}

// A dataset's values must be in the file before they size an allocation: a few corrupt bytes can
// declare (2^24, 65536) values that were never written. Without filters, the values take their
// element size each in the file; compressed (HDF5 filters), one stored byte holds at most
// kMaxRatio bytes (deflate's limit is 1032).
void check_stored(hid_t dset, const std::vector<hsize_t>& dims, const std::string& name,
                  const std::string& file_name) {
  constexpr hsize_t kMaxRatio = 1032, kMax = ~hsize_t(0);
  hsize_t n = 1;  // saturating: a corrupt shape may overflow
  for (hsize_t d : dims) n = (d != 0 && n > kMax / d) ? kMax : n * d;
  Handle type(H5Dget_type(dset)), dcpl(H5Dget_create_plist(dset)), file(H5Iget_file_id(dset));
  hsize_t file_size = 0;
  const size_t esize = type ? H5Tget_size(type.get()) : 0;
  if (!dcpl || !file || esize == 0 || H5Fget_filesize(file.get(), &file_size) < 0)
    user_error("{}: cannot inspect dataset {} (corrupt?)", file_name, name);
  const bool filtered = H5Pget_nfilters(dcpl.get()) > 0;
  const hsize_t stored = filtered ? H5Dget_storage_size(dset) : file_size;
  const hsize_t room = filtered ? (stored > kMax / kMaxRatio ? kMax : stored * kMaxRatio) : stored;
  if (n > room / esize)
    user_error("{}: dataset {} declares shape {} of {}-byte values, more than the file can hold ({} "
               "bytes{}): corrupt or truncated file?", file_name, name, shape_str(dims), esize,
               stored, filtered ? " stored, compressed" : "");
}

template <typename T>
std::vector<T> read_rank1(hid_t file, const std::string& name, const std::string& file_name,
                          hid_t memtype, const char* kind) {
  Handle d = open_dataset(file, name, file_name);
  Handle type(H5Dget_type(d.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    user_error("{}: dataset {} must hold {}", file_name, name, kind);
  auto dims = shape_of(d.get());
  if (dims.size() != 1) user_error("{}: dataset {} must be one-dimensional, got {}", file_name, name, shape_str(dims));
  if (dims[0] > (hsize_t(1) << 32)) user_error("{}: dataset {} is absurdly large", file_name, name);
  check_stored(d.get(), dims, name, file_name);
  std::vector<T> out(dims[0]);
  if (!out.empty() && H5Dread(d.get(), memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    user_error("{}: cannot read dataset {} (corrupt?)", file_name, name);
  return out;
}
}  // namespace

std::vector<hsize_t> dataset_shape(hid_t file, const std::string& name, const std::string& file_name) {
  Handle d = open_dataset(file, name, file_name);
  std::vector<hsize_t> dims = shape_of(d.get());
  check_stored(d.get(), dims, name, file_name);  // a shape that sizes an allocation must be real
  return dims;
}

namespace {
// True for little-endian IEEE binary16, the layout h5py and torch write.
bool is_ieee_half(hid_t type) {
  size_t spos, epos, esize, mpos, msize;
  return H5Tget_size(type) == 2 && H5Tget_order(type) == H5T_ORDER_LE &&
         H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos == 15 && epos == 10 &&
         esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(type) == 15;
}
}  // namespace

void read_floats(hid_t file, const std::string& name, const std::vector<hsize_t>& shape, float* out,
                 const std::string& file_name) {
  read_float_rows(file, name, shape, 0, shape.empty() ? 1 : shape[0], out, file_name);
}

namespace {
// Dataset `name` opened for a read of rows [row0, row0 + rows) of its first dimension (all of a
// rank-0 dataset), after checking its shape and that it holds floats.
struct RowRead {
  Handle dset, type, file_space, mem_space;
  hid_t fs = H5S_ALL, ms = H5S_ALL;
  size_t n = 1;  // values read
};

RowRead open_rows(hid_t file, const std::string& name, const std::vector<hsize_t>& shape,
                  hsize_t row0, hsize_t rows, const std::string& file_name) {
  RowRead r;
  r.dset = open_dataset(file, name, file_name);
  auto dims = shape_of(r.dset.get());
  if (dims != shape)
    user_error("{}: dataset {}: expected shape {}, got {}", file_name, name, shape_str(shape),
               shape_str(dims));
  r.type = Handle(H5Dget_type(r.dset.get()));
  if (H5Tget_class(r.type.get()) != H5T_FLOAT)
    user_error("{}: dataset {}: expected float32 or float16 values, got another type", file_name, name);
  // The whole dataset (H5S_ALL), or the hyperslab of rows [row0, row0 + rows) and a memory space of
  // that shape.
  const bool whole = shape.empty() || (row0 == 0 && rows == shape[0]);
  if (!whole && row0 + rows > shape[0])
    user_error("{}: dataset {}: rows [{}, {}) are outside its {} rows", file_name, name, row0, row0 + rows, shape[0]);
  std::vector<hsize_t> start(shape.size(), 0), count = shape;
  if (!whole) start[0] = row0, count[0] = rows;
  if (!whole) {
    r.file_space = Handle(H5Dget_space(r.dset.get()));
    r.mem_space = Handle(H5Screate_simple(int(count.size()), count.data(), nullptr));
    if (H5Sselect_hyperslab(r.file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                            nullptr) < 0)
      user_error("{}: dataset {}: cannot select rows [{}, {})", file_name, name, row0, row0 + rows);
    r.fs = r.file_space.get();
    r.ms = r.mem_space.get();
  }
  for (hsize_t x : count) r.n *= x;
  return r;
}
}  // namespace

void read_float_rows(hid_t file, const std::string& name, const std::vector<hsize_t>& shape,
                     hsize_t row0, hsize_t rows, float* out, const std::string& file_name) {
  RowRead r = open_rows(file, name, shape, row0, rows, file_name);
  const size_t n = r.n;
  herr_t rc;
  if (is_ieee_half(r.type.get())) {
    // HDF5's generic float conversion is ~15x slower than this: read the raw halves into the back
    // half of `out`, then widen them in place.
    rc = H5Dread(r.dset.get(), r.type.get(), r.ms, r.fs, H5P_DEFAULT,
                 reinterpret_cast<uint16_t*>(out) + n);
    if (rc >= 0) widen_in_place(out, n, halves_to_floats);
  } else {
    rc = H5Dread(r.dset.get(), H5T_NATIVE_FLOAT, r.ms, r.fs, H5P_DEFAULT, out);
  }
  if (rc < 0) user_error("{}: cannot read dataset {} (corrupt or truncated file?)", file_name, name);
}

bool is_half_dataset(hid_t file, const std::string& name, const std::string& file_name) {
  Handle d = open_dataset(file, name, file_name);
  Handle type(H5Dget_type(d.get()));
  return type && H5Tget_class(type.get()) == H5T_FLOAT && is_ieee_half(type.get());
}

void read_half_rows(hid_t file, const std::string& name, const std::vector<hsize_t>& shape,
                    hsize_t row0, hsize_t rows, uint16_t* out, const std::string& file_name) {
  RowRead r = open_rows(file, name, shape, row0, rows, file_name);
  if (!is_ieee_half(r.type.get()))
    user_error("{}: dataset {}: expected float16 values, got another float type", file_name, name);
  if (H5Dread(r.dset.get(), r.type.get(), r.ms, r.fs, H5P_DEFAULT, out) < 0)
    user_error("{}: cannot read dataset {} (corrupt or truncated file?)", file_name, name);
}

std::vector<int64_t> read_int64s(hid_t file, const std::string& name, const std::string& file_name) {
  return read_rank1<int64_t>(file, name, file_name, H5T_NATIVE_INT64, "integers");
}

std::vector<uint8_t> read_bytes(hid_t file, const std::string& name, const std::string& file_name) {
  return read_rank1<uint8_t>(file, name, file_name, H5T_NATIVE_UINT8, "bytes (uint8)");
}

}  // namespace mdi::h5
