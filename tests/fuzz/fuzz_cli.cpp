// libFuzzer harness of mdi-llm's command line: mdi::parse_cli on an argv made by splitting the
// input at NUL bytes (it must never throw, and what it accepts must satisfy the flags' checks), and
// mdi::collect_prompts on a prompts file holding the input (a UserError, or non-empty prompts).
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "mdi/cli.h"
#include "mdi/error.h"
#include "mdi/sampler.h"

namespace {

void check_options(const mdi::Options& o) {
  FUZZ_CHECK(o.samples >= 0 && o.tokens > 0 && o.micro_batches >= 0, "counts out of range");
  FUZZ_CHECK(o.threads == 0 || (o.threads >= 1 && o.threads <= 1024), "threads %d", o.threads);
  try {  // the sampling flags are checked where mdi-llm checks them, by the sampler
    const mdi::Sampler sampler(o.sampling, 8);
    (void)sampler;
    FUZZ_CHECK(o.sampling.temperature >= 0 && std::isfinite(o.sampling.temperature), "temperature");
    FUZZ_CHECK(o.sampling.top_k >= 0, "top_k %d", o.sampling.top_k);
    FUZZ_CHECK(o.sampling.top_p > 0 && o.sampling.top_p <= 1, "top_p");
  } catch (const mdi::UserError&) {
  }
  FUZZ_CHECK(o.dtype == "fp32" || o.dtype == "fp16" || o.dtype == "bf16", "dtype %s",
             o.dtype.c_str());
  FUZZ_CHECK(!(o.tokenize && o.detokenize), "--tokenize and --detokenize together");
  if (o.tokenize || o.detokenize)  // modes refuse the flags they would ignore
    FUZZ_CHECK(o.prompts.empty() && o.prompts_file.empty() && o.eval_file.empty() && o.layers.empty() &&
                   o.output.empty() && o.samples == 0, "--tokenize/--detokenize with generation flags");
  if (!o.eval_file.empty())
    FUZZ_CHECK(o.prompts.empty() && o.prompts_file.empty() && o.output.empty() && o.timings.empty() &&
                   o.report_json.empty() && !o.crop_prompts, "--eval with generation flags");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args = {"mdi-llm"};
  for (size_t i = 0; i < size && args.size() < 64;) {
    size_t j = text.find('\0', i);
    if (j == text.npos) j = size;
    args.emplace_back(text.substr(i, j - i));
    i = j + 1;
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);

  const mdi::ParseResult r = mdi::parse_cli(int(args.size()), argv.data());  // never throws
  if (r.exit) {
    FUZZ_CHECK(!r.message.empty(), "stops (status %d) without a message", r.exit_code);
  } else {
    FUZZ_CHECK(r.exit_code == 0, "accepted with status %d", r.exit_code);
    check_options(r.options);
  }

  // The input as --prompts-file, after the --prompt values the parse found (a prompts file named in
  // the input is never opened: it could be any file, /dev/zero included).
  const mdi_fuzz::TempFile file(data, size);
  mdi::Options o;
  if (!r.exit) o.prompts = r.options.prompts;
  o.prompts_file = file.path();
  try {
    const std::vector<std::string> prompts = mdi::collect_prompts(o);
    FUZZ_CHECK(prompts.size() > o.prompts.size(),
               "a prompts file that gave no prompt was accepted");
    for (size_t i = 0; i < prompts.size(); ++i) {
      FUZZ_CHECK(!prompts[i].empty(), "prompt %zu is empty", i);
      if (i < o.prompts.size()) FUZZ_CHECK(prompts[i] == o.prompts[i], "prompt %zu changed", i);
    }
  } catch (const mdi::UserError&) {
  }
  return 0;
}
