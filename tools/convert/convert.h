// mdi-convert's conversions: Hugging Face GPT-2 directories (safetensors read in C++), nanoGPT
// state dicts (as the safetensors + JSON that tools/convert_pickle.py makes of a ckpt.pt), random
// models of any GPT-2 shape, and the tokenizers they carry. All of them end in one ModelWriter.
// Leaves out: reading pickles in C++ (the Python helper does that), sharded checkpoints.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "h5_writer.h"
#include "mdi/config.h"

namespace mdi::convert {

struct Summary {
  Config cfg;
  std::string tokenizer;  // "gpt2-bpe, 50257 tokens, 50000 merges, eot 50256"
  int64_t params = 0;
  uint64_t bytes = 0;     // size of the written file
  int ignored = 0;        // buffers skipped (attn.bias, attn.masked_bias)
};

// Progress and report lines go through this (stdout by default; tests silence it).
using Log = std::function<void(const std::string&)>;

// ---- tokenizers
// GPT-2 byte-level BPE from encoder.json + vocab.bpe or vocab.json + merges.txt.
TokenizerData gpt2_bpe_from_files(const std::string& vocab_json, const std::string& merges_txt);
// From a Hugging Face tokenizer.json ("model": {"type": "BPE", "vocab": {...}, "merges": [...]}).
TokenizerData gpt2_bpe_from_tokenizer_json(const std::string& path);
// Whichever a directory holds: encoder.json + vocab.bpe, vocab.json + merges.txt, tokenizer.json.
TokenizerData gpt2_bpe_from_dir(const std::string& dir);
// V distinct characters (printable ASCII first), as mdi_h5.char_tokens: for random models.
TokenizerData synthetic_char_tokenizer(int V);

// ---- conversions (each writes `out` and returns what it wrote; UserError on anything it does
// not understand, and then no output file is left behind)
// dir: config.json + model.safetensors (or `safetensors`, e.g. the helper's rendering of
// pytorch_model.bin); tokenizer from tok_dir (default: dir).
Summary convert_hf(const std::string& dir, const std::string& out, Dtype dtype, const Log& log,
                   const std::string& safetensors = "", const std::string& tok_dir = "");
// A nanoGPT state dict as safetensors plus the helper's info JSON ({"model_args": {...},
// "tokenizer": {"type": "char", "vocab": [...]}} or no tokenizer: then gpt2_vocab_dir is used).
// tokenizer_h5: take the tokenizer of this mdi-llm file instead (e.g. from mdi-train-bpe).
Summary convert_nanogpt(const std::string& safetensors, const std::string& info_json,
                        const std::string& out, Dtype dtype, const Log& log,
                        const std::string& gpt2_vocab_dir = "", const std::string& tokenizer_h5 = "");
// spec: gpt2 | gpt2-medium | gpt2-large | gpt2-xl | L,NH,C,T,V. With gpt2_vocab_dir the GPT-2 BPE
// (V >= 50257), otherwise a char vocabulary (named flavours require the directory).
// tokenizer_h5 as for convert_nanogpt (V must hold its tokens).
Summary write_random(const std::string& spec, const std::string& out, Dtype dtype, uint64_t seed,
                     const Log& log, const std::string& gpt2_vocab_dir = "",
                     const std::string& tokenizer_h5 = "");

// Runs `python helper args...` (no shell); UserError with a clear message when it cannot start
// or fails. Returns normally on exit status 0.
void run_helper(const std::string& python, const std::string& helper,
                const std::vector<std::string>& args);

}  // namespace mdi::convert
