// The partition rule: layers per rank, balancing the estimated per-token cost (DESIGN.md).
#include "mdi/partition.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "mdi/error.h"

namespace mdi {

// Multiply-adds per token of one block's weights (attention over the cache is left out: it is
// the same for every block, so it does not move the balance).
double block_cost(const Config& c) { return 12.0 * c.n_embd * c.n_embd + 13.0 * c.n_embd; }

// Rank 0's extra work per token: the lm_head GEMV dominates; embedding and ln_f are O(C).
double head_cost(const Config& c) { return double(c.vocab_size) * c.n_embd + 3.0 * c.n_embd; }

std::vector<int> balanced_split(const Config& cfg, int n) {
  const int L = cfg.n_layer;
  if (n < 1) user_error("need at least one rank, got {}", n);
  if (n == 1) return {L};
  if (n > L + 1)
    user_error("{} ranks but the model has {} layers: at most {} ranks (every rank but rank 0 needs a "
               "layer)", n, L, L + 1);
  const double b = block_cost(cfg), h = head_cost(cfg);
  std::vector<int> best;
  double best_cost = 0;
  for (int n0 = 0; n0 <= L - (n - 1); ++n0) {  // rank 0's layers; the rest spread evenly
    const int rest = L - n0, per = rest / (n - 1), extra = rest % (n - 1);
    const double cost = std::max(h + n0 * b, (per + (extra ? 1 : 0)) * b);
    if (best.empty() || cost <= best_cost) {  // <=: ties go to the larger n0
      best_cost = cost;
      best.assign(n, per);
      best[0] = n0;
      for (int r = 1; r <= extra; ++r) best[r] += 1;
    }
  }
  return best;
}

namespace {
// The default split as "--layers" text, for error messages ("0,6,6"); a plain shape if none fits.
std::string example_split(const Config& cfg, int n) {
  if (n < 1 || n > cfg.n_layer + 1) return "0,6,6";
  std::string s;
  for (int v : balanced_split(cfg, n)) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}
}  // namespace

std::vector<int> parse_split(const std::string& text, const Config& cfg, int n) {
  std::vector<int> split;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    const long v = part.empty() ? -1 : std::strtol(part.c_str(), &end, 10);
    if (part.empty() || !std::isdigit(static_cast<unsigned char>(part[0])) || *end != '\0')
      user_error("--layers {}: '{}' is not a layer count (expected {} comma-separated integers >= 0, "
                 "e.g. {})", text, part, n, example_split(cfg, n));
    if (errno != 0 || v > cfg.n_layer)
      user_error("--layers {}: {} is more than the model's {} layers", text, part, cfg.n_layer);
    split.push_back(int(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (int(split.size()) != n)
    user_error("--layers {} gives {} ranks a share but the job has {} ranks", text, split.size(), n);
  long sum = 0;
  for (int v : split) sum += v;
  if (sum != cfg.n_layer)
    user_error("--layers {} sums to {} but the model has {} layers", text, sum, cfg.n_layer);
  for (int r = 1; r < n; ++r)
    if (split[r] < 1) user_error("--layers {}: rank {} owns no layer (only rank 0 may own none)", text, r);
  if (n == 1 && split[0] < 1) user_error("--layers {}: a single rank must own every layer", text);
  return split;
}

std::string describe_split(const std::vector<int>& split) {
  std::string out;
  int first = 0;
  for (size_t r = 0; r < split.size(); ++r) {
    if (r) out += ", ";
    const int n = split[r];
    std::string layers = n == 0   ? std::string("no layers")
                         : n == 1 ? fmt::format("layer {} (1)", first)
                                  : fmt::format("layers {}-{} ({})", first, first + n - 1, n);
    out += r == 0 ? (n ? fmt::format("rank 0: head + {}", layers) : std::string("rank 0: head only"))
                  : fmt::format("rank {}: {}", r, layers);
    first += n;
  }
  return out;
}

}  // namespace mdi
