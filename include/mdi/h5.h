// Thin RAII and read helpers over the HDF5 C API, shared by the loader and the tokenizer.
// Every failure becomes a UserError that names the file and the object.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mdi::h5 {

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept;
  ~Handle();
  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Opens read-only; UserError "cannot open model file PATH: not found / not an HDF5 file".
Handle open_file(const std::string& path);
bool exists(hid_t loc, const std::string& name);  // link exists (each path component checked)
bool has_attr(hid_t obj, const std::string& name);

// Attribute readers; `what` names the object in error messages (e.g. "model.h5:/").
int64_t read_int_attr(hid_t obj, const std::string& name, const std::string& what);
double read_float_attr(hid_t obj, const std::string& name, const std::string& what);
std::string read_string_attr(hid_t obj, const std::string& name, const std::string& what);

// Shape of a dataset; UserError if missing.
std::vector<hsize_t> dataset_shape(hid_t file, const std::string& name, const std::string& file_name);

// Reads dataset `name` (float class, any precision) as fp32 into out, after checking that its
// shape equals `shape` ("FILE: dataset /h/0/attn/c_attn/weight: expected (192, 64), got (64, 64)").
void read_floats(hid_t file, const std::string& name, const std::vector<hsize_t>& shape, float* out,
                 const std::string& file_name);
// The same for rows [row0, row0 + rows) of the dataset's first dimension only (shape is the whole
// dataset's); out holds rows x the other dimensions.
void read_float_rows(hid_t file, const std::string& name, const std::vector<hsize_t>& shape, hsize_t row0,
                     hsize_t rows, float* out, const std::string& file_name);

// True when dataset `name` holds little-endian IEEE binary16 values (what h5py and torch write).
bool is_half_dataset(hid_t file, const std::string& name, const std::string& file_name);
// read_float_rows for a float16 dataset, whose values are copied as they are (binary16 bits);
// UserError if the dataset holds another type.
void read_half_rows(hid_t file, const std::string& name, const std::vector<hsize_t>& shape,
                    hsize_t row0, hsize_t rows, uint16_t* out, const std::string& file_name);

// Reads an integer or byte dataset of rank 1 whole.
std::vector<int64_t> read_int64s(hid_t file, const std::string& name, const std::string& file_name);
std::vector<uint8_t> read_bytes(hid_t file, const std::string& name, const std::string& file_name);

std::string shape_str(const std::vector<hsize_t>& s);

}  // namespace mdi::h5
