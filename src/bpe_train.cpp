// Training a byte-level BPE on a text (train_bpe in bpe.h): distinct pieces with their counts,
// pair counts kept up to date incrementally, and a max-heap with lazy deletion to find the next
// merge, so 10,000 merges on a megabyte take seconds. Only the words that hold the merged pair are
// rewritten. Leaves out: special tokens, a minimum frequency other than 2.
#include <algorithm>
#include <cstdint>
#include <queue>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mdi/bpe.h"
#include "mdi/error.h"

namespace mdi {

namespace {

uint64_t key(int l, int r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }

struct Candidate {
  int64_t count;
  int left, right;
  bool operator<(const Candidate& o) const {  // the heap's top: highest count, then smallest ids
    return std::tie(count, o.left, o.right) < std::tie(o.count, left, right);
  }
};

}  // namespace

TrainedBpe train_bpe(std::string_view text, int n_merges) {
  if (n_merges < 0) user_error("the number of merges must not be negative, got {}", n_merges);
  TrainedBpe out;
  out.text_bytes = int64_t(text.size());
  for (int b = 0; b < 256; ++b) out.tokens.emplace_back(1, char(b));

  // Distinct pieces as byte-token sequences, with their counts.
  std::unordered_map<std::string_view, int64_t> piece_count;
  for (std::string_view p : gpt2_pretokenize(text)) {
    ++piece_count[p];
    ++out.pieces;
  }
  out.unique_pieces = int64_t(piece_count.size());
  std::vector<std::vector<int>> words;
  std::vector<int64_t> freq;
  words.reserve(piece_count.size());
  for (const auto& [p, n] : piece_count) {
    words.emplace_back(p.begin(), p.end());
    for (int& t : words.back()) t = int(static_cast<unsigned char>(t));
    freq.push_back(n);
  }
  // Word order is the hash map's: sort so training does not depend on the library.
  std::vector<size_t> order(words.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return words[a] < words[b]; });
  {
    std::vector<std::vector<int>> w2;
    std::vector<int64_t> f2;
    for (size_t i : order) {
      w2.push_back(std::move(words[i]));
      f2.push_back(freq[i]);
    }
    words.swap(w2);
    freq.swap(f2);
  }

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int>> where;  // words that held the pair (may repeat)
  for (size_t w = 0; w < words.size(); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t k = key(words[w][i], words[w][i + 1]);
      pair_count[k] += freq[w];
      where[k].push_back(int(w));
    }
  std::priority_queue<Candidate> heap;
  for (const auto& [k, n] : pair_count) heap.push({n, int(k >> 32), int(uint32_t(k))});

  std::unordered_map<std::string, int> by_bytes;
  for (int b = 0; b < 256; ++b) by_bytes.emplace(out.tokens[b], b);
  std::unordered_set<uint64_t> banned;  // pairs whose join some token already is
  std::vector<int> stamp(words.size(), -1);
  std::vector<uint64_t> touched;
  std::vector<int> rewritten;

  while (int(out.merges.size()) < n_merges && !heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const uint64_t k = key(c.left, c.right);
    auto it = pair_count.find(k);
    if (it == pair_count.end() || it->second != c.count || banned.count(k)) continue;  // stale
    if (c.count < 2) break;  // no pair occurs twice any more
    std::string joined = out.tokens[c.left] + out.tokens[c.right];
    if (by_bytes.count(joined)) {
      banned.insert(k);
      continue;
    }
    const int id = int(out.tokens.size());
    const int rank = int(out.merges.size());
    by_bytes.emplace(joined, id);
    out.tokens.push_back(std::move(joined));
    out.merges.emplace_back(c.left, c.right);

    // Rewrite every word holding the pair: take its pairs out, merge left to right, put them back.
    touched.clear();
    std::vector<int> holders;
    holders.swap(where[k]);
    for (int w : holders) {
      if (stamp[w] == rank) continue;  // listed twice
      stamp[w] = rank;
      std::vector<int>& s = words[w];
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; ++i) has = s[i] == c.left && s[i + 1] == c.right;
      if (!has) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t p = key(s[i], s[i + 1]);
        pair_count[p] -= freq[w];
        touched.push_back(p);
      }
      rewritten.clear();
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == c.left && s[i + 1] == c.right) {
          rewritten.push_back(id);
          ++i;
        } else {
          rewritten.push_back(s[i]);
        }
      }
      s = rewritten;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t p = key(s[i], s[i + 1]);
        pair_count[p] += freq[w];
        touched.push_back(p);
        if (s[i] == id || s[i + 1] == id) where[p].push_back(w);
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t p : touched) {
      const int64_t n = pair_count[p];
      if (n > 0) heap.push({n, int(p >> 32), int(uint32_t(p))});
      else pair_count.erase(p);
    }
  }
  for (size_t w = 0; w < words.size(); ++w) out.tokens_after += int64_t(words[w].size()) * freq[w];
  return out;
}

}  // namespace mdi
