// Writes the mdi-llm HDF5 weight file with the HDF5 C API, in exactly the layout tools/mdi_h5.py
// writes (DESIGN.md, "The weight file"): root attributes, contiguous fp32/fp16 datasets, the
// /tokenizer group; 1.8 file format, no timestamps. Tensors stream in one at a time; the file is
// written under a temporary name and renamed on success, so a failed conversion leaves nothing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mdi/config.h"

namespace mdi::convert {

// The /tokenizer group's content. type "char": tokens are single UTF-8 characters; "gpt2-bpe" /
// "bpe": tokens are raw bytes and merges holds (left id, right id) in rank order.
struct TokenizerData {
  std::string type;
  std::vector<std::string> tokens;
  std::vector<std::pair<int32_t, int32_t>> merges;
  int64_t eot = -1;
};

enum class Dtype { F32, F16 };

// Every tensor the file must hold for cfg, name (no leading slash, "h/0/ln_1/weight") -> shape, in
// file order (head first, then the layers), as mdi_h5.tensor_shapes.
std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_shapes(const Config& cfg);

// Call first in a program that writes these files. Where closing an output fails (a full disk),
// HDF5 1.10 keeps the file half closed and crashes on it in the handler it runs at exit; the
// writers close every file themselves, so that handler is left out.
void init_writer_process();

// Checks cfg (positive sizes, n_embd % n_head, model_type) and the tokenizer against it.
void check_config(const Config& cfg);
void check_tokenizer(const TokenizerData& tok, int vocab_size);

// The tokenizer of an mdi-llm file (its /tokenizer group, read and checked by the engine's own
// loader). Throws UserError.
TokenizerData read_tokenizer(const std::string& path);
// Writes tok as the /tokenizer group of the open HDF5 file `file` (a hid_t).
void write_tokenizer_group(int64_t file, const TokenizerData& tok);
// A file that holds only a tokenizer (root attribute format = "mdi-llm-tokenizer"): what
// mdi-train-bpe writes; mdi-llm --tokenize reads it, mdi-convert --tokenizer puts it in a model.
void write_tokenizer_file(const std::string& path, const TokenizerData& tok);
// Replaces the /tokenizer group of model file `path`; the model's vocab_size must hold the tokens.
// Works on a copy beside it (path.partial, as large as the model), renamed over it at the end.
void replace_tokenizer(const std::string& path, const TokenizerData& tok);

class ModelWriter {
 public:
  ModelWriter(const std::string& path, const Config& cfg, const TokenizerData& tok, Dtype dtype);
  ~ModelWriter();  // without a successful close(): removes the partial file
  ModelWriter(const ModelWriter&) = delete;
  ModelWriter& operator=(const ModelWriter&) = delete;

  // Writes tensor `name` (fp32 values, row-major, shape as tensor_shapes says). UserError on an
  // unexpected name, a second write, a wrong size, a non-finite value or an fp16 overflow.
  void put(const std::string& name, const float* data, size_t n);
  // Checks every tensor arrived, closes and renames into place. Returns the file size in bytes.
  uint64_t close();

  int64_t params_written() const { return params_; }

 private:
  std::string path_, tmp_;
  Dtype dtype_;
  int64_t file_ = -1;  // hid_t
  std::map<std::string, std::vector<int64_t>> expected_;
  std::vector<std::string> order_;
  std::map<std::string, bool> written_;
  int64_t params_ = 0;
  std::vector<uint16_t> halves_;  // put's fp16 values, reused
};

}  // namespace mdi::convert
