// Splitting the layers over the ranks (DESIGN.md, "The partition rule"). The default balances the
// estimated per-token cost; rank 0's cost includes the embedding lookup, ln_f and the lm_head, of
// which the last rank may take over the last rows of the vocabulary (the head split).
#pragma once

#include <string>
#include <vector>

#include "mdi/config.h"

namespace mdi {

// Estimated per-token cost (multiply-adds) of one block, and of rank 0's extra work.
double block_cost(const Config& cfg);
double head_cost(const Config& cfg);

// The least gain a head split must bring (a fraction of the largest per-rank cost). Measured gains
// below ~5% were within the run-to-run spread, and the split costs a larger message on the last hop.
constexpr double kHeadSplitGain = 0.05;

// The head split of a layer split: how many of the lm_head's last vocabulary rows the last rank
// computes (with its own ln_f) instead of rank 0, which then sends them back with the activations.
// The fewest rows that bring the largest per-rank cost to its minimum; 0 where moving rows would
// lower it by less than kHeadSplitGain (or there is one rank).
int head_split_rows(const Config& cfg, const std::vector<int>& split);

// The largest estimated per-rank cost of a split whose last rank computes tail_rows of the lm_head.
double split_cost(const Config& cfg, const std::vector<int>& split, int tail_rows);

// Layers per rank; sums to n_layer, ranks >= 1 own >= 1 layer, rank 0 may own 0 (not when
// n_ranks == 1). Minimises the largest per-rank cost without a head split, or with each split's
// head split (head_split_rows) where that is kHeadSplitGain cheaper; among equal costs, the one
// with the fewest rows moved, then the one that gives rank 0 the most layers. Throws UserError
// when n_ranks > n_layer + 1.
std::vector<int> balanced_split(const Config& cfg, int n_ranks);

// Parses and checks "--layers a,b,c" against the model and the number of ranks.
// Throws UserError naming what is wrong.
std::vector<int> parse_split(const std::string& text, const Config& cfg, int n_ranks);

// Checks --head-split ROWS against the model and the ranks (0 <= ROWS <= vocab_size; 0 on one rank).
void check_head_split(int rows, const Config& cfg, int n_ranks);

// "rank 0: head + layers 0-3 (4), rank 1: layers 4-11 (8)" style one-line description; with a head
// split, "rank 0: head (lm_head rows 0-43585) ..., rank 1: ... + lm_head rows 43586-50256".
std::string describe_split(const std::vector<int>& split, int tail_rows = 0, int vocab_size = 0);

}  // namespace mdi
