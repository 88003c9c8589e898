// libFuzzer harness of the GPT-2 byte-level BPE (mdi::Gpt2Bpe, mdi::gpt2_pretokenize) on any bytes:
// the pre-tokenisation pieces concatenate to the input, decode(encode(x)) == x, and each piece's
// ids equal a plain reference BPE (lowest rank first, leftmost among equals; pieces up to 1 KB).
// Vocabulary: GPT-2's (encoder.json + vocab.bpe in $MDI_FUZZ_GPT2_DIR), else a small one made here.
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fuzz_util.h"
#include "mdi/bpe.h"
#include "mdi/error.h"

namespace {

// 256 byte tokens and a few merges that chain (th, the, " the"), repeat (aa, aaa, aaaa), join
// UTF-8 (é) and spaces, so that both merge paths (short pieces and the heap of long ones) work.
mdi::Gpt2Bpe small_bpe() {
  std::vector<std::string> tokens;
  std::unordered_map<std::string, int> id;
  auto token = [&](const std::string& s) {
    auto it = id.find(s);
    if (it != id.end()) return it->second;
    tokens.push_back(s);
    return id[s] = int(tokens.size()) - 1;
  };
  for (int b = 0; b < 256; ++b) token(std::string(1, char(b)));
  const char* merges_text[][2] = {
      {"t", "h"},  {"h", "e"},   {"th", "e"},      {" ", "the"},      {"a", "a"},
      {"aa", "a"}, {"aa", "aa"}, {"\xC3", "\xA9"}, {" ", "\xC3\xA9"}, {"1", "2"},
      {"12", "3"}, {"'", "s"},   {" ", " "},       {"  ", " "},       {"\n", "\n"},
      {"e", "r"},  {"th", "er"}, {"aaaa", "aaaa"}};
  std::vector<std::pair<int, int>> merges;
  for (const auto& m : merges_text) {
    token(std::string(m[0]) + m[1]);
    merges.emplace_back(token(m[0]), token(m[1]));
  }
  return mdi::Gpt2Bpe(std::move(tokens), merges, -1);
}

mdi::Gpt2Bpe make_bpe() {
  const char* dir = std::getenv("MDI_FUZZ_GPT2_DIR");
  if (!dir || !*dir) {
    std::fprintf(stderr, "fuzz_bpe: MDI_FUZZ_GPT2_DIR unset: a small built-in BPE\n");
    return small_bpe();
  }
  try {
    mdi::Gpt2Bpe t = mdi::Gpt2Bpe::from_files(std::string(dir) + "/encoder.json",
                                              std::string(dir) + "/vocab.bpe");
    std::fprintf(stderr, "fuzz_bpe: GPT-2 BPE from %s (%d tokens, %d merges)\n", dir,
                 t.vocab_size(), t.n_merges());
    return t;
  } catch (const mdi::UserError& e) {
    std::fprintf(stderr, "fuzz_bpe: MDI_FUZZ_GPT2_DIR=%s: %s\n", dir, e.what());
    std::abort();
  }
}

struct Vocab {
  mdi::Gpt2Bpe bpe = make_bpe();
  std::unordered_map<std::string, int> id_of;  // token bytes -> id
  Vocab() {
    for (int i = 0; i < bpe.vocab_size(); ++i) id_of.emplace(bpe.token(i), i);
  }
};

// The definition of the merge loop, quadratic: join the adjacent pair of lowest rank (leftmost
// among equals) until no pair has a merge.
std::vector<int> reference_bpe(const Vocab& v, std::string_view piece) {
  std::vector<int> ids;
  for (char c : piece) ids.push_back(v.id_of.at(std::string(1, c)));
  while (ids.size() > 1) {
    size_t best = 0;
    int best_rank = INT_MAX;
    for (size_t k = 0; k + 1 < ids.size(); ++k) {
      const int r = v.bpe.merge_rank(ids[k], ids[k + 1]);
      if (r >= 0 && r < best_rank) best = k, best_rank = r;
    }
    if (best_rank == INT_MAX) break;
    ids[best] = v.id_of.at(v.bpe.token(ids[best]) + v.bpe.token(ids[best + 1]));
    ids.erase(ids.begin() + long(best) + 1);
  }
  return ids;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Vocab v;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // Pieces: non-empty, contiguous, in order, covering the input.
  const std::vector<std::string_view> pieces = mdi::gpt2_pretokenize(text);
  size_t at = 0;
  for (std::string_view p : pieces) {
    FUZZ_CHECK(!p.empty(), "an empty piece at byte %zu", at);
    FUZZ_CHECK(p.data() == text.data() + at, "piece at byte %zu is not where the previous ended",
               at);
    at += p.size();
  }
  FUZZ_CHECK(at == text.size(), "pieces cover %zu of %zu bytes", at, text.size());

  // Every byte has a token in both vocabularies: encode never throws, and decoding gives the input.
  const std::vector<int> ids = v.bpe.encode(text);
  for (int id : ids) FUZZ_CHECK(id >= 0 && id < v.bpe.vocab_size(), "id %d out of range", id);
  FUZZ_CHECK(v.bpe.decode(ids) == text, "decode(encode(x)) != x (%zu bytes, %zu ids)", size,
             ids.size());

  // The ids are the concatenation of each piece's reference BPE.
  size_t k = 0;
  for (std::string_view p : pieces) {
    if (p.size() > 1024) return 0;  // the reference is quadratic
    for (int id : reference_bpe(v, p)) {
      FUZZ_CHECK(k < ids.size() && ids[k] == id, "id %zu differs from the reference BPE", k);
      ++k;
    }
  }
  FUZZ_CHECK(k == ids.size(), "%zu ids, the reference BPE gives %zu", ids.size(), k);
  return 0;
}
