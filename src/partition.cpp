// The partition rule: layers per rank, balancing the estimated per-token cost (DESIGN.md).
#include "mdi/partition.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <tuple>

#include "mdi/error.h"

namespace mdi {

// Multiply-adds per token of one block's weights (attention over the cache is left out: it is
// the same for every block, so it does not move the balance).
double block_cost(const Config& c) { return 12.0 * c.n_embd * c.n_embd + 13.0 * c.n_embd; }

// Rank 0's extra work per token: the lm_head GEMV dominates; embedding and ln_f are O(C).
double head_cost(const Config& c) { return double(c.vocab_size) * c.n_embd + 3.0 * c.n_embd; }

namespace {
// Rank 0's and the last rank's costs when the last rank computes t of the lm_head's rows (its own
// ln_f too), and the largest of the ranks' in between; all costs are integers held exactly in
// doubles, so equal costs compare equal.
double rank0_cost(const Config& c, int layers, int t) {
  return layers * block_cost(c) + head_cost(c) - double(t) * c.n_embd;
}
double last_cost(const Config& c, int layers, int t) {
  return layers * block_cost(c) + (t > 0 ? double(t) * c.n_embd + 2.0 * c.n_embd : 0.0);
}
double middle_cost(const Config& c, const std::vector<int>& split) {
  double worst = 0;
  for (size_t r = 1; r + 1 < split.size(); ++r) worst = std::max(worst, split[r] * block_cost(c));
  return worst;
}
}  // namespace

double split_cost(const Config& c, const std::vector<int>& split, int t) {
  const int n = int(split.size());
  if (n == 1) return rank0_cost(c, split[0], 0);
  return std::max({rank0_cost(c, split[0], t), last_cost(c, split[n - 1], t), middle_cost(c, split)});
}

int head_split_rows(const Config& c, const std::vector<int>& split) {
  const int n = int(split.size());
  if (n < 2) return 0;
  const double C = c.n_embd, none = split_cost(c, split, 0);
  const double others = middle_cost(c, split);  // the ranks in between keep their cost
  // Rank 0's cost falls and the last rank's rises with t: the best t levels the two (t_eq), or
  // brings rank 0 down to the others' cost if that is higher; the fewest rows that get there.
  const double t_eq = (rank0_cost(c, split[0], 0) - last_cost(c, split[n - 1], 0) - 2.0 * C) / (2.0 * C);
  const double t_others = (rank0_cost(c, split[0], 0) - others) / C;
  int best_t = 0;
  double best = none;
  for (double x : {std::floor(t_eq), std::ceil(t_eq), std::ceil(t_others)}) {
    const int t = int(std::clamp(x, 0.0, double(c.vocab_size)));
    const double cost = split_cost(c, split, t);
    if (cost < best || (cost == best && t < best_t)) best = cost, best_t = t;
  }
  return best <= (1 - kHeadSplitGain) * none ? best_t : 0;
}

std::vector<int> balanced_split(const Config& cfg, int n) {
  const int L = cfg.n_layer;
  if (n < 1) user_error("need at least one rank, got {}", n);
  if (n == 1) return {L};
  if (n > L + 1)
    user_error(
        "{} ranks but the model has {}: at most {} ranks (every rank but rank 0 needs a layer)", n,
        count_of(L, "layer"), L + 1);
  // Rank 0's layers n0 and the last rank's nl (fewer layers leave it room for lm_head rows); the
  // ranks in between share the rest evenly, the extra layers on the first of them. The best
  // split has the lowest cost, then the fewest rows moved, the most layers on rank 0, and the
  // last rank's share nearest the even one (rank 0's rest / (n - 1), rounded down). The best with
  // a head split is taken only where it is kHeadSplitGain cheaper than the best without.
  auto best_of = [&](bool head_split, double& best_cost) {
    std::vector<int> best;
    std::tuple<double, int, int, int> best_key;
    for (int n0 = 0; n0 <= L - (n - 1); ++n0) {
      for (int nl = n == 2 ? L - n0 : 1; nl <= L - n0 - (n - 2); ++nl) {
        std::vector<int> s(n);
        s[0] = n0;
        s[n - 1] = nl;
        if (n > 2) {
          const int rest = L - n0 - nl, per = rest / (n - 2), extra = rest % (n - 2);
          for (int r = 1; r < n - 1; ++r) s[r] = per + (r <= extra ? 1 : 0);
        }
        const int t = head_split ? head_split_rows(cfg, s) : 0;
        const auto key = std::make_tuple(split_cost(cfg, s, t), t, -n0, std::abs(nl - (L - n0) / (n - 1)));
        if (best.empty() || key < best_key) best_key = key, best = std::move(s);
      }
    }
    best_cost = std::get<0>(best_key);
    return best;
  };
  double plain_cost = 0, with_cost = 0;
  std::vector<int> plain = best_of(false, plain_cost), with = best_of(true, with_cost);
  return with_cost <= (1 - kHeadSplitGain) * plain_cost ? with : plain;
}

void check_head_split(int rows, const Config& cfg, int n) {
  if (rows < 0 || rows > cfg.vocab_size)
    user_error("--head-split {}: expected 0 to the model's vocab_size {} (rows of the lm_head the last "
               "rank computes), or auto", rows, cfg.vocab_size);
  if (rows > 0 && n == 1) user_error("--head-split {}: a single rank computes the whole lm_head", rows);
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
      user_error("--layers {}: {} is more than the model's {}", text, part,
                 count_of(cfg.n_layer, "layer"));
    split.push_back(int(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (int(split.size()) != n)
    user_error("--layers {} gives {} a share but the job has {}", text,
               count_of(split.size(), "rank"), count_of(n, "rank"));
  long sum = 0;
  for (int v : split) sum += v;
  if (sum != cfg.n_layer)
    user_error("--layers {} sums to {} but the model has {}", text, sum,
               count_of(cfg.n_layer, "layer"));
  for (int r = 1; r < n; ++r)
    if (split[r] < 1) user_error("--layers {}: rank {} owns no layer (only rank 0 may own none)", text, r);
  if (n == 1 && split[0] < 1) user_error("--layers {}: a single rank must own every layer", text);
  return split;
}

std::string describe_split(const std::vector<int>& split, int tail_rows, int V) {
  std::string out;
  int first = 0;
  auto rows = [](int a, int b) {  // lm_head rows [a, b), b > a
    return b - a == 1 ? fmt::format("lm_head row {}", a) : fmt::format("lm_head rows {}-{}", a, b - 1);
  };
  const std::string head = tail_rows <= 0         ? std::string("head")
                           : tail_rows < V ? fmt::format("head ({})", rows(0, V - tail_rows))
                                           : std::string("head (no lm_head rows)");
  for (size_t r = 0; r < split.size(); ++r) {
    if (r) out += ", ";
    const int n = split[r];
    std::string layers = n == 0   ? std::string("no layers")
                         : n == 1 ? fmt::format("layer {} (1)", first)
                                  : fmt::format("layers {}-{} ({})", first, first + n - 1, n);
    out += r == 0 ? (n ? fmt::format("rank 0: {} + {}", head, layers) : fmt::format("rank 0: {} only", head))
                  : fmt::format("rank {}: {}", r, layers);
    if (tail_rows > 0 && r + 1 == split.size() && r > 0)
      out += " + " + rows(V - tail_rows, V);
    first += n;
  }
  return out;
}

}  // namespace mdi
