// Tokenizers: text <-> token ids. The vocabulary lives in the weight file's /tokenizer group
// (DESIGN.md), so one file is the whole model. This file has the interface and the character
// tokenizer of nanoGPT char models; the GPT-2 byte-level BPE implements the same interface.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mdi {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string type() const = 0;  // "char", "gpt2-bpe", "bpe"
  virtual int vocab_size() const = 0;
  // Throws UserError naming the first character (and its byte offset) it cannot represent.
  virtual std::vector<int> encode(std::string_view text) const = 0;
  // Appends the bytes of one token to out (decode is the concatenation, so it streams).
  virtual void decode_token(int id, std::string& out) const = 0;
  // The end-of-text token, if the model has one (generation stops at it).
  virtual std::optional<int> eot() const { return std::nullopt; }

  std::string decode(const std::vector<int>& ids) const {
    std::string s;
    for (int id : ids) decode_token(id, s);
    return s;
  }
};

// One token per Unicode code point (UTF-8 encoded), as nanoGPT's shakespeare_char.
class CharTokenizer final : public Tokenizer {
 public:
  // vocab[i] is the UTF-8 encoding of token i's character; all distinct. eot: the token that
  // ends a sample, if any.
  explicit CharTokenizer(std::vector<std::string> vocab, std::optional<int> eot = std::nullopt);
  std::string type() const override { return "char"; }
  int vocab_size() const override { return static_cast<int>(vocab_.size()); }
  std::vector<int> encode(std::string_view text) const override;
  void decode_token(int id, std::string& out) const override;
  std::optional<int> eot() const override { return eot_; }

 private:
  std::vector<std::string> vocab_;
  std::optional<int> eot_;
  std::vector<int> ascii_;             // byte -> id for single-byte characters, -1 if absent
  std::vector<std::pair<std::string, int>> multibyte_;  // sorted, for the others
};

// Builds the tokenizer stored in the model file's /tokenizer group. Throws UserError.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path);

}  // namespace mdi
