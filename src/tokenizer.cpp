// The character tokenizer of nanoGPT char models and load_tokenizer, which builds the tokenizer a
// model file carries in its /tokenizer group (vocab bytes + offsets; README "The weight file").
#include "mdi/tokenizer.h"

#include <algorithm>

#include "mdi/bpe.h"
#include "mdi/error.h"
#include "mdi/h5.h"

namespace mdi {

namespace {

// Length of the UTF-8 sequence starting at s[i], or 0 if it is not valid UTF-8 (overlong forms,
// surrogates and values above U+10FFFF included).
size_t utf8_length(std::string_view s, size_t i) {
  const unsigned char c = s[i];
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
  else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
  else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const unsigned char d = s[i + k];
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

// Code point of one valid UTF-8 character.
uint32_t code_point(std::string_view ch) {
  static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t cp = static_cast<unsigned char>(ch[0]) & lead_mask[ch.size()];
  for (size_t k = 1; k < ch.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(ch[k]) & 0x3F);
  return cp;
}

// One valid UTF-8 character for an error message: "'a'", "'é' (U+00E9)", and for a control
// character only its code ("control character U+000A"), so the message stays on one line.
std::string describe_char(std::string_view ch) {
  const uint32_t cp = code_point(ch);
  if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0) || cp == 0x2028 || cp == 0x2029)
    return fmt::format("control character U+{:04X}", cp);
  if (ch.size() == 1) return fmt::format("'{}'", ch);
  return fmt::format("'{}' (U+{:04X})", ch, cp);
}

}  // namespace

CharTokenizer::CharTokenizer(std::vector<std::string> vocab, std::optional<int> eot)
    : vocab_(std::move(vocab)), eot_(eot), ascii_(128, -1) {
  if (vocab_.empty()) user_error("character tokenizer: empty vocabulary");
  if (eot && (*eot < 0 || *eot >= int(vocab_.size())))
    user_error("character tokenizer: eot_token {} is outside the vocabulary [0, {})", *eot, vocab_.size());
  for (size_t id = 0; id < vocab_.size(); ++id) {
    const std::string& t = vocab_[id];
    if (t.empty() || utf8_length(t, 0) != t.size()) {
      std::string hex;
      for (unsigned char b : t) hex += fmt::format(" {:02x}", b);
      user_error("character tokenizer: token {} (bytes:{}) is not exactly one UTF-8 character", id,
                 t.empty() ? std::string(" none") : hex);
    }
    if (t.size() == 1) {
      const int prev = ascii_[static_cast<unsigned char>(t[0])];
      if (prev >= 0) user_error("character tokenizer: token {} repeats {} (token {})", id, describe_char(t), prev);
      ascii_[static_cast<unsigned char>(t[0])] = int(id);
    } else {
      multibyte_.emplace_back(t, int(id));
    }
  }
  std::sort(multibyte_.begin(), multibyte_.end());
  for (size_t i = 1; i < multibyte_.size(); ++i)
    if (multibyte_[i].first == multibyte_[i - 1].first)
      user_error("character tokenizer: token {} repeats {} (token {})", multibyte_[i].second,
                 describe_char(multibyte_[i].first), multibyte_[i - 1].second);
}

std::vector<int> CharTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_length(text, i);
    if (n == 0)
      user_error("invalid UTF-8 byte 0x{:02x} at byte {}", static_cast<unsigned char>(text[i]), i);
    const std::string_view ch = text.substr(i, n);
    int id = -1;
    if (n == 1) {
      id = ascii_[static_cast<unsigned char>(ch[0])];
    } else {
      auto it = std::lower_bound(multibyte_.begin(), multibyte_.end(), ch,
                                 [](const std::pair<std::string, int>& a, std::string_view b) { return a.first < b; });
      if (it != multibyte_.end() && it->first == ch) id = it->second;
    }
    if (id < 0) user_error("{} at byte {} is not in the model's vocabulary", describe_char(ch), i);
    ids.push_back(id);
    i += n;
  }
  return ids;
}

void CharTokenizer::decode_token(int id, std::string& out) const {
  if (id < 0 || id >= int(vocab_.size()))
    user_error("token id {} is outside the vocabulary [0, {})", id, vocab_.size());
  out += vocab_[id];
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  h5::Handle f = h5::open_file(path);
  if (!h5::exists(f.get(), "/tokenizer"))
    user_error("{}: no /tokenizer group (a model file carries its tokenizer; convert it with mdi-convert)", path);
  h5::Handle g(H5Gopen2(f.get(), "/tokenizer", H5P_DEFAULT));
  if (!g) user_error("{}: /tokenizer is not a group", path);
  const std::string what = path + ":/tokenizer";
  const std::string type = h5::read_string_attr(g.get(), "type", what);
  // Other tokenizer types dispatch here, before the character tokenizer's datasets are read.
  if (type == "gpt2-bpe" || type == "bpe") return make_bpe_tokenizer(g.get(), path, type);
  if (type != "char") user_error("{}: tokenizer type '{}' is not supported by this build", what, type);
  const std::vector<uint8_t> bytes = h5::read_bytes(f.get(), "/tokenizer/vocab", path);
  const std::vector<int64_t> off = h5::read_int64s(f.get(), "/tokenizer/offsets", path);
  if (off.size() < 2 || off.front() != 0 || off.back() != int64_t(bytes.size()))
    user_error("{}: offsets must hold V+1 >= 2 entries from 0 to the size of vocab ({} bytes), got {} "
               "entries{}", what, bytes.size(), off.size(),
               off.empty() ? std::string() : fmt::format(" from {} to {}", off.front(), off.back()));
  // Non-decreasing from 0 to the size of vocab keeps every token inside vocab: check all first.
  for (size_t i = 0; i + 1 < off.size(); ++i)
    if (off[i + 1] < off[i])
      user_error("{}: offsets must not decrease, but offsets[{}] = {} > offsets[{}] = {}", what, i, off[i],
                 i + 1, off[i + 1]);
  std::vector<std::string> vocab;
  vocab.reserve(off.size() - 1);
  for (size_t i = 0; i + 1 < off.size(); ++i)
    vocab.emplace_back(reinterpret_cast<const char*>(bytes.data()) + off[i], size_t(off[i + 1] - off[i]));
  std::optional<int> eot;
  if (h5::has_attr(g.get(), "eot_token")) {
    const int64_t e = h5::read_int_attr(g.get(), "eot_token", what);
    if (e < -1 || e >= int64_t(vocab.size()))
      user_error("{}: eot_token {} is not -1 or a token id below {}", what, e, vocab.size());
    if (e >= 0) eot = int(e);
  }
  try {
    return std::make_unique<CharTokenizer>(std::move(vocab), eot);
  } catch (const UserError& e) {  // name the file too
    throw UserError(fmt::format("{}: {}", what, e.what()));
  }
}

}  // namespace mdi
