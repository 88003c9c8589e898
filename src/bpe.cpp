// GPT-2 byte-level BPE (see bpe.h): pre-tokenisation by hand over UTF-8 code points, then merges
// by rank on each piece's raw bytes (lowest rank first, leftmost first among equals, which is what
// "merge every occurrence of the best pair" gives when merges only build on earlier merges, as
// GPT-2's do). Pieces of up to kShortPiece bytes use a flat array; longer ones a linked list and a
// heap, so a megabyte of letters without a space stays O(n log n). No cache, no regex library.
// gpt-3-encoder looks merges up by the string "left,right": there 11 pairs of tokens with a comma
// alias a real merge (('",', '"') reads as ('"', ',"')). This follows the merges table, as
// openai/gpt-2 and Hugging Face do; no text seen so far (tests/bpe) encodes differently.
#include "mdi/bpe.h"

#include <algorithm>
#include <array>
#include <climits>
#include <functional>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "mdi/error.h"
#include "mdi/file.h"
#include "mdi/h5.h"

namespace mdi {

namespace {

// Character classes of the pattern (the .inc's numbers).
constexpr uint8_t kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3;

struct UcRange {
  uint32_t first, last;
  uint8_t cls;
};
#include "unicode_tables.inc"

constexpr std::array<uint8_t, 128> make_ascii_classes() {
  std::array<uint8_t, 128> a{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) a[c] = kLetter;
    else if (c >= '0' && c <= '9') a[c] = kNumber;
    else if ((c >= '\t' && c <= '\r') || c == ' ') a[c] = kSpace;
  }
  return a;
}
constexpr std::array<uint8_t, 128> kAscii = make_ascii_classes();

uint8_t classify(uint32_t cp) {
  if (cp < 128) return kAscii[cp];
  const UcRange* end = kUcRanges + sizeof(kUcRanges) / sizeof(kUcRanges[0]);
  const UcRange* r = std::upper_bound(kUcRanges, end, cp,
                                      [](uint32_t c, const UcRange& x) { return c < x.first; });
  if (r == kUcRanges) return kOther;
  --r;
  return cp <= r->last ? r->cls : kOther;
}

bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Decodes the UTF-8 character at s[i] (n bytes in all): its length, and its code point or -1 when
// s[i] does not start a valid, shortest-form encoding of a scalar value (then the length is 1).
int decode_utf8(const unsigned char* s, size_t n, size_t i, int32_t& cp) {
  const unsigned char c = s[i];
  const size_t left = n - i;
  cp = -1;
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    if (left >= 2 && is_cont(s[i + 1])) {
      cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F);
      return 2;
    }
  } else if (c >= 0xE0 && c <= 0xEF) {
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    if (left >= 3 && s[i + 1] >= lo && s[i + 1] <= hi && is_cont(s[i + 2])) {
      cp = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
      return 3;
    }
  } else if (c >= 0xF0 && c <= 0xF4) {
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (left >= 4 && s[i + 1] >= lo && s[i + 1] <= hi && is_cont(s[i + 2]) && is_cont(s[i + 3])) {
      cp = ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) |
           (s[i + 3] & 0x3F);
      return 4;
    }
  }
  return 1;
}

// One character of the input: its byte length and class (an invalid byte: 1, other).
struct Unit {
  int len;
  uint8_t cls;
};

inline Unit unit_at(const unsigned char* s, size_t n, size_t i) {
  if (s[i] < 0x80) return {1, kAscii[s[i]]};
  int32_t cp;
  int len = decode_utf8(s, n, i, cp);
  return {len, cp < 0 ? kOther : classify(uint32_t(cp))};
}

// Length of the contraction ('s 't 're 've 'm 'll 'd) at s[i] == '\'', or 0.
size_t contraction(const unsigned char* s, size_t n, size_t i) {
  if (i + 1 >= n) return 0;
  const unsigned char a = s[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < n) {
    const unsigned char b = s[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

// Calls emit(offset, length) for each piece of GPT-2's pattern, in order (see bpe.h).
template <typename F>
void for_each_piece(std::string_view text, F&& emit) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    if (s[i] == '\'') {
      if (size_t k = contraction(s, n, i)) {
        emit(start, k);
        i += k;
        continue;
      }
    }
    Unit u = unit_at(s, n, i);
    if (s[i] == ' ' && i + 1 < n) {  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" take the space
      Unit v = unit_at(s, n, i + 1);
      if (v.cls != kSpace) {
        i += 1;
        u = v;
      }
    }
    if (u.cls != kSpace) {  // a run of one class
      i += u.len;
      while (i < n) {
        Unit w = unit_at(s, n, i);
        if (w.cls != u.cls) break;
        i += w.len;
      }
      emit(start, i - start);
      continue;
    }
    // "\s+(?!\S)|\s+": a run of spaces, less its last one if a non-space follows and that leaves
    // at least one (the last one then starts the next piece, e.g. " word").
    size_t last = i, count = 0;
    while (i < n) {
      Unit w = unit_at(s, n, i);
      if (w.cls != kSpace) break;
      last = i;
      i += w.len;
      ++count;
    }
    if (i < n && count >= 2) i = last;
    emit(start, i - start);
  }
}

// GPT-2's byte_encoder: byte -> the printable code point that stands for it in encoder.json.
std::array<uint32_t, 256> gpt2_byte_to_unicode() {
  std::array<uint32_t, 256> out{};
  uint32_t extra = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    out[b] = printable ? uint32_t(b) : extra++;
  }
  return out;
}

constexpr size_t kShortPiece = 32;

}  // namespace

int gpt2_char_class(uint32_t cp) { return classify(cp); }
const char* gpt2_unicode_version() { return kUnicodeTableVersion; }

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> out;
  for_each_piece(text, [&](size_t off, size_t len) { out.push_back(text.substr(off, len)); });
  return out;
}

struct Gpt2Bpe::Scratch {
  std::vector<int> id, next, prev;
  std::vector<uint64_t> heap;  // (rank << 32) | position, a min-heap
};

Gpt2Bpe::Gpt2Bpe(std::vector<std::string> tokens, const std::vector<std::pair<int, int>>& merges,
                 int eot, std::string type)
    : tokens_(std::move(tokens)), n_merges_(static_cast<int>(merges.size())), eot_(eot),
      type_(std::move(type)) {
  const int V = vocab_size();
  if (V == 0) user_error("the BPE vocabulary is empty");
  if (tokens_.size() >= size_t(INT_MAX)) user_error("the BPE vocabulary is too large");
  if (eot < -1 || eot >= V) user_error("eot_token {} is not -1 or a token id below {}", eot, V);
  std::unordered_map<std::string_view, int> by_bytes;
  by_bytes.reserve(tokens_.size());
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  for (int i = 0; i < V; ++i) {
    const std::string& t = tokens_[i];
    if (t.empty()) user_error("BPE token {} is empty", i);
    auto [it, fresh] = by_bytes.emplace(t, i);
    if (!fresh) user_error("BPE tokens {} and {} have the same bytes", it->second, i);
    if (t.size() == 1) byte_id_[static_cast<unsigned char>(t[0])] = i;
  }
  all_bytes_ = std::none_of(std::begin(byte_id_), std::end(byte_id_), [](int x) { return x < 0; });

  size_t cap = 16;
  while (cap < 2 * merges.size()) cap *= 2;
  table_.assign(cap, Slot{});
  mask_ = cap - 1;
  shift_ = 64;
  for (size_t c = cap; c > 1; c /= 2) --shift_;
  std::string joined;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto [l, rt] = merges[r];
    if (l < 0 || l >= V || rt < 0 || rt >= V)
      user_error("merge {} ({}, {}) names a token outside 0..{}", r, l, rt, V - 1);
    joined = tokens_[l] + tokens_[rt];
    auto it = by_bytes.find(joined);
    if (it == by_bytes.end())
      user_error("merge {} ({}, {}): no token has the bytes of the two joined", r, l, rt);
    const Slot& existing = find(l, rt);
    if (existing.rank >= 0)
      user_error("merges {} and {} both join tokens ({}, {})", existing.rank, r, l, rt);
    Slot& slot = const_cast<Slot&>(existing);  // find() returns the empty slot to fill
    slot.key = (uint64_t(uint32_t(l)) << 32) | uint32_t(rt);
    slot.rank = static_cast<int32_t>(r);
    slot.merged = it->second;
  }
}

std::vector<std::pair<int, int>> Gpt2Bpe::merges() const {
  std::vector<std::pair<int, int>> m(static_cast<size_t>(n_merges_));
  for (const Slot& s : table_)
    if (s.rank >= 0) m[size_t(s.rank)] = {int(s.key >> 32), int(uint32_t(s.key))};
  return m;
}

const Gpt2Bpe::Slot& Gpt2Bpe::find(int left, int right) const {
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  uint64_t h = (key * 0x9E3779B97F4A7C15ull) >> shift_;
  for (;; h = (h + 1) & mask_) {
    const Slot& s = table_[h];
    if (s.key == key || s.rank < 0) return s;
  }
}

void Gpt2Bpe::bpe_piece(const unsigned char* p, size_t n, std::vector<int>& out,
                        Scratch& scratch) const {
  if (n == 1) {
    out.push_back(byte_id_[p[0]]);
    return;
  }
  if (n > kShortPiece) {
    bpe_long(p, n, out, scratch);
    return;
  }
  // Flat arrays: ids of the parts, and for each adjacent pair its rank (INT_MAX: none) and result.
  int id[kShortPiece], rank[kShortPiece], merged[kShortPiece];
  size_t m = n;
  auto pair = [&](size_t k) {
    const Slot& s = find(id[k], id[k + 1]);
    rank[k] = s.rank < 0 ? INT_MAX : s.rank;
    merged[k] = s.merged;
  };
  for (size_t k = 0; k < n; ++k) id[k] = byte_id_[p[k]];
  for (size_t k = 0; k + 1 < n; ++k) pair(k);
  while (m > 1) {
    size_t best = 0;
    for (size_t k = 1; k + 1 < m; ++k)
      if (rank[k] < rank[best]) best = k;
    if (rank[best] == INT_MAX) break;
    id[best] = merged[best];
    for (size_t k = best + 1; k + 1 < m; ++k) id[k] = id[k + 1];
    for (size_t k = best; k + 2 < m; ++k) rank[k] = rank[k + 1], merged[k] = merged[k + 1];
    --m;
    if (best > 0) pair(best - 1);
    if (best + 1 < m) pair(best);
  }
  out.insert(out.end(), id, id + m);
}

void Gpt2Bpe::bpe_long(const unsigned char* p, size_t n, std::vector<int>& out,
                       Scratch& s) const {
  // Parts form a linked list over byte positions (a part is named by its first byte); the heap
  // holds (rank, position) of candidate pairs, checked against the list when popped.
  const int N = static_cast<int>(n);
  s.id.resize(n);
  s.next.resize(n);
  s.prev.resize(n);
  s.heap.clear();
  for (int k = 0; k < N; ++k) {
    s.id[k] = byte_id_[p[k]];
    s.next[k] = k + 1;
    s.prev[k] = k - 1;
  }
  auto push = [&](int k) {
    if (s.next[k] >= N) return;
    const Slot& sl = find(s.id[k], s.id[s.next[k]]);
    if (sl.rank < 0) return;
    s.heap.push_back((uint64_t(uint32_t(sl.rank)) << 32) | uint32_t(k));
    std::push_heap(s.heap.begin(), s.heap.end(), std::greater<uint64_t>());
  };
  for (int k = 0; k + 1 < N; ++k) push(k);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), std::greater<uint64_t>());
    const uint64_t top = s.heap.back();
    s.heap.pop_back();
    const int k = static_cast<int>(top & 0xFFFFFFFFu), r = static_cast<int>(top >> 32);
    if (s.id[k] < 0 || s.next[k] >= N) continue;  // k was merged into its left neighbour
    const int j = s.next[k];
    const Slot& sl = find(s.id[k], s.id[j]);
    if (sl.rank != r) continue;  // stale: the pair at k changed since (a pair never recurs)
    s.id[k] = sl.merged;
    s.id[j] = -1;
    s.next[k] = s.next[j];
    if (s.next[j] < N) s.prev[s.next[j]] = k;
    if (s.prev[k] >= 0) push(s.prev[k]);
    push(k);
  }
  for (int k = 0; k < N; k = s.next[k]) out.push_back(s.id[k]);
}

std::vector<int> Gpt2Bpe::encode(std::string_view text) const {
  if (!all_bytes_)
    for (size_t i = 0; i < text.size(); ++i)
      if (byte_id_[static_cast<unsigned char>(text[i])] < 0)
        user_error("cannot encode byte 0x{:02x} at byte offset {}: the BPE vocabulary has no token "
                   "for it", static_cast<unsigned char>(text[i]), i);
  std::vector<int> out;
  out.reserve(text.size() / 3 + 16);
  Scratch scratch;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for_each_piece(text, [&](size_t off, size_t len) { bpe_piece(p + off, len, out, scratch); });
  return out;
}

void Gpt2Bpe::decode_token(int id, std::string& out) const {
  if (id < 0 || id >= vocab_size())
    user_error("token id {} is outside the vocabulary (0..{})", id, vocab_size() - 1);
  out += tokens_[id];
}

Gpt2Bpe Gpt2Bpe::from_files(const std::string& encoder_json, const std::string& vocab_bpe) {
  // encoder.json: {"token as byte_encoder characters": id}; ids must be exactly 0..V-1.
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(read_file(encoder_json));
  } catch (const nlohmann::json::exception& e) {
    user_error("{}: not valid JSON ({})", encoder_json, e.what());
  }
  if (!enc.is_object() || enc.empty())
    user_error("{}: expected a JSON object of token -> id", encoder_json);
  std::array<int, 324> byte_of;  // code point -> byte, for the 256 code points byte_encoder uses
  byte_of.fill(-1);
  const auto b2u = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) byte_of[b2u[b]] = b;

  std::vector<std::string> tokens(enc.size());
  std::vector<bool> seen(enc.size(), false);
  std::unordered_map<std::string, int> id_of;
  id_of.reserve(enc.size());
  for (auto& [key, value] : enc.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= int64_t(enc.size()) || seen[value.get<size_t>()])
      user_error("{}: token {} has id {}; ids must be 0..{}, each once", encoder_json,
                 nlohmann::json(key).dump(), value.dump(), enc.size() - 1);
    const int id = value.get<int>();
    seen[id] = true;
    const auto* s = reinterpret_cast<const unsigned char*>(key.data());
    std::string& raw = tokens[id];
    for (size_t i = 0; i < key.size();) {
      int32_t cp;
      i += decode_utf8(s, key.size(), i, cp);
      if (cp < 0 || cp >= int32_t(byte_of.size()) || byte_of[cp] < 0)
        user_error("{}: token {} is not in GPT-2's byte-to-unicode alphabet", encoder_json,
                   nlohmann::json(key).dump());
      raw.push_back(static_cast<char>(byte_of[cp]));
    }
    id_of.emplace(key, id);
  }

  // vocab.bpe: "#version: 0.2", then one merge per line, "left right", in rank order.
  const std::string text = read_file(vocab_bpe);
  std::vector<std::pair<int, int>> merges;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.substr(0, 8) == "#version")) continue;
    const size_t sp = line.find(' ');
    if (sp == 0 || sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
      user_error("{}:{}: expected two tokens separated by one space", vocab_bpe, line_no);
    auto l = id_of.find(std::string(line.substr(0, sp)));
    auto r = id_of.find(std::string(line.substr(sp + 1)));
    if (l == id_of.end() || r == id_of.end())
      user_error("{}:{}: token {} is not in {}", vocab_bpe, line_no,
                 std::string(l == id_of.end() ? line.substr(0, sp) : line.substr(sp + 1)),
                 encoder_json);
    merges.emplace_back(l->second, r->second);
  }
  auto eot = id_of.find("<|endoftext|>");
  try {
    return Gpt2Bpe(std::move(tokens), merges, eot == id_of.end() ? -1 : eot->second);
  } catch (const UserError& e) {
    user_error("{} + {}: {}", encoder_json, vocab_bpe, e.what());
  }
}

namespace {

// Reads an integer dataset of shape (n, 2) as int32 pairs.
std::vector<std::pair<int, int>> read_pairs(hid_t loc, const std::string& name,
                                            const std::string& file_name) {
  if (!h5::exists(loc, name)) user_error("{}: dataset {} is missing", file_name, name);
  h5::Handle d(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
  if (!d) user_error("{}: {} is not a readable dataset", file_name, name);
  h5::Handle type(H5Dget_type(d.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    user_error("{}: dataset {} must hold integers", file_name, name);
  const std::vector<hsize_t> dims = h5::dataset_shape(loc, name, file_name);  // values in the file
  if (dims.size() != 2 || dims[1] != 2)
    user_error("{}: dataset {} must have shape (n_merges, 2)", file_name, name);
  if (dims[0] >= hsize_t(INT_MAX / 2))
    user_error("{}: dataset {} is absurdly large", file_name, name);
  std::vector<int32_t> flat(dims[0] * 2);
  if (!flat.empty() &&
      H5Dread(d.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()) < 0)
    user_error("{}: cannot read dataset {} (corrupt?)", file_name, name);
  std::vector<std::pair<int, int>> out(dims[0]);
  for (size_t r = 0; r < out.size(); ++r) out[r] = {flat[2 * r], flat[2 * r + 1]};
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(hid_t file_or_group, const std::string& file_name,
                                              const std::string& type) {
  if (type != "gpt2-bpe" && type != "bpe")
    user_error("{}: /tokenizer type \"{}\" is not one this BPE reader knows (gpt2-bpe, bpe)", file_name,
               type);
  // Name every object by its absolute path, so errors say "/tokenizer/merges".
  std::string path = "/tokenizer";
  if (H5Iget_type(file_or_group) != H5I_FILE) {
    ssize_t len = H5Iget_name(file_or_group, nullptr, 0);
    if (len <= 0) user_error("{}: cannot name the tokenizer group", file_name);
    path.assign(size_t(len) + 1, '\0');
    H5Iget_name(file_or_group, path.data(), path.size());
    path.resize(size_t(len));
  }
  if (!h5::exists(file_or_group, path)) user_error("{}: group {} is missing", file_name, path);
  h5::Handle g(H5Gopen2(file_or_group, path.c_str(), H5P_DEFAULT));
  if (!g) user_error("{}: {} is not a group", file_name, path);
  const std::string what = file_name + ":" + path;
  int64_t eot = -1;
  if (h5::has_attr(g.get(), "eot_token")) eot = h5::read_int_attr(g.get(), "eot_token", what);
  const std::vector<uint8_t> bytes = h5::read_bytes(g.get(), path + "/vocab", file_name);
  const std::vector<int64_t> offsets = h5::read_int64s(g.get(), path + "/offsets", file_name);
  if (offsets.empty() || offsets.front() != 0 || offsets.back() != int64_t(bytes.size()))
    user_error("{}: {}/offsets must run from 0 to the length of {}/vocab ({})", file_name, path,
               path, bytes.size());
  std::vector<std::string> tokens(offsets.size() - 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (offsets[i + 1] <= offsets[i])
      user_error("{}: {}/offsets must increase (token {} is empty)", file_name, path, i);
    if (offsets[i + 1] > offsets.back())  // an entry past the end, then a smaller one
      user_error("{}: {}/offsets[{}] = {} runs past the end of {}/vocab ({} bytes)", file_name, path,
                 i + 1, offsets[i + 1], path, bytes.size());
    tokens[i].assign(reinterpret_cast<const char*>(bytes.data()) + offsets[i],
                     size_t(offsets[i + 1] - offsets[i]));
  }
  const auto merges = read_pairs(g.get(), path + "/merges", file_name);
  if (eot < -1 || eot >= int64_t(tokens.size()))
    user_error("{}: eot_token {} is not -1 or a token id below {}", what, eot, tokens.size());
  try {
    return std::make_unique<Gpt2Bpe>(std::move(tokens), merges, static_cast<int>(eot), type);
  } catch (const UserError& e) {
    user_error("{}: {}", what, e.what());
  }
}

}  // namespace mdi
