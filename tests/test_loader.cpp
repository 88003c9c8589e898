// Loader tests: per-rank loading reads only the rank's own groups, fp16 files convert (or keep
// their halves for a CUDA rank), and every kind of bad file is refused with a message that names
// the file, the object, expected and got.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "mdi/big_array.h"
#include "mdi/error.h"
#include "mdi/h5.h"
#include "mdi/half.h"
#include "mdi/weights.h"

namespace fs = std::filesystem;

namespace {

const std::string kModel = std::string(MDI_FIXTURES) + "/tiny_gpt2.h5";

// A copy of the fixture, changed by `edit` through the HDF5 API, in a temporary directory.
std::string edited_copy(const std::string& tag, const std::function<void(hid_t)>& edit,
                        const std::string& from = kModel) {
  fs::path dir = fs::temp_directory_path() / "mdi-loader-test";
  fs::create_directories(dir);
  fs::path p = dir / (tag + ".h5");
  fs::copy_file(from, p, fs::copy_options::overwrite_existing);
  hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  EXPECT_GE(f, 0);
  edit(f);
  H5Fclose(f);
  return p.string();
}

void replace_dataset(hid_t f, const char* name, std::vector<hsize_t> dims, hid_t type) {
  ASSERT_GE(H5Ldelete(f, name, H5P_DEFAULT), 0);
  hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  H5Dclose(d);
  H5Sclose(space);
}

void set_int_attr(hid_t f, const char* name, long long v) {
  H5Adelete(f, name);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_LLONG, &v);
  H5Aclose(a);
  H5Sclose(space);
}

// Expects load (config + all layers + head) to throw a UserError containing every fragment.
void expect_refused(const std::string& path, std::initializer_list<std::string> fragments) {
  try {
    mdi::Config cfg = mdi::read_config(path);
    mdi::load_weights(path, cfg, 0, cfg.n_layer, true);
    ADD_FAILURE() << "no error for " << path;
  } catch (const mdi::UserError& e) {
    for (const std::string& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(Loader, ReadsConfig) {
  mdi::Config c = mdi::read_config(kModel);
  EXPECT_EQ(c.model_type, "gpt2");
  EXPECT_EQ(c.n_layer, 4);
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.block_size, 32);
  EXPECT_TRUE(c.bias);
  EXPECT_TRUE(c.tied_lm_head);
}

TEST(Loader, RankLoadsOnlyItsLayers) {
  // Layer 3's MLP is gone: ranks that do not own layer 3 never notice; the one that does says so.
  std::string p = edited_copy("no_layer3_fc", [](hid_t f) { H5Ldelete(f, "/h/3/mlp/c_fc/weight", H5P_DEFAULT); });
  mdi::Config cfg = mdi::read_config(p);
  mdi::Weights w = mdi::load_weights(p, cfg, 0, 3, true);
  EXPECT_EQ(w.layers.size(), 3u);
  EXPECT_NEAR(double(w.bytes()), double(3 * cfg.block_params() + cfg.head_params()) * sizeof(float),
              (3 * 12 + 5) * 64);  // tensors start 64-byte aligned
  try {
    mdi::load_weights(p, cfg, 3, 4, false);
    ADD_FAILURE() << "missing dataset not reported";
  } catch (const mdi::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("/h/3/mlp/c_fc/weight is missing"), std::string::npos) << e.what();
  }
}

TEST(Loader, Fp16FileConvertsToTheSameWeights) {
  const std::string p16 = std::string(MDI_FIXTURES) + "/tiny_gpt2_fp16.h5";
  mdi::Config cfg = mdi::read_config(kModel);
  mdi::Weights a = mdi::load_weights(kModel, cfg, 0, cfg.n_layer, true);
  mdi::Weights b = mdi::load_weights(p16, mdi::read_config(p16), 0, cfg.n_layer, true);
  ASSERT_EQ(a.storage.size(), b.storage.size());
  double max_rel = 0;
  for (size_t i = 0; i < a.storage.size(); ++i)
    max_rel = std::max(max_rel, std::fabs(double(a.storage[i]) - b.storage[i]) / (std::fabs(a.storage[i]) + 1e-3));
  EXPECT_LT(max_rel, 1e-3);  // half precision keeps 11 significant bits
}

// Every tensor of `h` (loaded with keep_halves) against the same tensor of `f` (fp32): the 2-D
// ones' halves widen to exactly f's floats, the 1-D ones are f's floats.
void expect_same_values(const mdi::Weights& f, const mdi::Weights& h, const mdi::Config& cfg) {
  const size_t C = cfg.n_embd;
  auto same = [&](const float* a, const float* b, size_t n, bool matrix, const char* what) {
    ASSERT_EQ(a == nullptr, b == nullptr) << what;
    size_t differ = 0;
    for (size_t i = 0; a != nullptr && i < n; ++i) {
      const float x = matrix ? mdi::half_to_float(mdi::Weights::f16(b)[i]) : b[i];
      differ += std::memcmp(&x, a + i, sizeof x) != 0;
    }
    EXPECT_EQ(differ, 0u) << what;
  };
  ASSERT_EQ(f.layers.size(), h.layers.size());
  for (size_t l = 0; l < f.layers.size(); ++l) {
    const mdi::LayerWeights &a = f.layers[l], &b = h.layers[l];
    same(a.ln1_w, b.ln1_w, C, false, "ln1_w");
    same(a.ln1_b, b.ln1_b, C, false, "ln1_b");
    same(a.attn_w, b.attn_w, 3 * C * C, true, "attn_w");
    same(a.attn_b, b.attn_b, 3 * C, false, "attn_b");
    same(a.aproj_w, b.aproj_w, C * C, true, "aproj_w");
    same(a.aproj_b, b.aproj_b, C, false, "aproj_b");
    same(a.ln2_w, b.ln2_w, C, false, "ln2_w");
    same(a.ln2_b, b.ln2_b, C, false, "ln2_b");
    same(a.fc_w, b.fc_w, 4 * C * C, true, "fc_w");
    same(a.fc_b, b.fc_b, 4 * C, false, "fc_b");
    same(a.mproj_w, b.mproj_w, 4 * C * C, true, "mproj_w");
    same(a.mproj_b, b.mproj_b, C, false, "mproj_b");
  }
  ASSERT_EQ(f.has_head, h.has_head);
  ASSERT_EQ(f.head.lm_begin, h.head.lm_begin);
  ASSERT_EQ(f.head.lm_end, h.head.lm_end);
  if (f.has_head) {
    same(f.head.wte, h.head.wte, size_t(cfg.vocab_size) * C, true, "wte");
    same(f.head.wpe, h.head.wpe, size_t(cfg.block_size) * C, true, "wpe");
  }
  same(f.head.lnf_w, h.head.lnf_w, C, false, "lnf_w");
  same(f.head.lnf_b, h.head.lnf_b, C, false, "lnf_b");
  same(f.head.lm_head, h.head.lm_head, size_t(f.head.lm_end - f.head.lm_begin) * C, true,
       "lm_head");
}

TEST(Loader, KeepsAFloat16FilesMatricesAsHalves) {
  const std::string p16 = std::string(MDI_FIXTURES) + "/tiny_gpt2_fp16.h5";
  const mdi::Config cfg = mdi::read_config(p16);
  const int L = cfg.n_layer, V = cfg.vocab_size;
  struct Share {
    int l0, l1;
    bool head;
    int lm_begin, lm_end;
  };
  // Rank 0 of one (tied lm_head: rows of its wte), a middle rank, the last rank of a head split.
  for (const Share& r :
       {Share{0, L, true, 0, -1}, Share{1, 3, false, 0, 0}, Share{3, L, false, V - 7, V}}) {
    SCOPED_TRACE(testing::Message() << "layers [" << r.l0 << ", " << r.l1 << ") head " << r.head);
    const mdi::Weights f = mdi::load_weights(p16, cfg, r.l0, r.l1, r.head, r.lm_begin, r.lm_end);
    const mdi::Weights h =
        mdi::load_weights(p16, cfg, r.l0, r.l1, r.head, r.lm_begin, r.lm_end, true);
    EXPECT_FALSE(f.matrices_f16);
    EXPECT_TRUE(h.matrices_f16);
    EXPECT_LT(double(h.bytes()), 0.55 * double(f.bytes()));
    expect_same_values(f, h, cfg);
  }
  // An fp32 file, and a float16 file with one fp32 matrix, stay fp32 throughout.
  const std::string mixed = edited_copy(
      "fp16_with_one_fp32_matrix",
      [](hid_t f) {
        replace_dataset(f, "/h/2/attn/c_proj/weight", {64, 64}, H5T_IEEE_F32LE);
      },
      p16);
  for (const std::string& p : {kModel, mixed}) {
    const mdi::Config c = mdi::read_config(p);
    const mdi::Weights f = mdi::load_weights(p, c, 0, c.n_layer, true);
    const mdi::Weights h = mdi::load_weights(p, c, 0, c.n_layer, true, 0, -1, true);
    EXPECT_FALSE(h.matrices_f16) << p;
    ASSERT_EQ(f.storage.size(), h.storage.size()) << p;
    EXPECT_EQ(std::memcmp(f.storage.data(), h.storage.data(), f.bytes()), 0) << p;
  }
}

TEST(BigArray, ZeroedAlignedMovableAndRefusesTheImpossible) {
  mdi::BigArray<float> a;
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.data(), nullptr);
  a.resize(3000001);  // not a multiple of a page
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);  // every tensor offset keeps 64 bytes
  a.touch_pages();                                            // maps the pages, changes nothing
  size_t nonzero = 0;
  for (float x : a) nonzero += x != 0.0f;
  EXPECT_EQ(nonzero, 0u);
  a[0] = 1.0f;
  a[a.size() - 1] = 2.0f;  // the last element is writable
  mdi::BigArray<float> b = std::move(a);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.data(), nullptr);
  ASSERT_EQ(b.size(), 3000001u);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[b.size() - 1], 2.0f);
  b.resize(10);  // drops the old contents
  EXPECT_EQ(b.size(), 10u);
  EXPECT_EQ(b[0], 0.0f);
  b.resize(0);
  EXPECT_EQ(b.data(), nullptr);
  b.touch_pages();  // nothing to touch
  EXPECT_THROW(b.resize(SIZE_MAX / sizeof(float)), std::bad_alloc);
  EXPECT_EQ(b.size(), 0u);  // a failed resize leaves the array as it was
}

TEST(Loader, HalfConversionIsExactAndMatchesHdf5) {
  // Every one of the 65536 halves against HDF5's own conversion.
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  std::vector<float> theirs(65536);
  std::memcpy(theirs.data(), all.data(), all.size() * 2);
  hid_t half = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(half, 15, 10, 5, 0, 10);
  H5Tset_precision(half, 16);
  H5Tset_size(half, 2);
  H5Tset_ebias(half, 15);
  ASSERT_GE(H5Tconvert(half, H5T_NATIVE_FLOAT, 65536, theirs.data(), nullptr, H5P_DEFAULT), 0);
  H5Tclose(half);
  std::vector<float> batch(65536);
  mdi::halves_to_floats(all.data(), batch.data(), all.size());
  for (int i = 0; i < 65536; ++i) {
    float mine = mdi::half_to_float(uint16_t(i));
    if (std::isnan(mine)) EXPECT_TRUE(std::isnan(theirs[i])) << i;
    else EXPECT_EQ(mine, theirs[i]) << "half 0x" << std::hex << i;
    EXPECT_EQ(std::memcmp(&batch[i], &mine, sizeof mine), 0) << "batch, half 0x" << std::hex << i;
  }
}

TEST(Loader, RefusesMissingAndNonHdf5Files) {
  expect_refused("/nonexistent/model.h5", {"/nonexistent/model.h5", "no such file"});
  fs::path txt = fs::temp_directory_path() / "mdi-not-hdf5.h5";
  { std::FILE* f = std::fopen(txt.c_str(), "w"); std::fputs("hello\n", f); std::fclose(f); }
  expect_refused(txt.string(), {"not an HDF5 file"});
}

TEST(Loader, RefusesWrongShapeNamingDatasetExpectedAndGot) {
  std::string p = edited_copy("bad_shape", [](hid_t f) {
    replace_dataset(f, "/h/2/attn/c_attn/weight", {64, 64}, H5T_IEEE_F32LE);
  });
  expect_refused(p, {"/h/2/attn/c_attn/weight", "expected shape (192, 64)", "got (64, 64)"});
}

TEST(Loader, RefusesIntegerDataset) {
  std::string p = edited_copy("int_dtype", [](hid_t f) { replace_dataset(f, "/wpe", {32, 64}, H5T_STD_I32LE); });
  expect_refused(p, {"/wpe", "float"});
}

TEST(Loader, RefusesContradictoryAttributes) {
  expect_refused(edited_copy("heads", [](hid_t f) { set_int_attr(f, "n_head", 5); }),
                 {"n_embd = 64 is not a multiple of n_head = 5"});
  expect_refused(edited_copy("bias0", [](hid_t f) { set_int_attr(f, "bias", 0); }),
                 {"bias = 0", "bias datasets"});
  expect_refused(edited_copy("vocab", [](hid_t f) { set_int_attr(f, "vocab_size", 1000); }),
                 {"/wte", "expected shape (1000, 64)"});
  expect_refused(edited_copy("absurd", [](hid_t f) { set_int_attr(f, "n_embd", 1LL << 40); }),
                 {"n_embd", "out of range"});
  expect_refused(edited_copy("noattr", [](hid_t f) { H5Adelete(f, "n_layer"); }), {"missing attribute 'n_layer'"});
  expect_refused(edited_copy("version", [](hid_t f) { set_int_attr(f, "format_version", 99); }),
                 {"format_version 99"});
}

}  // namespace
