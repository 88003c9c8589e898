// Command-line options of mdi-llm. One CLI11 parser is the single source of the flags, their
// defaults, their checks and the --help text.
#pragma once

#include <string>
#include <vector>

#include "mdi/paths.h"
#include "mdi/sampler.h"

namespace mdi {

struct Options {
  std::string model = bundled_model();  // --model FILE.h5 (mdi/paths.h)
  std::vector<std::string> prompts;  // --prompt (repeatable)
  std::string prompts_file;          // --prompts-file: one prompt per line, or JSONL
  int samples = 0;                   // --samples; 0 = max(ranks, prompts)
  int tokens = 200;                  // --tokens: new tokens per sample
  SamplingParams sampling;           // --temperature --top-k --top-p --seed
  std::string layers;                // --layers a,b,c; empty = cost-balanced split
  int head_split = -1;               // --head-split ROWS: lm_head rows on the last rank; -1 = auto
  int threads = 0;                   // --threads; 0 = cores / ranks on this host
  std::string device = "cpu";        // --device cpu|cuda|cuda:K, or one per rank: cuda,cpu,cpu
  std::string dtype = "fp32";        // --dtype fp32|fp16|bf16 (CUDA ranks)
  int micro_batches = 0;             // --micro-batches; 0 = number of ranks (at most samples)
  std::string output;                // --output FILE.jsonl
  std::string timings;               // --timings FILE.csv
  std::string report_json;           // --report-json FILE.json: the report, machine-readable
  bool stream = false;               // --stream: each sample's text as it is generated
  bool tokenize = false;             // --tokenize: stdin text -> token ids on stdout
  bool detokenize = false;           // --detokenize: stdin token ids -> text on stdout
  std::string eval_file;             // --eval FILE: mean cross-entropy on a text, no generation
  bool crop_prompts = false;         // --crop-prompts: keep a long prompt's last block_size tokens
  int verbose = 0;                   // -v (repeatable)
};

struct ParseResult {
  Options options;
  bool exit = false;    // --help / --version, or an error: stop with exit_code
  int exit_code = 0;
  std::string message;  // what rank 0 prints (help text to stdout, errors to stderr)
};

// Parses argv; never prints and never throws (every rank parses, rank 0 reports).
ParseResult parse_cli(int argc, const char* const* argv);

// The prompts of --prompt and --prompts-file, in that order ("\n" when none is given).
// Throws UserError for an unreadable file, a bad JSONL line or an empty prompt.
std::vector<std::string> collect_prompts(const Options& o);

}  // namespace mdi
