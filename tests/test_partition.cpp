// Partition tests: the cost-balanced default split and the --layers parser.
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
  EXPECT_EQ(mdi::balanced_split(g, 2), (std::vector<int>{3, 9}));
  EXPECT_EQ(mdi::balanced_split(g, 3), (std::vector<int>{0, 6, 6}));
  for (int n = 1; n <= 13; ++n) {
    std::vector<int> s = mdi::balanced_split(g, n);
    ASSERT_EQ(int(s.size()), n);
    EXPECT_EQ(std::accumulate(s.begin(), s.end(), 0), 12) << n;
    for (int r = 1; r < n; ++r) EXPECT_GE(s[r], 1) << n;
    // No single move of a layer lowers the largest cost.
    auto worst = [&](const std::vector<int>& v) {
      double w = mdi::head_cost(g) + v[0] * mdi::block_cost(g);
      for (size_t r = 1; r < v.size(); ++r) w = std::max(w, v[r] * mdi::block_cost(g));
      return w;
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

// Every composition of L layers over n ranks (ranks >= 1 own >= 1): the default's largest cost is
// the minimum, and among the splits that reach it none gives rank 0 more layers.
void expect_globally_optimal(const mdi::Config& c, int n) {
  const double h = mdi::head_cost(c), b = mdi::block_cost(c);
  auto worst = [&](const std::vector<int>& v) {
    double w = h + v[0] * b;
    for (size_t r = 1; r < v.size(); ++r) w = std::max(w, v[r] * b);
    return w;
  };
  const std::vector<int> got = mdi::balanced_split(c, n);
  double best = 1e300;
  int best_n0 = -1;
  std::vector<int> v(n);
  std::function<void(int, int)> walk = [&](int r, int left) {
    if (r == n - 1) {
      v[r] = left;
      if (n > 1 && left < 1) return;
      const double w = worst(v);
      if (w < best || (w == best && v[0] > best_n0)) best = w, best_n0 = v[0];
      return;
    }
    for (int x = (r == 0 ? 0 : 1); x <= left; ++x) v[r] = x, walk(r + 1, left - x);
  };
  walk(0, c.n_layer);
  EXPECT_EQ(worst(got), best) << "L=" << c.n_layer << " n=" << n;
  EXPECT_EQ(got[0], best_n0) << "L=" << c.n_layer << " n=" << n;
  // the rest as even as possible, the extra layers on the lowest ranks
  for (int r = 2; r < n; ++r) EXPECT_TRUE(got[r] == got[r - 1] || got[r] == got[r - 1] - 1) << n;
}

TEST(Partition, DefaultIsTheBestOfAllSplits) {
  for (int n = 2; n <= 6; ++n) {
    expect_globally_optimal(shape(12, 768, 50257), n);  // GPT-2 124M
    expect_globally_optimal(shape(24, 1024, 50257), n);  // GPT-2 medium
    expect_globally_optimal(shape(6, 384, 65), n);      // shakespeare_char
    expect_globally_optimal(shape(7, 64, 2000), n);     // head ~ 2.6 blocks, odd L
  }
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
}

}  // namespace
