// mdi-convert: turns a Hugging Face GPT-2 directory, a nanoGPT ckpt.pt or a random initialisation
// into one mdi-llm HDF5 weight file (DESIGN.md). Safetensors are read in C++; pickles (.pt, .bin)
// go through tools/convert_pickle.py (Python + torch) into safetensors first. Errors: one line, exit 1.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "convert.h"
#include "mdi/cli_checks.h"
#include "mdi/error.h"
#include "mdi/paths.h"

#ifndef MDI_CONVERT_HELPER
#define MDI_CONVERT_HELPER "tools/convert_pickle.py"
#endif

namespace {

using namespace mdi::convert;

bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string& p) {
  const size_t s = p.rfind('/');
  return s == std::string::npos ? "." : s == 0 ? "/" : p.substr(0, s);
}

// A scratch directory next to the output (big checkpoints may not fit in /tmp), removed on exit.
struct ScratchDir {
  std::string path;
  explicit ScratchDir(const std::string& out) {
    std::string tmpl = out + ".convert.XXXXXX";
    if (!mkdtemp(tmpl.data())) mdi::user_error("cannot create a scratch directory next to {}", out);
    path = tmpl;
  }
  ~ScratchDir() {
    for (const char* f : {"/model.safetensors", "/info.json"}) std::remove((path + f).c_str());
    ::rmdir(path.c_str());
  }
};

}  // namespace

int main(int argc, char** argv) {
  init_writer_process();
  CLI::App app{"mdi-convert: writes an mdi-llm HDF5 weight file from a Hugging Face GPT-2 directory, "
               "a nanoGPT checkpoint or random weights",
               "mdi-convert"};
  std::string hf, nanogpt, random, out, dtype_s = "fp32", gpt2_vocab, meta, st_in, info_in, tokenizer;
  std::string python = std::getenv("MDI_PYTHON") ? std::getenv("MDI_PYTHON") : "python3";
  std::string helper = std::getenv("MDI_CONVERT_HELPER")
                           ? std::getenv("MDI_CONVERT_HELPER")
                           : mdi::shipped_file("convert_pickle.py", MDI_CONVERT_HELPER);
  uint64_t seed = 1337;
  bool quiet = false, use_bin = false;
  auto* o_hf = app.add_option("--hf", hf, "Hugging Face GPT-2 directory: config.json, model.safetensors "
                              "(or pytorch_model.bin, via Python), vocab.json + merges.txt or tokenizer.json");
  auto* o_nano = app.add_option("--nanogpt", nanogpt, "nanoGPT ckpt.pt (via Python + torch)");
  auto* o_rand = app.add_option("--random", random, "random weights: gpt2 | gpt2-medium | gpt2-large | "
                                "gpt2-xl | L,NH,C,T,V");
  auto* o_st = app.add_option("--nanogpt-safetensors", st_in, "a nanoGPT state dict already in "
                              "safetensors form (with --nanogpt-info; what the helper writes)");
  app.add_option("--nanogpt-info", info_in, "the helper's JSON: model_args and tokenizer");
  o_hf->excludes(o_nano)->excludes(o_rand)->excludes(o_st);
  o_nano->excludes(o_rand)->excludes(o_st);
  o_rand->excludes(o_st);
  app.add_option("--out,-o", out, "output HDF5 file")->required();
  app.add_option("--dtype", dtype_s, "storage dtype of the weights")
      ->check(CLI::IsMember({"fp32", "fp16"}))
      ->capture_default_str();
  app.add_option("--gpt2-vocab", gpt2_vocab, "directory with encoder.json + vocab.bpe (or vocab.json + "
                 "merges.txt): the GPT-2 tokenizer for --random and nanoGPT models without meta.pkl");
  app.add_option("--meta", meta, "nanoGPT meta.pkl (char models); default: meta.pkl next to ckpt.pt");
  app.add_option("--tokenizer", tokenizer, "take the tokenizer of this mdi-llm file (e.g. a text-trained BPE "
                 "from mdi-train-bpe) for --random and nanoGPT checkpoints");
  app.add_option("--seed", seed, "seed of --random")->transform(mdi::cli::kDecimal)->capture_default_str();
  app.add_option("--python", python, "Python 3 with torch, for .pt/.bin (env MDI_PYTHON)");
  app.add_option("--helper", helper, "path of tools/convert_pickle.py (env MDI_CONVERT_HELPER)")
      ->capture_default_str();
  app.add_flag("--bin", use_bin, "with --hf: read pytorch_model.bin even where model.safetensors exists");
  app.add_flag("--quiet,-q", quiet, "print nothing on success");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "mdi-convert: error: %s (see --help)\n", e.what());
    return 1;
  }
  const Log log = [&](const std::string& s) {
    if (!quiet) std::printf("%s\n", s.c_str());
  };
  const Dtype dtype = dtype_s == "fp16" ? Dtype::F16 : Dtype::F32;
  try {
    if (!hf.empty()) {
      if (use_bin || (!is_file(hf + "/model.safetensors") && is_file(hf + "/pytorch_model.bin"))) {
        if (!is_file(hf + "/pytorch_model.bin")) mdi::user_error("{}: no pytorch_model.bin", hf);
        ScratchDir tmp(out);
        log("reading " + hf + "/pytorch_model.bin through " + helper);
        run_helper(python, helper, {"hf-bin", hf + "/pytorch_model.bin", "--out", tmp.path});
        convert_hf(hf, out, dtype, log, tmp.path + "/model.safetensors", gpt2_vocab);
      } else {
        convert_hf(hf, out, dtype, log, "", gpt2_vocab);
      }
    } else if (!nanogpt.empty()) {
      if (!is_file(nanogpt)) mdi::user_error("cannot open {}: no such file", nanogpt);
      if (meta.empty() && gpt2_vocab.empty() && tokenizer.empty() && is_file(dir_of(nanogpt) + "/meta.pkl")) {
        meta = dir_of(nanogpt) + "/meta.pkl";
        log("using the char vocabulary of " + meta);
      }
      if (!meta.empty() && !is_file(meta)) mdi::user_error("cannot open {}: no such file", meta);
      ScratchDir tmp(out);
      std::vector<std::string> args = {"nanogpt", nanogpt, "--out", tmp.path};
      if (!meta.empty()) args.insert(args.end(), {"--meta", meta});
      log("reading " + nanogpt + " through " + helper);
      run_helper(python, helper, args);
      convert_nanogpt(tmp.path + "/model.safetensors", tmp.path + "/info.json", out, dtype, log, gpt2_vocab,
                      tokenizer);
    } else if (!st_in.empty()) {
      if (info_in.empty()) mdi::user_error("--nanogpt-safetensors needs --nanogpt-info");
      convert_nanogpt(st_in, info_in, out, dtype, log, gpt2_vocab, tokenizer);
    } else if (!random.empty()) {
      write_random(random, out, dtype, seed, log, gpt2_vocab, tokenizer);
    } else {
      mdi::user_error("nothing to convert: give --hf DIR, --nanogpt ckpt.pt or --random FLAVOR (see --help)");
    }
  } catch (const mdi::UserError& e) {
    std::fprintf(stderr, "mdi-convert: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mdi-convert: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
