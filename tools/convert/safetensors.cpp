// Safetensors reader (see safetensors.h): everything the header claims is checked against the file
// before a byte of tensor data is trusted.
#include "safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "mdi/error.h"
#include "mdi/half.h"

namespace mdi::convert {

namespace {
constexpr uint64_t kMaxHeader = 100u << 20;  // the reference implementation's limit (100 MB)

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_or_throw(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) user_error("cannot open {}: {}", path, std::strerror(errno));
  return f;
}

void read_at(std::FILE* f, uint64_t off, void* dst, size_t n, const std::string& path,
             const std::string& what) {
  if (fseeko(f, off_t(off), SEEK_SET) != 0 || std::fread(dst, 1, n, f) != n)
    user_error("{}: cannot read {} ({} bytes at offset {}): truncated file?", path, what, n, off);
}
}  // namespace

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int st_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

SafeTensors::SafeTensors(const std::string& path) : path_(path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) user_error("cannot open {}: no such file", path);
  if (!S_ISREG(st.st_mode)) user_error("cannot open {}: not a regular file", path);
  const uint64_t size = uint64_t(st.st_size);
  File f = open_or_throw(path);
  if (size < 8) user_error("{}: not a safetensors file: {} bytes, shorter than the 8-byte header length", path, size);
  unsigned char len8[8];
  read_at(f.get(), 0, len8, 8, path, "the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len8[i];
  if (n > size - 8)
    user_error("{}: header length {} runs past the end of the file ({} bytes): truncated or not a "
               "safetensors file", path, n, size);
  if (n > kMaxHeader) user_error("{}: header length {} exceeds the 100 MB limit", path, n);
  if (n < 2) user_error("{}: header length {} is too short for a JSON object", path, n);
  std::string text(n, '\0');
  read_at(f.get(), 8, text.data(), n, path, "the header");
  data_start_ = 8 + n;
  const uint64_t data_size = size - data_start_;

  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    user_error("{}: the header is not valid JSON ({}): not a safetensors file?", path, e.what());
  }
  if (!h.is_object()) user_error("{}: the header must be a JSON object", path);
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) user_error("{}: __metadata__ must be an object of strings", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) user_error("{}: __metadata__[{}] must be a string", path, m.key());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = fmt::format("{}: tensor '{}'", path, name);
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      user_error("{}: entry must be an object with dtype, shape and data_offsets", what);
    StTensor t;
    t.name = name;
    if (!v["dtype"].is_string()) user_error("{}: dtype must be a string", what);
    t.dtype = v["dtype"].get<std::string>();
    const int esize = st_dtype_size(t.dtype);
    if (!esize) user_error("{}: unknown dtype '{}'", what, t.dtype);
    const auto& shape = v["shape"];
    if (!shape.is_array() || shape.size() > 8) user_error("{}: shape must be an array of at most 8 dims", what);
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) user_error("{}: shape {} has an entry that is not a non-negative integer", what, shape.dump());
      const uint64_t x = d.get<uint64_t>();
      if (x > (uint64_t(1) << 40) || (x && numel > (uint64_t(1) << 50) / x))
        user_error("{}: shape {} is absurdly large", what, shape.dump());
      numel *= x;
      t.shape.push_back(int64_t(x));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      user_error("{}: data_offsets must be two non-negative integers, got {}", what, off.dump());
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.end < t.begin) user_error("{}: data_offsets [{}, {}] end before they begin", what, t.begin, t.end);
    if (t.end > data_size)
      user_error("{}: data_offsets [{}, {}] run past the end of the data ({} bytes): truncated file "
                 "or a header lying about sizes", what, t.begin, t.end, data_size);
    if (t.end - t.begin != numel * uint64_t(esize))
      user_error("{}: data_offsets [{}, {}] hold {} bytes, but {} x {} needs {} bytes", what, t.begin,
                 t.end, t.end - t.begin, t.dtype, shape.dump(), numel * uint64_t(esize));
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }
  // Coverage: sorted by offset, the tensors must tile the data section with no overlap or gap.
  std::vector<const StTensor*> order;
  for (const StTensor& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const StTensor* a, const StTensor* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const StTensor* prev = nullptr;
  for (const StTensor* t : order) {
    if (t->begin < pos)
      user_error("{}: tensors '{}' and '{}' overlap (bytes [{}, {}) and [{}, {}))", path, prev->name,
                 t->name, prev->begin, prev->end, t->begin, t->end);
    if (t->begin > pos)
      user_error("{}: bytes [{}, {}) of the data are not part of any tensor (a header lying about "
                 "offsets?)", path, pos, t->begin);
    pos = t->end;
    prev = t;
  }
  if (pos != data_size)
    user_error("{}: the tensors cover {} bytes but the data section holds {} (a header lying about "
               "sizes, or trailing garbage)", path, pos, data_size);
}

const StTensor& SafeTensors::at(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) user_error("{}: no tensor '{}'", path_, name);
  return tensors_[it->second];
}

float bf16_to_float(uint16_t b) {
  return bits_float(uint32_t(b) << 16);
}

void bf16s_to_floats(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

uint16_t float_to_half(float f) {
  // Branch-free, so that loops over it vectorize (Marat Dukhan's FP16 library): the float
  // addition rounds to the nearest even half; a value that scales to inf is one that rounds to it.
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = float_bits(f), two_w = w + w, sign = w & 0x80000000u;
  const uint32_t bias = std::max(two_w & 0xff000000u, 0x71000000u);
  base = bits_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x7c00u) + (bits & 0x0fffu);
  return uint16_t((sign >> 16) | (two_w > 0xff000000u ? 0x7e00u : nonsign));  // nan: quiet
}

void floats_to_halves(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = float_to_half(in[i]);
}

std::vector<float> SafeTensors::read_f32(const std::string& name) const {
  std::vector<float> out;
  read_f32(name, out);
  return out;
}

void SafeTensors::read_f32(const std::string& name, std::vector<float>& out) const {
  const StTensor& t = at(name);
  const int esize = st_dtype_size(t.dtype);
  const std::string what = "tensor '" + name + "'";
  if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16" && t.dtype != "F64")
    user_error("{}: {} has dtype {}; only F32, F16, BF16 and F64 tensors can be converted", path_,
               what, t.dtype);
  const size_t n = size_t(t.numel()), bytes = size_t(t.end - t.begin);
  out.resize(n);  // little-endian host assumed (x86, ARM): as the format
  File f = open_or_throw(path_);
  if (esize <= 4) {  // F32 as it is; F16 and BF16 into the back half of out, then widened
    unsigned char* dst = reinterpret_cast<unsigned char*>(out.data()) + (esize == 2 ? 2 * n : 0);
    read_at(f.get(), data_start_ + t.begin, dst, bytes, path_, what);
    if (t.dtype == "F16") widen_in_place(out.data(), n, halves_to_floats);
    if (t.dtype == "BF16") widen_in_place(out.data(), n, bf16s_to_floats);
  } else {
    std::vector<double> raw(n);
    read_at(f.get(), data_start_ + t.begin, raw.data(), bytes, path_, what);
    std::copy(raw.begin(), raw.end(), out.begin());
  }
}

}  // namespace mdi::convert
