// The C++ twin of tools/mdi_h5.py's ModelWriter (see h5_writer.h). HDF5 failures that are not the
// user's fault go through MDI_H5_CHECK; bad content is a UserError.
#include "h5_writer.h"

#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "mdi/bpe.h"
#include "mdi/error.h"
#include "mdi/h5.h"
#include "mdi/tokenizer.h"
#include "mdi/weights.h"
#include "safetensors.h"

namespace mdi::convert {

namespace {
constexpr int64_t kFormatVersion = 1;

// Runs an HDF5 call that writes to the output file; where it fails, one error that names the file
// and the system's reason (a full disk or quota: "No space left on device", "Disk quota exceeded").
template <typename F>
auto write_or_fail(const std::string& file, F&& call) {
  errno = 0;
  const auto rc = call();
  if (rc < 0) {
    const int err = errno;
    user_error("writing {} failed ({})", file, err ? std::strerror(err) : "HDF5 gave no reason");
  }
  return rc;
}

// Closes an output file once: where closing fails (its last writes did not go out), HDF5 1.10 has
// crashed on a second close (seen on a full disk), so the caller forgets the handle first.
void close_output_file(hid_t f, const std::string& file) {
  write_or_fail(file, [&] { return H5Fclose(f); });
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// A property list, closed on scope exit (h5::Handle does not close property lists).
struct Plist {
  hid_t id;
  explicit Plist(hid_t cls) : id(MDI_H5_CHECK(H5Pcreate(cls))) {}
  ~Plist() { H5Pclose(id); }
  Plist(const Plist&) = delete;
  Plist& operator=(const Plist&) = delete;
};

struct NoTimes : Plist {
  explicit NoTimes(hid_t cls) : Plist(cls) { MDI_H5_CHECK(H5Pset_obj_track_times(id, false)); }
};

// h5py's float16: IEEE binary16, little-endian.
hid_t make_half_type() {
  hid_t t = MDI_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE));
  MDI_H5_CHECK(H5Tset_fields(t, 15, 10, 5, 0, 10));
  MDI_H5_CHECK(H5Tset_size(t, 2));
  MDI_H5_CHECK(H5Tset_ebias(t, 15));
  return t;
}

void write_scalar_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, const void* v) {
  h5::Handle space(MDI_H5_CHECK(H5Screate(H5S_SCALAR)));
  h5::Handle a(MDI_H5_CHECK(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  MDI_H5_CHECK(H5Awrite(a.get(), mem_type, v));
}

void int_attr(hid_t obj, const char* name, int64_t v) {
  write_scalar_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

void str_attr(hid_t obj, const char* name, const std::string& v) {  // h5py: variable-length UTF-8
  h5::Handle t(MDI_H5_CHECK(H5Tcopy(H5T_C_S1)));
  MDI_H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE));
  MDI_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8));
  const char* p = v.c_str();
  write_scalar_attr(obj, name, t.get(), t.get(), &p);
}

// The group at path ("h/0/attn"), created component by component without timestamps.
hid_t require_group(hid_t file, const std::string& path) {
  std::string prefix;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    prefix += (prefix.empty() ? "" : "/") + path.substr(start, slash - start);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
      NoTimes gcpl(H5P_GROUP_CREATE);
      h5::Handle g(MDI_H5_CHECK(H5Gcreate2(file, prefix.c_str(), H5P_DEFAULT, gcpl.id, H5P_DEFAULT)));
    }
    start = slash + 1;
  }
  return MDI_H5_CHECK(H5Gopen2(file, path.c_str(), H5P_DEFAULT));
}

// Contiguous dataset at name (parents created), written from mem_type data.
void write_dataset(hid_t file, const std::string& name, const std::vector<int64_t>& shape,
                   hid_t file_type, hid_t mem_type, const void* data) {
  const size_t slash = name.rfind('/');
  h5::Handle parent;
  hid_t loc = file;
  if (slash != std::string::npos) {
    parent = h5::Handle(require_group(file, name.substr(0, slash)));
    loc = parent.get();
  }
  const std::string leaf = slash == std::string::npos ? name : name.substr(slash + 1);
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  h5::Handle space(MDI_H5_CHECK(H5Screate_simple(int(dims.size()), dims.data(), nullptr)));
  NoTimes dcpl(H5P_DATASET_CREATE);
  MDI_H5_CHECK(H5Pset_layout(dcpl.id, H5D_CONTIGUOUS));
  h5::Handle d(MDI_H5_CHECK(H5Dcreate2(loc, leaf.c_str(), file_type, space.get(), H5P_DEFAULT,
                                       dcpl.id, H5P_DEFAULT)));
  size_t n = 1;
  for (int64_t x : shape) n *= size_t(x);
  if (n == 0) return;
  std::string file_name(size_t(std::max<ssize_t>(H5Fget_name(file, nullptr, 0), 0)), '\0');
  H5Fget_name(file, file_name.data(), file_name.size() + 1);
  write_or_fail(name + " into " + file_name,
                [&] { return H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data); });
}

bool valid_one_char_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  if (n == 0) return false;
  size_t want = p[0] < 0x80 ? 1 : (p[0] >> 5) == 6 ? 2 : (p[0] >> 4) == 14 ? 3 : (p[0] >> 3) == 30 ? 4 : 0;
  if (want != n) return false;
  for (size_t i = 1; i < n; ++i)
    if ((p[i] & 0xC0) != 0x80) return false;
  return true;
}
}  // namespace

void check_config(const Config& c) {
  if (c.model_type != "gpt2" && c.model_type != "nanogpt")
    user_error("model_type must be gpt2 or nanogpt, got '{}'", c.model_type);
  const std::pair<const char*, int> dims[] = {{"n_layer", c.n_layer}, {"n_head", c.n_head},
      {"n_embd", c.n_embd}, {"block_size", c.block_size}, {"vocab_size", c.vocab_size}};
  for (auto& [k, v] : dims)
    if (v <= 0) user_error("{} must be a positive integer, got {}", k, v);
  if (c.n_embd % c.n_head) user_error("n_embd = {} is not a multiple of n_head = {}", c.n_embd, c.n_head);
  if (!(c.layer_norm_eps > 0 && c.layer_norm_eps < 1))
    user_error("layer_norm_eps must be in (0, 1), got {}", c.layer_norm_eps);
}

void check_tokenizer(const TokenizerData& t, int V) {
  if (t.type != "char" && t.type != "gpt2-bpe" && t.type != "bpe")
    user_error("tokenizer type must be char, gpt2-bpe or bpe, got '{}'", t.type);
  if (t.tokens.empty()) user_error("the tokenizer has no tokens");
  if (int64_t(t.tokens.size()) > V)
    user_error("the tokenizer has {} tokens but the model's vocab_size is {}", t.tokens.size(), V);
  std::set<std::string> seen;
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    if (t.type == "char" && !valid_one_char_utf8(t.tokens[i]))
      user_error("char tokenizer: token {} is not one UTF-8 character", i);
    if (!seen.insert(t.tokens[i]).second) user_error("the tokenizer's vocabulary has a duplicate token (id {})", i);
  }
  if (t.eot < -1 || t.eot >= int64_t(t.tokens.size()))
    user_error("eot_token {} is not -1 or a token id below {}", t.eot, t.tokens.size());
  if (t.type == "char" && !t.merges.empty()) user_error("a char tokenizer has no merges");
  for (size_t r = 0; r < t.merges.size(); ++r) {
    const auto [a, b] = t.merges[r];
    if (a < 0 || b < 0 || a >= int64_t(t.tokens.size()) || b >= int64_t(t.tokens.size()))
      user_error("merge {} ({}, {}) refers to a token outside the vocabulary", r, a, b);
  }
}

std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_shapes(const Config& c) {
  const int64_t C = c.n_embd, V = c.vocab_size, T = c.block_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {{"wte", {V, C}}, {"wpe", {T, C}},
                                                                   {"ln_f/weight", {C}}};
  if (c.bias) out.push_back({"ln_f/bias", {C}});
  if (!c.tied_lm_head) out.push_back({"lm_head/weight", {V, C}});
  struct Lin {
    const char* name;
    std::vector<int64_t> w, b;
  };
  const Lin lins[] = {{"ln_1", {C}, {C}},           {"attn/c_attn", {3 * C, C}, {3 * C}},
                      {"attn/c_proj", {C, C}, {C}}, {"ln_2", {C}, {C}},
                      {"mlp/c_fc", {4 * C, C}, {4 * C}}, {"mlp/c_proj", {C, 4 * C}, {C}}};
  for (int i = 0; i < c.n_layer; ++i)
    for (const Lin& l : lins) {
      const std::string p = "h/" + std::to_string(i) + "/" + l.name;
      out.push_back({p + "/weight", l.w});
      if (c.bias) out.push_back({p + "/bias", l.b});
    }
  return out;
}

void init_writer_process() {
  H5dont_atexit();
}

ModelWriter::ModelWriter(const std::string& path, const Config& cfg, const TokenizerData& tok, Dtype dtype)
    : path_(path), tmp_(path + ".partial"), dtype_(dtype) {
  check_config(cfg);
  check_tokenizer(tok, cfg.vocab_size);
  for (auto& [n, s] : tensor_shapes(cfg)) {
    expected_[n] = s;
    order_.push_back(n);
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Plist fapl(H5P_FILE_ACCESS);
  MDI_H5_CHECK(H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V18, H5F_LIBVER_V18));
  NoTimes fcpl(H5P_FILE_CREATE);
  hid_t f = H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, fcpl.id, fapl.id);
  if (f < 0) user_error("cannot create {} (directory missing or not writable?)", tmp_);
  file_ = f;
  str_attr(f, "format", "mdi-llm");  // the order mdi_h5.ModelWriter writes them in
  int_attr(f, "format_version", kFormatVersion);
  str_attr(f, "model_type", cfg.model_type);
  int_attr(f, "n_layer", cfg.n_layer);
  int_attr(f, "n_head", cfg.n_head);
  int_attr(f, "n_embd", cfg.n_embd);
  int_attr(f, "block_size", cfg.block_size);
  int_attr(f, "vocab_size", cfg.vocab_size);
  int_attr(f, "bias", cfg.bias ? 1 : 0);
  // Config holds a float: store the shortest decimal that reads back as it (1e-5, not 9.99999975e-6).
  const double eps = std::stod(fmt::format("{}", cfg.layer_norm_eps));
  write_scalar_attr(f, "layer_norm_eps", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &eps);

  write_tokenizer_group(f, tok);
}

void write_tokenizer_group(int64_t file, const TokenizerData& tok) {
  const hid_t f = hid_t(file);
  h5::Handle g(require_group(f, "tokenizer"));
  str_attr(g.get(), "type", tok.type);
  int_attr(g.get(), "eot_token", tok.eot);
  std::string bytes;
  std::vector<int64_t> offsets{0};
  for (const std::string& t : tok.tokens) {
    bytes += t;
    offsets.push_back(int64_t(bytes.size()));
  }
  write_dataset(f, "tokenizer/vocab", {int64_t(bytes.size())}, H5T_STD_U8LE, H5T_NATIVE_UINT8, bytes.data());
  write_dataset(f, "tokenizer/offsets", {int64_t(offsets.size())}, H5T_STD_I64LE, H5T_NATIVE_INT64,
                offsets.data());
  if (tok.type != "char") {
    std::vector<int32_t> m;
    for (auto [a, b] : tok.merges) m.insert(m.end(), {a, b});
    write_dataset(f, "tokenizer/merges", {int64_t(tok.merges.size()), 2}, H5T_STD_I32LE, H5T_NATIVE_INT32,
                  m.data());
  }
}

TokenizerData read_tokenizer(const std::string& path) {
  const std::unique_ptr<Tokenizer> t = load_tokenizer(path);
  TokenizerData d;
  d.type = t->type();
  for (int i = 0; i < t->vocab_size(); ++i) {
    d.tokens.emplace_back();
    t->decode_token(i, d.tokens.back());
  }
  if (const auto* bpe = dynamic_cast<const Gpt2Bpe*>(t.get()))
    for (auto [a, b] : bpe->merges()) d.merges.emplace_back(a, b);
  d.eot = t->eot() ? *t->eot() : -1;
  return d;
}

void write_tokenizer_file(const std::string& path, const TokenizerData& tok) {
  check_tokenizer(tok, int(tok.tokens.size()));
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const std::string tmp = path + ".partial";
  Plist fapl(H5P_FILE_ACCESS);
  MDI_H5_CHECK(H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V18, H5F_LIBVER_V18));
  NoTimes fcpl(H5P_FILE_CREATE);
  hid_t f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.id, fapl.id);
  if (f < 0) user_error("cannot create {} (directory missing or not writable?)", tmp);
  try {
    str_attr(f, "format", "mdi-llm-tokenizer");
    int_attr(f, "format_version", kFormatVersion);
    write_tokenizer_group(f, tok);
  } catch (...) {
    H5Fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }
  try {
    close_output_file(f, tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) user_error("cannot rename {} to {}", tmp, path);
}

void replace_tokenizer(const std::string& path, const TokenizerData& tok) {
  const Config cfg = read_config(path);  // a model file, checked
  check_tokenizer(tok, cfg.vocab_size);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  // A copy is changed and then renamed over the model: a write that fails halfway (a full disk)
  // leaves the model as it was, where changing it in place left it without a tokenizer.
  const std::string tmp = path + ".partial";
  std::error_code ec;
  std::filesystem::copy_file(path, tmp, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    user_error("cannot copy {} to {} ({})", path, tmp, ec.message());
  }
  hid_t f = H5Fopen(tmp.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) {
    ::unlink(tmp.c_str());
    user_error("cannot open {} for writing", tmp);
  }
  try {
    try {
      if (H5Lexists(f, "tokenizer", H5P_DEFAULT) > 0)
        MDI_H5_CHECK(H5Ldelete(f, "tokenizer", H5P_DEFAULT));
      write_tokenizer_group(f, tok);
    } catch (...) {
      H5Fclose(f);
      throw;
    }
    close_output_file(f, tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) user_error("cannot rename {} to {}", tmp, path);
}

void ModelWriter::put(const std::string& name, const float* data, size_t n) {
  auto it = expected_.find(name);
  if (it == expected_.end()) user_error("internal: unexpected tensor '{}' for this config", name);
  if (written_[name]) user_error("tensor '{}' written twice", name);
  size_t want = 1;
  for (int64_t x : it->second) want *= size_t(x);
  if (n != want) user_error("tensor {}: expected shape {} ({} values), got {} values", name, shape_str(it->second), want, n);
  // Counted first (a loop that vectorizes), then found.
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += !std::isfinite(data[i]);
  for (size_t i = 0; bad && i < n; ++i)
    if (!std::isfinite(data[i])) user_error("tensor {}: value {} is not finite ({})", name, i, data[i]);
  if (dtype_ == Dtype::F32) {
    write_dataset(file_, name, it->second, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data);
  } else {
    halves_.resize(n);
    uint16_t* h = halves_.data();
    floats_to_halves(data, h, n);
    for (size_t i = 0; i < n; ++i) bad += (h[i] & 0x7c00u) == 0x7c00u;
    for (size_t i = 0; bad && i < n; ++i)
      if ((h[i] & 0x7c00u) == 0x7c00u)
        user_error("tensor {}: value {} ({}) overflows float16", name, i, data[i]);
    h5::Handle half(make_half_type());
    write_dataset(file_, name, it->second, half.get(), half.get(), h);
  }
  written_[name] = true;
  params_ += int64_t(n);
}

uint64_t ModelWriter::close() {
  std::vector<std::string> missing;
  for (const std::string& n : order_)
    if (!written_[n]) missing.push_back(n);
  if (!missing.empty())
    user_error("tensors never written: {}{}", missing[0], missing.size() > 1 ? fmt::format(" and {} more", missing.size() - 1) : "");
  const hid_t f = hid_t(file_);
  file_ = -1;
  close_output_file(f, tmp_);  // where it fails, the destructor removes the partial file
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) user_error("cannot rename {} to {}", tmp_, path_);
  tmp_.clear();
  struct stat st {};
  stat(path_.c_str(), &st);
  return uint64_t(st.st_size);
}

ModelWriter::~ModelWriter() {
  if (file_ >= 0) H5Fclose(hid_t(file_));
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

}  // namespace mdi::convert
