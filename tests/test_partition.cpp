// Partition tests: the cost-balanced default split and the --layers parser.
#include <gtest/gtest.h>

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
  try {
    mdi::parse_split("4,4", g, 2);
  } catch (const mdi::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("sums to 8 but the model has 12 layers"), std::string::npos) << e.what();
  }
}

TEST(Partition, DescribesTheSplit) {
  EXPECT_EQ(mdi::describe_split({0, 6, 6}), "rank 0: head only, rank 1: layers 0-5 (6), rank 2: layers 6-11 (6)");
  EXPECT_EQ(mdi::describe_split({1, 2}), "rank 0: head + layer 0 (1), rank 1: layers 1-2 (2)");
}

}  // namespace
