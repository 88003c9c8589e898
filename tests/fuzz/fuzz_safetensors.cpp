// libFuzzer harness of the safetensors reader (tools/convert/safetensors.h) on any bytes: opening
// either validates the header or throws mdi::UserError, and then every tensor of a float dtype
// reads as numel floats (other dtypes: UserError). A crash, a sanitizer report or another exception
// is a bug.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "mdi/error.h"
#include "safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const mdi_fuzz::TempFile file(data, size);
  try {
    const mdi::convert::SafeTensors st(file.path());
    uint64_t covered = 0;
    for (const mdi::convert::StTensor& t : st.tensors()) {
      FUZZ_CHECK(st.has(t.name) && &st.at(t.name) == &t, "tensor '%s' is not indexed",
                 t.name.c_str());
      const int esize = mdi::convert::st_dtype_size(t.dtype);
      FUZZ_CHECK(esize > 0 && t.begin <= t.end &&
                     t.end - t.begin == uint64_t(t.numel()) * uint64_t(esize) && t.end <= size,
                 "tensor '%s' has an inconsistent byte range", t.name.c_str());
      covered += t.end - t.begin;
      const bool is_float =
          t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16" || t.dtype == "F64";
      try {
        const std::vector<float> v = st.read_f32(t.name);
        FUZZ_CHECK(is_float && v.size() == size_t(t.numel()), "tensor '%s' read as %zu floats",
                   t.name.c_str(), v.size());
      } catch (const mdi::UserError&) {
        FUZZ_CHECK(!is_float, "float tensor '%s' failed to read", t.name.c_str());
      }
    }
    FUZZ_CHECK(covered <= size, "the tensors cover more bytes than the file has");
  } catch (const mdi::UserError&) {
  }
  return 0;
}
