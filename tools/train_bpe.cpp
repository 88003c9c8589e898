// mdi-train-bpe: learns a byte-level BPE from a text (mdi::train_bpe, the seed's nanoGPT BPE
// variant) and writes it as an mdi-llm tokenizer: a tokenizer-only file (--out), or in place of
// a model file's tokenizer (--into). Leaves out: special tokens.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "h5_writer.h"
#include "mdi/bpe.h"
#include "mdi/cli_checks.h"
#include "mdi/error.h"
#include "mdi/file.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"mdi-train-bpe: learns a byte-level BPE (GPT-2 pre-tokenisation, 256 byte tokens + "
               "merges) from text files and writes it as an mdi-llm tokenizer",
               "mdi-train-bpe"};
  std::vector<std::string> texts;
  std::string out, into;
  int merges = 0;
  bool quiet = false;
  app.add_option("--text", texts, "Training text file(s), UTF-8 or any bytes")->required()->check(CLI::ExistingFile);
  app.add_option("--merges", merges, "Merges to learn (the seed used 500 to 10000); vocabulary = 256 + merges")
      ->required()->transform(mdi::cli::decimal_range(1, 1000000));
  auto* o_out = app.add_option("--out,-o", out, "Write a tokenizer-only file (for mdi-convert --tokenizer, "
                                                "mdi-llm --tokenize)");
  auto* o_into = app.add_option("--into", into,
                                "Replace the tokenizer of this model file (its vocab_size must "
                                "be at least 256 + merges), through a copy beside it");
  o_out->excludes(o_into);
  app.add_flag("--quiet,-q", quiet, "Print nothing on success");
  CLI11_PARSE(app, argc, argv);
  if (out.empty() && into.empty()) mdi::user_error("give --out FILE or --into MODEL.h5");

  std::string text;
  for (const std::string& t : texts) {
    text += mdi::read_file(t);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const mdi::TrainedBpe bpe = mdi::train_bpe(text, merges);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  mdi::convert::TokenizerData tok;
  tok.type = "bpe";
  tok.tokens = bpe.tokens;
  for (auto [a, b] : bpe.merges) tok.merges.emplace_back(a, b);
  if (!out.empty()) mdi::convert::write_tokenizer_file(out, tok);
  else mdi::convert::replace_tokenizer(into, tok);
  if (!quiet) {
    std::printf("trained on %lld bytes (%lld pieces, %lld distinct) in %.2f s: %zu merges%s, %zu tokens\n",
                (long long)bpe.text_bytes, (long long)bpe.pieces, (long long)bpe.unique_pieces, secs,
                bpe.merges.size(), int(bpe.merges.size()) < merges ? " (no pair occurs twice any more)" : "",
                bpe.tokens.size());
    std::printf("the text is %lld tokens (%.2f bytes per token)\nwrote the tokenizer %s %s\n",
                (long long)bpe.tokens_after, double(bpe.text_bytes) / double(std::max<int64_t>(1, bpe.tokens_after)),
                out.empty() ? "into" : "to", out.empty() ? into.c_str() : out.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mdi::convert::init_writer_process();
  try {
    return run(argc, argv);
  } catch (const mdi::UserError& e) {
    std::fprintf(stderr, "mdi-train-bpe: error: %s\n", e.what());
    return 1;
  }
}
