// Tokenizer tests: the character tokenizer's round trip and errors, and load_tokenizer on the
// /tokenizer group of files written here (fixed- and variable-length type attribute, bad offsets).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <unistd.h>

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
  EXPECT_NE(error_of([&] { t.encode("aé"); }).find("'é' (U+00E9) at byte 1"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("ab\t"); }).find("control character U+0009 at byte 2"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("a\xF0\x9F\x98\x80"); }).find("(U+1F600) at byte 1"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("a\xff"); }).find("invalid UTF-8 byte 0xff at byte 1"), std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("\xC3"); }).find("invalid UTF-8"), std::string::npos);  // truncated
  EXPECT_NE(error_of([&] { t.encode("\xC0\xAF"); }).find("invalid UTF-8"), std::string::npos);  // overlong
  EXPECT_NE(error_of([&] { t.encode("\xED\xA0\x80"); }).find("invalid UTF-8"), std::string::npos);  // surrogate
  EXPECT_NE(error_of([&] { std::string s; t.decode_token(2, s); }).find("outside the vocabulary"), std::string::npos);
}

TEST(CharTokenizer, RejectsBadVocabularies) {
  EXPECT_THROW(mdi::CharTokenizer({}), mdi::UserError);
  EXPECT_NE(error_of([] { mdi::CharTokenizer({"a", "b", "a"}); }).find("token 2 repeats 'a' (token 0)"),
            std::string::npos);
  EXPECT_NE(error_of([] { mdi::CharTokenizer({"日", "b", "日"}); }).find("token 2 repeats '日' (U+65E5) (token 0)"),
            std::string::npos);
  EXPECT_THROW(mdi::CharTokenizer({"é", "é"}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"ab"}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({""}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"\xff"}), mdi::UserError);
  EXPECT_THROW(mdi::CharTokenizer({"\xC3"}), mdi::UserError);       // truncated
  EXPECT_THROW(mdi::CharTokenizer({"e\xCC\x81"}), mdi::UserError);  // e + combining accent: two
  EXPECT_THROW(mdi::CharTokenizer({"a", "b"}, -1), mdi::UserError);
}

// A /tokenizer group to write: type (fixed or variable-length string), vocab bytes and offsets
// (computed from `tokens` unless given), optional eot_token; `omit` drops one object by name.
struct TokFile {
  std::string type = "char";
  bool vlen = true;
  std::vector<std::string> tokens;
  std::vector<int64_t> offsets;  // empty: from tokens
  long long eot = -2;            // -2: no attribute
  std::string omit;              // "type", "vocab", "offsets" or "group"
};

// Writes the file into the temp directory (name made unique per process) and returns its path.
std::string write_tokenizer_file(const std::string& name, const TokFile& t) {
  auto path = (std::filesystem::temp_directory_path() /
               ("mdi-tok-" + std::to_string(::getpid()) + "-" + name + ".h5")).string();
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (t.omit == "group") {
    H5Fclose(f);
    return path;
  }
  hid_t g = H5Gcreate2(f, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t scalar = H5Screate(H5S_SCALAR);
  if (t.omit != "type") {
    hid_t st = H5Tcopy(H5T_C_S1);
    if (t.vlen) {  // as h5py writes a str attribute
      H5Tset_size(st, H5T_VARIABLE);
      H5Tset_cset(st, H5T_CSET_UTF8);
      const char* str = t.type.c_str();
      hid_t a = H5Acreate2(g, "type", st, scalar, H5P_DEFAULT, H5P_DEFAULT);
      H5Awrite(a, st, &str);
      H5Aclose(a);
    } else {  // as numpy's fixed-length bytes (np.bytes_) are written
      H5Tset_size(st, t.type.size());
      hid_t a = H5Acreate2(g, "type", st, scalar, H5P_DEFAULT, H5P_DEFAULT);
      H5Awrite(a, st, t.type.data());
      H5Aclose(a);
    }
    H5Tclose(st);
  }
  if (t.eot != -2) {
    hid_t a = H5Acreate2(g, "eot_token", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &t.eot);
    H5Aclose(a);
  }
  std::string bytes;
  std::vector<int64_t> off = {0};
  for (const std::string& v : t.tokens) bytes += v, off.push_back(int64_t(bytes.size()));
  if (!t.offsets.empty()) off = t.offsets;
  hsize_t nb = bytes.size(), no = off.size();
  if (t.omit != "vocab") {
    hid_t sb = H5Screate_simple(1, &nb, nullptr);
    hid_t d = H5Dcreate2(g, "vocab", H5T_STD_U8LE, sb, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data());
    H5Dclose(d);
    H5Sclose(sb);
  }
  if (t.omit != "offsets") {
    hid_t so = H5Screate_simple(1, &no, nullptr);
    hid_t d = H5Dcreate2(g, "offsets", H5T_STD_I64LE, so, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off.data());
    H5Dclose(d);
    H5Sclose(so);
  }
  H5Sclose(scalar);
  H5Gclose(g);
  H5Fclose(f);
  return path;
}

// load_tokenizer's error on the file, which is removed afterwards.
std::string load_error(const std::string& path) {
  std::string e = error_of([&] { mdi::load_tokenizer(path); });
  std::filesystem::remove(path);
  return e;
}

TEST(LoadTokenizer, ReadsFixedAndVariableLengthType) {
  for (bool vlen : {false, true}) {
    TokFile tf;
    tf.vlen = vlen;
    tf.tokens = {"x", "ü", "\n", "日", "\xF0\x9F\x98\x80"};
    const std::string path = write_tokenizer_file(vlen ? "v" : "f", tf);
    auto t = mdi::load_tokenizer(path);
    std::filesystem::remove(path);
    EXPECT_EQ(t->type(), "char");
    EXPECT_EQ(t->vocab_size(), 5);
    EXPECT_EQ(t->encode("üx\n😀日"), (std::vector<int>{1, 0, 2, 4, 3}));
    EXPECT_EQ(t->decode({4, 1, 3}), "😀ü日");
    EXPECT_FALSE(t->eot());
  }
}

TEST(LoadTokenizer, ReadsTheEotAttribute) {
  TokFile tf;
  tf.tokens = {"a", "\n"};
  tf.eot = 1;
  std::string path = write_tokenizer_file("e1", tf);
  EXPECT_EQ(mdi::load_tokenizer(path)->eot(), std::optional<int>(1));
  std::filesystem::remove(path);
  tf.eot = -1;  // -1: none
  path = write_tokenizer_file("e2", tf);
  EXPECT_FALSE(mdi::load_tokenizer(path)->eot());
  std::filesystem::remove(path);
  tf.eot = 2;
  EXPECT_NE(load_error(write_tokenizer_file("e3", tf)).find("eot_token 2"), std::string::npos);
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
  TokFile ok;
  ok.tokens = {"a", "b", "c"};
  auto expect_error = [](const std::string& name, const TokFile& tf, const std::vector<std::string>& parts) {
    const std::string path = write_tokenizer_file(name, tf);
    const std::string e = load_error(path);
    EXPECT_NE(e.find(path), std::string::npos) << name << ": " << e;  // names the file
    for (const std::string& p : parts) EXPECT_NE(e.find(p), std::string::npos) << name << ": " << e;
  };
  TokFile t = ok;
  t.offsets = {0, 1, 2, 4};  // ends past vocab
  expect_error("end", t, {"offsets", "3 bytes", "from 0 to 4"});
  t.offsets = {1, 2, 3};
  expect_error("start", t, {"offsets", "from 1 to 3"});
  t.offsets = {0, 100, 2, 3};  // in range only at the ends: must not read past vocab
  expect_error("decrease", t, {"offsets must not decrease", "offsets[1] = 100"});
  t.offsets = {0};
  expect_error("short", t, {"offsets", "got 1 entries"});
  t = ok;
  t.type = "wordpiece";
  expect_error("type", t, {"tokenizer type 'wordpiece' is not supported"});
  t = ok;
  t.tokens = {"a", "ab"};
  expect_error("token", t, {"token 1", "not exactly one UTF-8 character"});
  for (const char* what : {"type", "vocab", "offsets"}) {
    t = ok;
    t.omit = what;
    expect_error(std::string("no-") + what, t, {what, "missing"});
  }
  t = ok;
  t.omit = "group";
  expect_error("none", t, {"no /tokenizer group"});
  EXPECT_NE(error_of([] { mdi::load_tokenizer("/nonexistent/model.h5"); }).find("/nonexistent/model.h5"),
            std::string::npos);
}

}  // namespace
