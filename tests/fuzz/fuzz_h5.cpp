// libFuzzer harness of the HDF5 model loader on any bytes (seeds: the fixture models, so that
// mutations are mostly files HDF5 still opens): read_config, load_weights of every layer and the
// head, and load_tokenizer either succeed or throw mdi::UserError; anything else escaping, a crash
// or a sanitizer report is a bug, and so is an HDF5 identifier left open afterwards.
#include <hdf5.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "mdi/error.h"
#include "mdi/tokenizer.h"
#include "mdi/weights.h"

namespace {

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Skips two bugs of HDF5 1.10.8 itself. Decoding a global heap collection ("GCOL", version 1:
// where variable-length strings live), H5HG__cache_heap_deserialize steps from object to object by
// each object's stored size without checking it against the collection: a step of 0, or one that
// wraps the pointer, spins forever inside libhdf5 (H5Aread of a string attribute -> H5T__conv_vlen
// -> H5HG_read -> H5C_protect; fuzz_h5 found an object size of 2^64 - 2^40 + 4), and an object
// that runs past the end of its collection is then copied whole by H5HG_read (memcpy of 5.5e18
// bytes: ASan's memcpy-param-overlap, else a segfault). This walks the collections as HDF5 does
// (8-byte lengths, 16-byte object headers) and reports an input on which it could do either.
bool hdf5_global_heap_is_unsafe(const uint8_t* data, size_t size) {
  for (size_t at = 0; at + 16 <= size; ++at) {
    if (std::memcmp(data + at, "GCOL", 4) != 0 || data[at + 4] != 1) continue;
    const size_t end = at + size_t(std::min<uint64_t>(le64(data + at + 8), size - at));
    for (size_t p = at + 16; p + 16 <= end;) {
      const unsigned idx = data[p] | unsigned(data[p + 1]) << 8;
      const uint64_t obj = le64(data + p + 8);  // index 0: free space, its size not padded
      const uint64_t step = idx > 0 ? 16 + (obj + 7) / 8 * 8 : obj;  // modulo 2^64, as HDF5
      if (idx > 0 && obj > end - p - 16) return true;  // past the end: H5HG_read copies it whole
      if (step == 0 || step >= (uint64_t(1) << 63)) return true;  // spins
      if (step > end - p) break;  // free space (or padding) past the end: HDF5 stops there
      p += size_t(step);
    }
  }
  return false;
}

void check_weights(const mdi::Config& cfg, const mdi::Weights& w, size_t file_size) {
  // Every size was checked against the file: fp32 from fp16 doubles the bytes, nothing more.
  FUZZ_CHECK(w.bytes() <= 4 * file_size, "%zu bytes of weights from a file of %zu", w.bytes(),
             file_size);
  const float* lo = w.storage.data();
  const float* hi = lo + w.storage.size();
  auto inside = [&](const float* p, size_t n, bool present) {
    if (!present) return p == nullptr;
    return p != nullptr && p >= lo && p + n <= hi;
  };
  const size_t C = size_t(cfg.n_embd), V = size_t(cfg.vocab_size), T = size_t(cfg.block_size);
  FUZZ_CHECK(
      inside(w.head.wte, V * C, true) && inside(w.head.wpe, T * C, true) &&
          inside(w.head.lnf_w, C, true) && inside(w.head.lnf_b, C, cfg.bias) &&
          (cfg.tied_lm_head ? w.head.lm_head == w.head.wte : inside(w.head.lm_head, V * C, true)),
      "head weights outside the storage");
  FUZZ_CHECK(w.layers.size() == size_t(cfg.n_layer), "%zu layers loaded", w.layers.size());
  for (const mdi::LayerWeights& l : w.layers)
    FUZZ_CHECK(inside(l.ln1_w, C, true) && inside(l.ln1_b, C, cfg.bias) &&
                   inside(l.attn_w, 3 * C * C, true) && inside(l.attn_b, 3 * C, cfg.bias) &&
                   inside(l.aproj_w, C * C, true) && inside(l.aproj_b, C, cfg.bias) &&
                   inside(l.ln2_w, C, true) && inside(l.ln2_b, C, cfg.bias) &&
                   inside(l.fc_w, 4 * C * C, true) && inside(l.fc_b, 4 * C, cfg.bias) &&
                   inside(l.mproj_w, 4 * C * C, true) && inside(l.mproj_b, C, cfg.bias),
               "layer weights outside the storage");
}

void check_tokenizer(const mdi::Tokenizer& t) {
  const int V = t.vocab_size();
  FUZZ_CHECK(V > 0, "empty vocabulary");
  if (t.eot()) FUZZ_CHECK(*t.eot() >= 0 && *t.eot() < V, "eot %d out of range", *t.eot());
  std::string all;
  std::vector<int> ids;
  for (int id = 0; id < V && id < 4096; ++id) {
    t.decode_token(id, all);
    ids.push_back(id);
  }
  FUZZ_CHECK(t.decode(ids) == all, "decode of the first tokens differs from decode_token");
  try {  // the tokens' own bytes: a char tokenizer gives them back one id each, BPE round-trips
    const std::vector<int> again = t.encode(all);
    FUZZ_CHECK(t.decode(again) == all, "decode(encode(x)) != x on the vocabulary's own bytes");
    if (t.type() == "char")
      FUZZ_CHECK(again == ids, "a char tokenizer does not encode its own tokens");
  } catch (const mdi::UserError&) {
    FUZZ_CHECK(t.type() != "char", "a char tokenizer rejects its own tokens");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {  // no HDF5 error stacks on stderr (the loader reports errors)
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)quiet;
  if (hdf5_global_heap_is_unsafe(data, size)) return 0;
  const mdi_fuzz::TempFile file(data, size);
  try {
    const mdi::Config cfg = mdi::read_config(file.path());
    const mdi::Weights w = mdi::load_weights(file.path(), cfg, 0, cfg.n_layer, true);
    check_weights(cfg, w, size);
  } catch (const mdi::UserError&) {
  }
  try {
    check_tokenizer(*mdi::load_tokenizer(file.path()));
  } catch (const mdi::UserError&) {
  }
  const ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  FUZZ_CHECK(open == 0, "%zd HDF5 identifiers left open", open);
  return 0;
}
