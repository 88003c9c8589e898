// Loads one rank's share of the weights from the HDF5 file into one fp32 allocation.
// Only the rank's own /h/{i} groups (and, on rank 0, wte, wpe, ln_f, lm_head) are read, so a
// rank's memory scales with its share of the layers.
#include "mdi/weights.h"


#include "mdi/error.h"
#include "mdi/h5.h"

namespace mdi {

namespace {
constexpr int kFormatVersion = 1;

// Upper bounds that keep a corrupt or hostile file from sizing terabyte allocations.
constexpr int64_t kMaxLayers = 4096, kMaxEmbd = 65536, kMaxHeads = 4096, kMaxBlock = 1 << 20,
                  kMaxVocab = 1 << 24;

int64_t bounded(hid_t root, const char* name, int64_t lo, int64_t hi, const std::string& what) {
  int64_t v = h5::read_int_attr(root, name, what);
  if (v < lo || v > hi) user_error("{}: attribute {} = {} is out of range [{}, {}]", what, name, v, lo, hi);
  return v;
}
}  // namespace

Config read_config(const std::string& path) {
  h5::Handle f = h5::open_file(path);
  const std::string what = path + ":/";
  hid_t root = f.get();
  Config c;
  std::string format = h5::read_string_attr(root, "format", what);
  if (format == "mdi-llm-tokenizer")
    user_error("{} holds only a tokenizer (from mdi-train-bpe), no model: put it into one with "
               "mdi-convert --tokenizer {} or mdi-train-bpe --into MODEL.h5", path, path);
  if (format != "mdi-llm")
    user_error("{}: attribute format = '{}', expected 'mdi-llm' (convert the model with mdi-convert)", what, format);
  int64_t version = h5::read_int_attr(root, "format_version", what);
  if (version != kFormatVersion)
    user_error("{}: format_version {} is not supported (this build reads version {})", what, version, kFormatVersion);
  c.model_type = h5::read_string_attr(root, "model_type", what);
  if (c.model_type != "gpt2" && c.model_type != "nanogpt")
    user_error("{}: model_type '{}' is not supported (expected 'gpt2' or 'nanogpt')", what, c.model_type);
  c.n_layer = int(bounded(root, "n_layer", 1, kMaxLayers, what));
  c.n_head = int(bounded(root, "n_head", 1, kMaxHeads, what));
  c.n_embd = int(bounded(root, "n_embd", 1, kMaxEmbd, what));
  c.block_size = int(bounded(root, "block_size", 1, kMaxBlock, what));
  c.vocab_size = int(bounded(root, "vocab_size", 1, kMaxVocab, what));
  c.bias = bounded(root, "bias", 0, 1, what) != 0;
  double eps = h5::read_float_attr(root, "layer_norm_eps", what);
  if (!(eps > 0 && eps < 1)) user_error("{}: layer_norm_eps = {} is out of range (0, 1)", what, eps);
  c.layer_norm_eps = float(eps);
  if (c.n_embd % c.n_head != 0)
    user_error("{}: n_embd = {} is not a multiple of n_head = {}", what, c.n_embd, c.n_head);
  c.tied_lm_head = !h5::exists(root, "/lm_head/weight");
  return c;
}

Weights load_weights(const std::string& path, const Config& cfg, int layer_begin, int layer_end,
                     bool with_head, int lm_begin, int lm_end, bool keep_halves) {
  if (layer_begin < 0 || layer_end > cfg.n_layer || layer_begin > layer_end)
    user_error("layer range [{}, {}) is outside the model's {}", layer_begin, layer_end,
               count_of(cfg.n_layer, "layer"));
  if (lm_end < 0) lm_begin = 0, lm_end = with_head ? cfg.vocab_size : 0;
  if (lm_begin < 0 || lm_end > cfg.vocab_size || lm_begin > lm_end)
    user_error("lm_head rows [{}, {}) are outside the model's {} rows", lm_begin, lm_end, cfg.vocab_size);
  h5::Handle f = h5::open_file(path);
  const hsize_t C = cfg.n_embd, V = cfg.vocab_size, T = cfg.block_size;

  // One table of (dataset, shape, destination) drives both the sizing and the reading.
  struct Item {
    std::string name;
    std::vector<hsize_t> shape;
    const float** dst;
    hsize_t row0 = 0, rows = 0;  // rows > 0: only rows [row0, row0 + rows) of the dataset
  };
  Weights w;
  w.layer_begin = layer_begin;
  w.layer_end = layer_end;
  w.has_head = with_head;
  w.layers.resize(layer_end - layer_begin);
  std::vector<Item> items;
  auto add = [&](std::string name, std::vector<hsize_t> shape, const float** dst, bool present = true) {
    if (present) items.push_back({std::move(name), std::move(shape), dst});
    else *dst = nullptr;
  };
  w.head.lm_begin = lm_begin;
  w.head.lm_end = lm_end;
  const bool lm = lm_end > lm_begin || with_head;
  if (with_head) {
    add("/wte", {V, C}, &w.head.wte);
    add("/wpe", {T, C}, &w.head.wpe);
  }
  if (lm) {
    add("/ln_f/weight", {C}, &w.head.lnf_w);
    add("/ln_f/bias", {C}, &w.head.lnf_b, cfg.bias);
  }
  // The lm_head's rows: rank 0 points into its wte when the head is tied; a rank without the
  // embeddings reads its rows of whichever dataset holds them.
  if (lm_end > lm_begin && !(with_head && cfg.tied_lm_head)) {
    items.push_back({cfg.tied_lm_head ? "/wte" : "/lm_head/weight", {V, C}, &w.head.lm_head, hsize_t(lm_begin),
                     hsize_t(lm_end - lm_begin)});
  }
  for (int i = layer_begin; i < layer_end; ++i) {
    LayerWeights& l = w.layers[i - layer_begin];
    const std::string h = "/h/" + std::to_string(i) + "/";
    add(h + "ln_1/weight", {C}, &l.ln1_w);
    add(h + "ln_1/bias", {C}, &l.ln1_b, cfg.bias);
    add(h + "attn/c_attn/weight", {3 * C, C}, &l.attn_w);
    add(h + "attn/c_attn/bias", {3 * C}, &l.attn_b, cfg.bias);
    add(h + "attn/c_proj/weight", {C, C}, &l.aproj_w);
    add(h + "attn/c_proj/bias", {C}, &l.aproj_b, cfg.bias);
    add(h + "ln_2/weight", {C}, &l.ln2_w);
    add(h + "ln_2/bias", {C}, &l.ln2_b, cfg.bias);
    add(h + "mlp/c_fc/weight", {4 * C, C}, &l.fc_w);
    add(h + "mlp/c_fc/bias", {4 * C}, &l.fc_b, cfg.bias);
    add(h + "mlp/c_proj/weight", {C, 4 * C}, &l.mproj_w);
    add(h + "mlp/c_proj/bias", {C}, &l.mproj_b, cfg.bias);
  }
  // A file whose bias attribute says 0 but that carries bias datasets contradicts itself.
  if (!cfg.bias && h5::exists(f.get(), "/h/0/attn/c_attn/bias"))
    user_error("{}: attribute bias = 0 but the file has bias datasets (e.g. /h/0/attn/c_attn/bias)", path);

  // Every dataset's shape, and that the file holds its values, is checked before the attributes'
  // sizes make the one allocation (a corrupt n_embd or vocab_size would ask for terabytes).
  for (const Item& it : items) {
    const std::vector<hsize_t> dims = h5::dataset_shape(f.get(), it.name, path);
    if (dims != it.shape)
      user_error("{}: dataset {}: expected shape {}, got {}", path, it.name, h5::shape_str(it.shape),
                 h5::shape_str(dims));
  }
  // The matrices stay binary16 where the caller asks and the file stores every one of them so.
  auto matrix = [](const Item& it) { return it.shape.size() == 2; };
  w.matrices_f16 = keep_halves;
  for (const Item& it : items)
    if (w.matrices_f16 && matrix(it)) w.matrices_f16 = h5::is_half_dataset(f.get(), it.name, path);
  auto halves = [&](const Item& it) { return w.matrices_f16 && matrix(it); };
  auto room = [&](const Item& it) {  // in floats, rounded up to 16 (64 bytes)
    size_t n = it.rows > 0 ? it.rows : 1;
    for (size_t i = it.rows > 0 ? 1 : 0; i < it.shape.size(); ++i) n *= it.shape[i];
    if (halves(it)) n = (n + 1) / 2;
    return (n + 15) / 16 * 16;
  };
  size_t total = 0;
  for (const Item& it : items) total += room(it);
  w.storage.resize(total);
  size_t off = 0;
  for (const Item& it : items) {
    float* dst = w.storage.data() + off;
    hsize_t rows = it.rows;  // rows [it.row0, it.row0 + rows); 0: the whole dataset
    if (rows == 0) rows = it.shape.empty() ? 1 : it.shape[0];
    if (halves(it))
      h5::read_half_rows(f.get(), it.name, it.shape, it.row0, rows, reinterpret_cast<uint16_t*>(dst),
                         path);
    else
      h5::read_float_rows(f.get(), it.name, it.shape, it.row0, rows, dst, path);
    *it.dst = dst;
    off += room(it);
  }
  if (with_head && cfg.tied_lm_head)
    w.head.lm_head = w.matrices_f16
                         ? reinterpret_cast<const float*>(w.f16(w.head.wte) + size_t(lm_begin) * C)
                         : w.head.wte + size_t(lm_begin) * C;
  return w;
}

}  // namespace mdi
