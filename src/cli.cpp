// The CLI11 parser of mdi-llm and the prompt sources (--prompt, --prompts-file).
#include "mdi/cli.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include <unistd.h>

#include "mdi/cli_checks.h"
#include "mdi/error.h"
#include "mdi/file.h"
#include "mdi/ring.h"

namespace mdi {

using cli::kDecimal, cli::kNonNegative, cli::kPositive, cli::not_decimal;

ParseResult parse_cli(int argc, const char* const* argv) {
  ParseResult r;
  Options& o = r.options;
  CLI::App app{
      "mdi-llm: model-distributed inference of GPT-2 / nanoGPT over an MPI ring.\n"
      "Run with `mpirun -np N mdi-llm --model M.h5 ...`; each rank runs a contiguous range of\n"
      "layers, rank 0 also the embeddings, ln_f and lm_head. Samples go to stdout, the report\n"
      "to stderr.",
      "mdi-llm"};
  app.set_version_flag("--version", "mdi-llm " MDI_VERSION);
  auto* model = app.add_option("--model", o.model,
                               "Model weight file (HDF5, see DESIGN.md); default: the bundled model, a "
                               "character-level nanoGPT trained on Shakespeare (data/README.md)")
                    ->capture_default_str();
  auto* prompt = app.add_option("--prompt", o.prompts,
                                "Prompt text; repeat for several prompts (default: \"\\n\")");
  auto* prompts_file = app.add_option(
      "--prompts-file", o.prompts_file,
      "File of prompts (- = standard input): one per line, or JSONL lines {\"prompt\": \"...\"}");
  auto* samples =
      app.add_option(
             "--samples", o.samples,
             "Number of samples; sample i continues prompt i mod P (default: max(ranks, prompts))")
          ->transform(kPositive);
  auto* tokens = app.add_option("--tokens", o.tokens, "New tokens per sample")
                     ->capture_default_str()
                     ->transform(kPositive);
  auto* temperature =
      app.add_option("--temperature", o.sampling.temperature, "Sampling temperature; 0 = greedy")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 1e6));
  auto* top_k =
      app.add_option("--top-k", o.sampling.top_k, "Keep only the k most likely tokens; 0 = off")
          ->capture_default_str()
          ->transform(kNonNegative);
  auto* top_p =
      app.add_option("--top-p", o.sampling.top_p, "Nucleus sampling mass in (0, 1]; 1 = off")
          ->capture_default_str()
          ->check(CLI::Range(1e-9, 1.0));
  auto* seed = app.add_option("--seed", o.sampling.seed,
                              "Random seed; each sample draws from its own stream")
                   ->capture_default_str()
                   ->transform(kDecimal);
  auto* layers = app.add_option("--layers", o.layers,
                                "Layers per rank, e.g. 0,6,6 (sum = n_layer; rank 0 may own 0). "
                                "Default: cost-balanced split");
  std::string head_split = "auto";
  auto* head_split_opt =
      app.add_option("--head-split", head_split,
                     "Rows of the lm_head (the vocabulary's last ids) that the last rank computes "
                     "instead of rank 0, sending their logits back with the activations; 0 = none. "
                     "Default auto: as the cost balance needs (CPU ranks, generation only)")
          ->capture_default_str()
          ->check(CLI::Validator(
              [](std::string& v) -> std::string {
                if (v == "auto") return "";
                if (!not_decimal(v).empty() || v.size() > 9)
                  return "expected auto or a number of rows >= 0, got '" + v + "'";
                return "";
              },
              "auto|ROWS"));
  app.add_option("--threads", o.threads,
                 "CPU threads per rank (default: cores / ranks on this host)")
      ->transform(cli::decimal_range(1, 1024));
  app.add_option(
         "--device", o.device,
         "cpu, cuda (GPU = node-local rank mod GPUs), cuda:K, or one per rank: cuda,cpu,cpu")
      ->capture_default_str();
  app.add_option("--dtype", o.dtype, "Weights and KV cache on CUDA ranks: fp32, fp16 or bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}));
  auto* micro_batches =
      app.add_option("--micro-batches", o.micro_batches,
                     "Micro-batches in flight (default: number of ranks, at most samples)")
          ->transform(kPositive);
  auto* crop = app.add_flag(
      "--crop-prompts", o.crop_prompts,
      "A prompt longer than the model's block_size keeps its last block_size tokens (with a "
      "note) instead of being an error");
  auto* output =
      app.add_option("--output", o.output, "Write one JSON line per sample to FILE.jsonl");
  auto* timings = app.add_option("--timings", o.timings,
                                 "Write time vs generated tokens per sample to FILE.csv");
  auto* report_json = app.add_option("--report-json", o.report_json,
                                     "Write the end-of-run report as JSON to FILE.json");
  auto* stream = app.add_flag(
      "--stream", o.stream,
      "Write each sample's text as it is generated (sample 0 live, a later one as soon as those "
      "before it are done) instead of all at the end; the same output");
  auto* eval = app.add_option(
      "--eval", o.eval_file,
      "Instead of generating: mean cross-entropy of the model on the text in FILE (- = standard "
      "input), through the ring (windows of block_size tokens)");
  auto* tk = app.add_flag(
      "--tokenize", o.tokenize,
      "Instead of generating: read UTF-8 text on stdin, print its token ids on one line");
  auto* dtk = app.add_flag("--detokenize", o.detokenize,
                           "Instead of generating: read token ids on stdin, print their text");
  // Flags that a mode would ignore are contradictions: --eval reads no prompts, samples nothing
  // and writes no output files; --tokenize / --detokenize run no model at all.
  for (CLI::Option* gen : {prompt, prompts_file, tokens, temperature, top_k, top_p, seed, crop,
                           output, timings, report_json, stream})
    eval->excludes(gen);
  for (CLI::Option* mode : {tk, dtk})
    for (CLI::Option* run :
         {prompt, prompts_file, samples, tokens, temperature, top_k, top_p, seed, layers,
          head_split_opt, micro_batches, crop, output, timings, report_json, stream, eval})
      mode->excludes(run);
  tk->excludes(dtk);
  app.add_flag("-v,--verbose", o.verbose, "More detail in the report (repeatable)");
  app.footer(
      "Open MPI: ranks on one host send messages of up to " + std::to_string(kEagerLimit) +
      " bytes eagerly; mdi-llm sets\nbtl_vader_eager_limit (btl_sm_eager_limit in Open MPI 5) "
      "to that unless the environment or\n`mpirun --mca` sets it (the report shows the limit in "
      "force).\n\n"
      "SIGUSR1 (kill -USR1 on mpirun), SIGTERM or SIGINT while generating: rank 0 stops and\n"
      "writes every sample as far as it got (stop \"interrupted\" in --output); exit 128 + "
      "signal.");
  try {
    app.parse(argc, argv);
    o.head_split = head_split == "auto" ? -1 : std::stoi(head_split);
    if (model->count() == 0 && access(o.model.c_str(), R_OK) != 0) {
      r.exit = true;
      r.exit_code = 1;
      r.message = "mdi-llm: error: no --model given, and the bundled model " + o.model +
                  " is not there (was the source tree moved?): pass --model FILE.h5\n";
    }
  } catch (const CLI::CallForHelp& e) {
    r.exit = true;
    r.message = app.help();
    return r;
  } catch (const CLI::CallForVersion& e) {
    r.exit = true;
    r.message = e.what();
    r.message += "\n";
    return r;
  } catch (const CLI::ParseError& e) {
    r.exit = true;
    r.exit_code = 1;
    r.message = std::string("mdi-llm: error: ") + e.what() + " (see --help)\n";
  }
  return r;
}

std::vector<std::string> collect_prompts(const Options& o) {
  std::vector<std::string> prompts = o.prompts;
  if (!o.prompts_file.empty()) {
    std::istringstream in(read_input(o.prompts_file, "--prompts-file"));
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines
      if (line[line.find_first_not_of(" \t")] == '{') {
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          user_error("{}:{}: not valid JSON: {}", o.prompts_file, n, e.what());
        }
        if (!j.contains("prompt") || !j["prompt"].is_string())
          user_error("{}:{}: a JSONL line needs a string field \"prompt\"", o.prompts_file, n);
        line = j["prompt"].get<std::string>();
      }
      prompts.push_back(line);
    }
    if (prompts.size() == o.prompts.size())
      user_error("--prompts-file {} holds no prompt", o.prompts_file);
  }
  for (size_t i = 0; i < prompts.size(); ++i)
    if (prompts[i].empty()) user_error("prompt {} is empty: give at least one character", i);
  if (prompts.empty()) prompts.push_back("\n");
  return prompts;
}

}  // namespace mdi
