// Reader for the safetensors format (8-byte little-endian header length, a JSON header of
// name -> {dtype, shape, data_offsets}, then the data). The header is checked in full before any
// tensor is read; tensors are read one at a time as fp32. Leaves out: mmap, dtypes beyond F32/F16/
// BF16/F64 (integer buffers are listed but cannot be read as floats).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mdi::convert {

struct StTensor {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16", "F64", or another safetensors dtype
  std::vector<int64_t> shape;  // empty for a scalar
  uint64_t begin = 0, end = 0; // byte range relative to the start of the data section
  int64_t numel() const;
};

class SafeTensors {
 public:
  // Opens and validates path: header length within the file, JSON well formed, every entry with
  // dtype/shape/data_offsets, offsets inside the data section, end - begin == numel * dtype size,
  // no overlaps and no unreferenced bytes. Throws UserError naming the file and the tensor.
  explicit SafeTensors(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const StTensor& at(const std::string& name) const;  // UserError if absent
  const std::vector<StTensor>& tensors() const { return tensors_; }  // in header order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Reads tensor `name` converted to fp32 (F32, F16, BF16, F64). UserError on another dtype or a
  // failed read.
  std::vector<float> read_f32(const std::string& name) const;
  // The same into out, whose storage is reused (one buffer for a whole model).
  void read_f32(const std::string& name, std::vector<float>& out) const;

 private:
  std::string path_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Bytes per element of a safetensors dtype, 0 if unknown.
int st_dtype_size(const std::string& dtype);

// IEEE binary32 -> binary16, round to nearest even; overflow gives +-inf (the caller checks).
uint16_t float_to_half(float f);
void floats_to_halves(const float* in, uint16_t* out, size_t n);  // n of them (no overlap)
float bf16_to_float(uint16_t b);
void bf16s_to_floats(const uint16_t* in, float* out, size_t n);

}  // namespace mdi::convert
