// Tokenizer tests: the character tokenizer's round trip and errors, and load_tokenizer on the
// /tokenizer group of files written here (fixed- and variable-length type attribute, bad offsets).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <functional>

#include "mdi/error.h"
#include "mdi/tokenizer.h"

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mdi::UserError& e) {
    return e.what();
  }
  return "";
}

TEST(CharTokenizer, RoundTripsMultiByteText) {
  mdi::CharTokenizer t({"\n", " ", "a", "b", "é", "日", "\xF0\x9F\x98\x80" /* 😀 */});
  const std::string text = "ab é\n日😀 a";
  std::vector<int> ids = t.encode(text);
  EXPECT_EQ(ids, (std::vector<int>{2, 3, 1, 4, 0, 5, 6, 1, 2}));
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.vocab_size(), 7);
  EXPECT_FALSE(t.eot());
}

TEST(CharTokenizer, NamesWhatItCannotEncode) {
  mdi::CharTokenizer t({"a", "b"});
  EXPECT_NE(error_of([&] { t.encode("abc"); }).find("'c' at byte 2"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("aé"); }).find("'é' at byte 1"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("a\xff"); }).find("invalid UTF-8 byte 0xff at byte 1"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("\xC3"); }).find("invalid UTF-8"), std::string::npos);  // truncated
  EXPECT_NE(error_of([&] { t.encode("\xC0\xAF"); }).find("invalid UTF-8"), std::string::npos);  // overlong
  EXPECT_NE(error_of([&] { t.encode("\xED\xA0\x80"); }).find("invalid UTF-8"), std::string::npos);  // surrogate
  EXPECT_NE(error_of([&] { std::string s; t.decode_token(2, s); }).find("outside the vocabulary"), std::string::npos);
}

TEST(CharTokenizer, RejectsBadVocabularies) {
  EXPECT_THROW(mdi::CharTokenizer({}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"a", "a"}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"é", "é"}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"ab"}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({""}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"\xff"}), mdi::UserError);
}

// Writes a /tokenizer group: type (fixed or variable-length string), vocab bytes and offsets.
std::string write_tokenizer_file(const std::string& name, const std::string& type, bool vlen,
                                 const std::vector<std::string>& vocab, bool break_offsets = false) {
  auto path = (std::filesystem::temp_directory_path() / ("mdi-tok-" + name + ".h5")).string();
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t g = H5Gcreate2(f, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t st = H5Tcopy(H5T_C_S1);
  hid_t scalar = H5Screate(H5S_SCALAR);
  if (vlen) {
    H5Tset_size(st, H5T_VARIABLE);
    const char* s = type.c_str();
    hid_t a = H5Acreate2(g, "type", st, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, st, &s);
    H5Aclose(a);
  } else {
    H5Tset_size(st, type.size());
    hid_t a = H5Acreate2(g, "type", st, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, st, type.data());
    H5Aclose(a);
  }
  std::string bytes;
  std::vector<int64_t> off = {0};
  for (const std::string& v : vocab) bytes += v, off.push_back(int64_t(bytes.size()));
  if (break_offsets) off.back() += 1;
  hsize_t nb = bytes.size(), no = off.size();
  hid_t sb = H5Screate_simple(1, &nb, nullptr), so = H5Screate_simple(1, &no, nullptr);
  hid_t db = H5Dcreate2(g, "vocab", H5T_STD_U8LE, sb, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(db, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data());
  hid_t dof = H5Dcreate2(g, "offsets", H5T_STD_I64LE, so, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(dof, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off.data());
  for (hid_t h : {db, dof}) H5Dclose(h);
  for (hid_t h : {sb, so, scalar}) H5Sclose(h);
  H5Tclose(st);
  H5Gclose(g);
  H5Fclose(f);
  return path;
}

TEST(LoadTokenizer, ReadsFixedAndVariableLengthType) {
  for (bool vlen : {false, true}) {
    auto t = mdi::load_tokenizer(write_tokenizer_file(vlen ? "v" : "f", "char", vlen, {"x", "ü", "\n"}));
    EXPECT_EQ(t->type(), "char");
    EXPECT_EQ(t->vocab_size(), 3);
    EXPECT_EQ(t->encode("üx\n"), (std::vector<int>{1, 0, 2}));
  }
}

TEST(LoadTokenizer, ReadsTheFixture) {
  auto t = mdi::load_tokenizer(std::string(MDI_FIXTURES) + "/tiny_gpt2.h5");
  EXPECT_EQ(t->vocab_size(), 39);
  const std::string s = "Ma la città, perché?";
  EXPECT_EQ(t->decode(t->encode(s)), s);
}

TEST(LoadTokenizer, ReadsTheEndOfTextToken) {
  auto t = mdi::load_tokenizer(std::string(MDI_FIXTURES) + "/tiny_nanogpt.h5");
  ASSERT_TRUE(t->eot());
  EXPECT_EQ(t->decode({*t->eot()}), "\n");
  EXPECT_THROW(mdi::CharTokenizer({"a"}, 1), mdi::UserError);
}

TEST(LoadTokenizer, RefusesBrokenGroups) {
  EXPECT_NE(error_of([] { mdi::load_tokenizer(write_tokenizer_file("o", "char", true, {"a", "b"}, true)); })
                .find("offsets"), std::string::npos);
  EXPECT_NE(error_of([] { mdi::load_tokenizer(write_tokenizer_file("t", "wordpiece", true, {"a"})); })
                .find("'wordpiece' is not supported"), std::string::npos);
  auto path = (std::filesystem::temp_directory_path() / "mdi-tok-none.h5").string();
  H5Fclose(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  EXPECT_NE(error_of([&] { mdi::load_tokenizer(path); }).find("no /tokenizer group"), std::string::npos);
}

}  // namespace
