// libFuzzer harness of the character tokenizer (mdi::CharTokenizer). Any bytes either encode with a
// fixed vocabulary and decode back unchanged, or give a UserError of one line. The input split at
// NUL bytes is also tried as a vocabulary: rejected with a UserError, or it encodes its own tokens
// to 0..n-1.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "mdi/error.h"
#include "mdi/tokenizer.h"

namespace {

// Letters, digits, some punctuation and 2-, 3- and 4-byte characters; most bytes are missing.
mdi::CharTokenizer fixed_vocab() {
  std::vector<std::string> v = {"\n",
                                " ",
                                "!",
                                "'",
                                ",",
                                "-",
                                ".",
                                ":",
                                ";",
                                "?",
                                "\xC3\xA0",
                                "\xC3\xA9",
                                "\xC3\xAF",
                                "\xE2\x80\x94",
                                "\xE2\x82\xAC",
                                "\xF0\x9F\x98\x80"};  // à é ï — € U+1F600
  for (char c = 'a'; c <= 'z'; ++c) v.emplace_back(1, c);
  for (char c = 'A'; c <= 'Z'; ++c) v.emplace_back(1, c);
  for (char c = '0'; c <= '9'; ++c) v.emplace_back(1, c);
  return mdi::CharTokenizer(std::move(v), 0);
}

void check_one_line(const mdi::UserError& e) {
  const std::string_view m = e.what();
  FUZZ_CHECK(!m.empty() && m.find('\n') == m.npos && m.find('\r') == m.npos,
             "the error message is not one line: %s", e.what());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mdi::CharTokenizer tok = fixed_vocab();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const std::vector<int> ids = tok.encode(text);
    for (int id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "id %d out of range", id);
    FUZZ_CHECK(tok.decode(ids) == text, "decode(encode(x)) != x");
  } catch (const mdi::UserError& e) {
    check_one_line(e);
  }

  // The input as a vocabulary: tokens separated by NUL bytes (at most 256 of them).
  std::vector<std::string> vocab;
  std::string all;
  for (size_t i = 0; i <= size && vocab.size() < 256;) {
    size_t j = text.find('\0', i);
    if (j == text.npos) j = size;
    vocab.emplace_back(text.substr(i, j - i));
    all += vocab.back();
    i = j + 1;
  }
  try {
    const mdi::CharTokenizer own(vocab);
    const std::vector<int> ids = own.encode(all);
    FUZZ_CHECK(ids.size() == vocab.size(), "%zu tokens encode to %zu ids", vocab.size(),
               ids.size());
    for (size_t i = 0; i < ids.size(); ++i)
      FUZZ_CHECK(ids[i] == int(i), "token %zu encodes to %d", i, ids[i]);
    FUZZ_CHECK(own.decode(ids) == all, "decode(encode(x)) != x for the vocabulary's own text");
  } catch (const mdi::UserError& e) {
    check_one_line(e);
  }
  return 0;
}
