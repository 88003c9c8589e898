// Partition tests: the cost-balanced default split with its head split, and the --layers parser.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>

#include "mdi/error.h"
#include "mdi/partition.h"

namespace {

mdi::Config shape(int L, int C, int V) {
  mdi::Config c;
  c.n_layer = L;
  c.n_embd = C;
  c.n_head = 12;
  c.vocab_size = V;
  c.block_size = 1024;
  return c;
}

TEST(Partition, Gpt2HeadCostsAboutFiveBlocks) {
  const mdi::Config g = shape(12, 768, 50257);
  EXPECT_NEAR(mdi::head_cost(g) / mdi::block_cost(g), 5.45, 0.05);
}

TEST(Partition, Gpt2SplitsAreBalancedAndValid) {
  const mdi::Config g = shape(12, 768, 50257);
  EXPECT_EQ(mdi::balanced_split(g, 1), (std::vector<int>{12}));
  EXPECT_EQ(mdi::balanced_split(g, 2), (std::vector<int>{3, 9}));  // 4;8 with 6671 rows: 3% less
  EXPECT_EQ(mdi::balanced_split(g, 3), (std::vector<int>{0, 6, 6}));
  EXPECT_EQ(mdi::balanced_split(g, 4), (std::vector<int>{0, 4, 4, 4}));
  for (int n = 1; n <= 13; ++n) {
    std::vector<int> s = mdi::balanced_split(g, n);
    ASSERT_EQ(int(s.size()), n);
    EXPECT_EQ(std::accumulate(s.begin(), s.end(), 0), 12) << n;
    for (int r = 1; r < n; ++r) EXPECT_GE(s[r], 1) << n;
    // No single move of a layer lowers the largest cost, a head split's cost counted as
    // 1 / (1 - kHeadSplitGain) times itself (the rule takes one only where it saves that much).
    auto worst = [&](const std::vector<int>& v) {
      return std::min(mdi::split_cost(g, v, 0), mdi::split_cost(g, v, mdi::head_split_rows(g, v)) / (1 - mdi::kHeadSplitGain));
    };
    for (int a = 0; a < n; ++a)
      for (int b = 0; b < n; ++b) {
        if (a == b || s[a] == (a == 0 ? 0 : 1)) continue;
        std::vector<int> t = s;
        t[a]--, t[b]++;
        EXPECT_GE(worst(t), worst(s)) << "n=" << n;
      }
  }
  EXPECT_THROW(mdi::balanced_split(g, 14), mdi::UserError);
}

// Every composition of L layers over n ranks (ranks >= 1 own >= 1), without a head split and with
// each one's own: the default's largest cost is the minimum without, or with where that is at
// least kHeadSplitGain lower; among the splits that reach it, none moves fewer lm_head rows, and
// among those none gives rank 0 more layers.
void expect_globally_optimal(const mdi::Config& c, int n) {
  const std::vector<int> got = mdi::balanced_split(c, n);
  double best = 1e300, best_plain = 1e300;
  int best_t = 0, best_n0 = -1, plain_n0 = -1;
  std::vector<int> v(n);
  std::function<void(int, int)> walk = [&](int r, int left) {
    if (r == n - 1) {
      v[r] = left;
      if (n > 1 && left < 1) return;
      const int t = mdi::head_split_rows(c, v);
      const double w = mdi::split_cost(c, v, t), p = mdi::split_cost(c, v, 0);
      if (w < best || (w == best && (t < best_t || (t == best_t && v[0] > best_n0))))
        best = w, best_t = t, best_n0 = v[0];
      if (p < best_plain || (p == best_plain && v[0] > plain_n0)) best_plain = p, plain_n0 = v[0];
      return;
    }
    for (int x = (r == 0 ? 0 : 1); x <= left; ++x) v[r] = x, walk(r + 1, left - x);
  };
  walk(0, c.n_layer);
  if (best > (1 - mdi::kHeadSplitGain) * best_plain) best = best_plain, best_t = 0, best_n0 = plain_n0;
  const int got_t = mdi::head_split_rows(c, got);
  EXPECT_EQ(mdi::split_cost(c, got, got_t), best) << "L=" << c.n_layer << " n=" << n;
  EXPECT_EQ(got_t, best_t) << "L=" << c.n_layer << " n=" << n;
  EXPECT_EQ(got[0], best_n0) << "L=" << c.n_layer << " n=" << n;
  // the ranks in between as even as possible, the extra layers on the lowest ranks
  for (int r = 2; r < n - 1; ++r) EXPECT_TRUE(got[r] == got[r - 1] || got[r] == got[r - 1] - 1) << n;
}

TEST(Partition, DefaultIsTheBestOfAllSplits) {
  for (int n = 2; n <= 6; ++n) {
    expect_globally_optimal(shape(12, 768, 50257), n);  // GPT-2 124M
    expect_globally_optimal(shape(24, 1024, 50257), n);  // GPT-2 medium
    expect_globally_optimal(shape(6, 384, 65), n);      // shakespeare_char
    expect_globally_optimal(shape(7, 64, 2000), n);     // head ~ 2.6 blocks, odd L
  }
}

// GPT-2 124M's head is 5.4 blocks' worth: on 4 ranks (0;4;4;4) rank 0 alone would hold 5.4, and
// the last rank takes the rows that level the two at 4.72; on 3 ranks (0;6;6) rank 0 is not the
// slowest and keeps the whole head.
TEST(Partition, HeadSplitLevelsRankZeroAndTheLastRank) {
  const mdi::Config g = shape(12, 768, 50257);
  const double b = mdi::block_cost(g);
  EXPECT_EQ(mdi::head_split_rows(g, {0, 4, 4, 4}), 6671);
  EXPECT_NEAR(mdi::split_cost(g, {0, 4, 4, 4}, 6671) / b, 4.72, 0.01);
  EXPECT_NEAR(mdi::split_cost(g, {0, 4, 4, 4}, 0) / b, 5.45, 0.01);
  EXPECT_EQ(mdi::head_split_rows(g, {4, 8}), 6671);
  EXPECT_EQ(mdi::head_split_rows(g, {0, 6, 6}), 0);
  EXPECT_EQ(mdi::head_split_rows(g, {12}), 0);
  EXPECT_EQ(mdi::head_split_rows(shape(6, 384, 65), {0, 2, 2, 2}), 0);  // a tiny head stays whole
  // GPT-2 medium on 3 ranks: 6;9;9 with 6677 rows would be 5.4% cheaper than 6;9;9 alone, but only
  // 4.5% cheaper than the best split without rows (5;10;9), so the default keeps the head whole.
  const mdi::Config m = shape(24, 1024, 50257);
  EXPECT_EQ(mdi::head_split_rows(m, {6, 9, 9}), 6677);
  EXPECT_EQ(mdi::balanced_split(m, 3), (std::vector<int>{5, 10, 9}));
  EXPECT_EQ(mdi::head_split_rows(m, {5, 10, 9}), 0);
  EXPECT_NEAR(mdi::split_cost(m, {6, 9, 9}, 6677) / mdi::split_cost(m, {5, 10, 9}, 0), 0.955, 0.002);
  // Against every t: the fewest rows that reach the lowest cost, or 0 if that saves too little.
  for (const mdi::Config& c : {shape(7, 64, 2000), shape(4, 64, 39), shape(12, 768, 50257)})
    for (const std::vector<int>& s : std::vector<std::vector<int>>{{0, 4, 3}, {1, 1}, {0, 1, 1, 2}, {2, 1, 1}, {0, 2, 2}}) {
      if (std::accumulate(s.begin(), s.end(), 0) > c.n_layer) continue;
      double best = mdi::split_cost(c, s, 0);
      int best_t = 0;
      for (int t = 1; t <= c.vocab_size; ++t)
        if (mdi::split_cost(c, s, t) < best) best = mdi::split_cost(c, s, t), best_t = t;
      if (best > (1 - mdi::kHeadSplitGain) * mdi::split_cost(c, s, 0)) best_t = 0;
      EXPECT_EQ(mdi::head_split_rows(c, s), best_t) << "V=" << c.vocab_size << " s[0]=" << s[0] << " n=" << s.size();
    }
}

TEST(Partition, ChecksTheHeadSplit) {
  const mdi::Config g = shape(12, 768, 50257);
  mdi::check_head_split(0, g, 1);
  mdi::check_head_split(50257, g, 2);
  EXPECT_THROW(mdi::check_head_split(50258, g, 2), mdi::UserError);
  EXPECT_THROW(mdi::check_head_split(-1, g, 2), mdi::UserError);
  EXPECT_THROW(mdi::check_head_split(1, g, 1), mdi::UserError);
}

TEST(Partition, RejectsBadRankCounts) {
  const mdi::Config g = shape(12, 768, 50257);
  EXPECT_THROW(mdi::balanced_split(g, 0), mdi::UserError);
  try {
    mdi::balanced_split(g, 14);
    ADD_FAILURE() << "14 ranks accepted";
  } catch (const mdi::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("14 ranks but the model has 12 layers: at most 13"), std::string::npos)
        << e.what();
  }
}

TEST(Partition, TinyHeadGivesAnEvenSplit) {
  const mdi::Config c = shape(6, 384, 65);
  EXPECT_EQ(mdi::balanced_split(c, 3), (std::vector<int>{2, 2, 2}));
  EXPECT_EQ(mdi::balanced_split(c, 6), (std::vector<int>{1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(mdi::balanced_split(c, 7), (std::vector<int>{0, 1, 1, 1, 1, 1, 1}));
}

TEST(Partition, ParsesAndChecksLayers) {
  const mdi::Config g = shape(12, 768, 50257);
  EXPECT_EQ(mdi::parse_split("0,6,6", g, 3), (std::vector<int>{0, 6, 6}));
  EXPECT_EQ(mdi::parse_split("12", g, 1), (std::vector<int>{12}));
  for (const char* bad : {"4,4", "4,4,5", "6,0,6", "0", "4,,8", "4,x,8", " 4,4,4", "-1,7,6", "4,4,4,", "1e1,1,1", ""}) {
    const int n = std::string(bad) == "0" ? 1 : 3;
    EXPECT_THROW(mdi::parse_split(bad, g, n), mdi::UserError) << bad;
  }
  EXPECT_EQ(mdi::parse_split("1,1,1,1,1,1,1,1,1,1,1,1", g, 12), std::vector<int>(12, 1));
  EXPECT_EQ(mdi::parse_split("0,1,1,1,1,1,1,1,1,1,1,1,1", g, 13)[0], 0);
}

std::string parse_error(const std::string& text, int n) {
  try {
    mdi::parse_split(text, shape(12, 768, 50257), n);
  } catch (const mdi::UserError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(Partition, LayerErrorsSayWhatIsWrong) {
  auto has = [](const std::string& e, const std::string& part) {
    EXPECT_NE(e.find(part), std::string::npos) << "want '" << part << "' in: " << e;
  };
  has(parse_error("4,4", 2), "--layers 4,4 sums to 8 but the model has 12 layers");
  has(parse_error("4,4,4", 2), "--layers 4,4,4 gives 3 ranks a share but the job has 2 ranks");
  has(parse_error("6,6", 1), "--layers 6,6 gives 2 ranks a share but the job has 1 rank");
  has(parse_error("12", 2), "--layers 12 gives 1 rank a share but the job has 2 ranks");
  has(parse_error("4,,8", 2), "'' is not a layer count");
  has(parse_error("4,x", 2), "'x' is not a layer count (expected 2 comma-separated integers >= 0, e.g. 3,9)");
  has(parse_error("-1,13", 2), "'-1' is not a layer count");
  has(parse_error("0,13", 2), "13 is more than the model's 12 layers");
  has(parse_error("99999999999999999999,1", 2), "is more than the model's 12 layers");
  has(parse_error("6,0,6", 3), "rank 1 owns no layer (only rank 0 may own none)");
  has(parse_error("0", 1), "sums to 0 but the model has 12 layers");
}

TEST(Partition, DescribesTheSplit) {
  EXPECT_EQ(mdi::describe_split({0, 6, 6}), "rank 0: head only, rank 1: layers 0-5 (6), rank 2: layers 6-11 (6)");
  EXPECT_EQ(mdi::describe_split({1, 2}), "rank 0: head + layer 0 (1), rank 1: layers 1-2 (2)");
  EXPECT_EQ(mdi::describe_split({0, 4, 4, 4}, 6671, 50257),
            "rank 0: head (lm_head rows 0-43585) only, rank 1: layers 0-3 (4), rank 2: layers 4-7 (4), "
            "rank 3: layers 8-11 (4) + lm_head rows 43586-50256");
  EXPECT_EQ(mdi::describe_split({1, 2}, 1, 10), "rank 0: head (lm_head rows 0-8) + layer 0 (1), rank 1: layers 1-2 (2) + lm_head row 9");
  EXPECT_EQ(mdi::describe_split({1, 2}, 10, 10), "rank 0: head (no lm_head rows) + layer 0 (1), rank 1: layers 1-2 (2) + lm_head rows 0-9");
}

}  // namespace
