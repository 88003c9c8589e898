// mdi-logits: the logits of a model at every position of one token sequence, on one process, as
// raw little-endian float32 (T, V) rows. For comparisons against other frameworks (tools/
// compare_hf.py) and of backends; generation itself is mdi-llm's job. Leaves out: batches,
// sequences longer than block_size.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "mdi/backend.h"
#include "mdi/cli_checks.h"
#include "mdi/cuda_backend.h"
#include "mdi/error.h"
#include "mdi/file.h"
#include "mdi/tokenizer.h"
#include "mdi/weights.h"

namespace {

std::vector<int> parse_ids(const std::string& text, int V) {
  std::istringstream in(text);
  std::vector<int> ids;
  std::string word;
  while (in >> word) {
    if (word.find_first_not_of("0123456789") != std::string::npos || word.size() > 9)
      mdi::user_error("'{}' is not a token id", word);
    const int id = std::stoi(word);
    if (id >= V) mdi::user_error("token id {} is not below vocab_size {}", id, V);
    ids.push_back(id);
  }
  return ids;
}

int run(int argc, char** argv) {
  CLI::App app{"mdi-logits: logits at every position of one token sequence, as raw float32 (T, V)",
               "mdi-logits"};
  std::string model, ids_text, ids_file, text, out, device = "cpu", dtype = "fp32";
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--model", model, "Model weight file (HDF5)")->required();
  auto* o_ids = app.add_option("--ids", ids_text, "Token ids, space-separated");
  auto* o_file = app.add_option("--ids-file", ids_file, "File of space-separated token ids");
  auto* o_text = app.add_option("--text", text, "Text, encoded with the model's tokenizer");
  o_ids->excludes(o_file)->excludes(o_text);
  o_file->excludes(o_text);
  app.add_option("--out,-o", out, "Output file: T x V float32 values, row by row")->required();
  app.add_option("--device", device, "cpu or cuda:K")->capture_default_str();
  app.add_option("--dtype", dtype, "CUDA weights and KV cache: fp32, fp16, bf16")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "fp16", "bf16"}));
  app.add_option("--threads", threads, "CPU threads")->capture_default_str()->transform(mdi::cli::kPositive);
  CLI11_PARSE(app, argc, argv);

  const mdi::Config cfg = mdi::read_config(model);
  std::vector<int> ids;
  if (!text.empty()) {
    ids = mdi::load_tokenizer(model)->encode(text);
  } else if (!ids_file.empty()) {
    ids = parse_ids(mdi::read_file(ids_file, "--ids-file"), cfg.vocab_size);
  } else {
    ids = parse_ids(ids_text, cfg.vocab_size);
  }
  const int T = int(ids.size());
  if (T == 0) mdi::user_error("no tokens given (--ids, --ids-file or --text)");
  if (T > cfg.block_size) mdi::user_error("{} tokens are more than block_size {}", T, cfg.block_size);

  const mdi::Weights w = mdi::load_weights(model, cfg, 0, cfg.n_layer, true);
  const mdi::BackendSpec spec{T, 1, threads};
  std::unique_ptr<mdi::Backend> be;
  if (device == "cpu") {
    be = mdi::make_cpu_backend(cfg, w, spec);
  } else if (device.rfind("cuda", 0) == 0) {
    const mdi::DType dt = dtype == "fp16" ? mdi::DType::kF16 : dtype == "bf16" ? mdi::DType::kBF16 : mdi::DType::kF32;
    be = mdi::make_cuda_backend(cfg, w, spec, device.size() > 5 ? std::stoi(device.substr(5)) : 0, dt);
  } else {
    mdi::user_error("--device {}: expected cpu or cuda:K", device);
  }
  const size_t C = cfg.n_embd, V = cfg.vocab_size;
  std::vector<float> x(T * C), logits(T * V);
  const mdi::BatchItem all{0, 0, T};
  be->embed(x.data(), ids.data(), &all, 1);
  be->forward(x.data(), &all, 1);
  std::vector<mdi::BatchItem> rows(T);  // one item per row: logits() takes each item's last row
  for (int t = 0; t < T; ++t) rows[t] = mdi::BatchItem{0, t, 1};
  be->logits(logits.data(), x.data(), rows.data(), T);

  std::ofstream f(out, std::ios::binary);
  if (!f) mdi::user_error("cannot write {}", out);
  f.write(reinterpret_cast<const char*>(logits.data()),
          std::streamsize(logits.size() * sizeof(float)));
  mdi::close_output(f, "--out", out);
  std::printf("%d %zu %s %s\n", T, V, be->name().c_str(), out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const mdi::UserError& e) {
    std::fprintf(stderr, "mdi-logits: error: %s\n", e.what());
    return 1;
  }
}
