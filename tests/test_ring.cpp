// Ring messages: the wire layout and the checks a received message passes before anything indexes
// with it (a corrupt one ends the job: abort_job exits 2 outside MPI).
#include <gtest/gtest.h>

#include "mdi/ring.h"

namespace {

constexpr int kC = 8;

// A decode message of two samples (ids 0 and 3, one row each), valid for 4 samples.
mdi::Message two_decodes() {
  mdi::Message m(/*max_items=*/2, /*max_rows=*/4, kC, /*samples=*/4);
  m.header() = mdi::MsgHeader{int32_t(mdi::MsgKind::kDecode), 0, 2, 2, 0};
  m.items()[0] = mdi::BatchItem{0, 5, 1};
  m.items()[1] = mdi::BatchItem{3, 7, 1};
  return m;
}

TEST(Ring, DecodeMessageIsHeaderItemsAndRows) {
  mdi::Message m = two_decodes();
  EXPECT_EQ(m.bytes(), 20u + 2 * 12u + 2 * 4u * kC);
  EXPECT_EQ(reinterpret_cast<std::byte*>(m.payload()) - static_cast<std::byte*>(m.raw()), 20 + 2 * 12);
  m.validate(int(m.bytes()));  // passes
}

// From the last rank of a head split: logit_cols logits per item follow the activations.
TEST(Ring, HeadSplitLogitsFollowTheRows) {
  mdi::Message m(2, 4, kC, 4, nullptr, /*logit_cols=*/5);
  m.header() = mdi::MsgHeader{int32_t(mdi::MsgKind::kDecode), 0, 2, 2, 5};
  m.items()[0] = mdi::BatchItem{0, 5, 1};
  m.items()[1] = mdi::BatchItem{3, 7, 1};
  EXPECT_EQ(m.capacity(), 20u + 2 * 12u + 4 * 4u * kC + 2 * 5 * 4u);
  EXPECT_EQ(m.bytes(), 20u + 2 * 12u + 2 * 4u * kC + 2 * 5 * 4u);
  EXPECT_EQ(m.logits(), m.payload() + 2 * kC);
  m.validate(int(m.bytes()));
  m.header().logit_cols = 0;  // a message without logits fits too
  m.validate(int(m.bytes()));
  m.header().logit_cols = 6;  // more than the buffer has room for
  EXPECT_EXIT(m.validate(int(m.bytes())), testing::ExitedWithCode(2), "6 logits per item");
  mdi::Message plain = two_decodes();
  plain.header().logit_cols = 1;
  EXPECT_EXIT(plain.validate(int(plain.bytes())), testing::ExitedWithCode(2), "1 logits per item");
}

TEST(Ring, CorruptMessagesEndTheJob) {
  const int full = int(two_decodes().bytes());
  auto corrupt = [](auto edit, int bytes) {
    mdi::Message m = two_decodes();
    edit(m);
    m.validate(bytes);
  };
  EXPECT_EXIT(corrupt([](mdi::Message&) {}, full - 4), testing::ExitedWithCode(2), "corrupt ring message");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.header().kind = 9; }, full), testing::ExitedWithCode(2),
              "kind 9");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.header().n_items = 3; }, full), testing::ExitedWithCode(2),
              "3 items");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.items()[1].sample = 4; }, full), testing::ExitedWithCode(2),
              "item 1 has sample 4");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.items()[0].sample = -1; }, full), testing::ExitedWithCode(2),
              "item 0 has sample -1");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.items()[0].pos = -2; }, full), testing::ExitedWithCode(2),
              "pos -2");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.items()[1].rows = 0; }, full), testing::ExitedWithCode(2),
              "rows 0");
  EXPECT_EXIT(corrupt([](mdi::Message& m) { m.items()[1].rows = 2; }, full), testing::ExitedWithCode(2),
              "its items hold 3 rows, its header says 2");
}

}  // namespace
