// Splitting the layers over the ranks (DESIGN.md, "The partition rule"). The default balances the
// estimated per-token cost; rank 0's cost includes the embedding lookup, ln_f and the lm_head.
#pragma once

#include <string>
#include <vector>

#include "mdi/config.h"

namespace mdi {

// Estimated per-token cost (multiply-adds) of one block, and of rank 0's extra work.
double block_cost(const Config& cfg);
double head_cost(const Config& cfg);

// Layers per rank; sums to n_layer, ranks >= 1 own >= 1 layer, rank 0 may own 0 (not when
// n_ranks == 1). Minimises the largest per-rank cost; among equal splits, the one that gives
// rank 0 the most layers. Throws UserError when n_ranks > n_layer + 1.
std::vector<int> balanced_split(const Config& cfg, int n_ranks);

// Parses and checks "--layers a,b,c" against the model and the number of ranks.
// Throws UserError naming what is wrong.
std::vector<int> parse_split(const std::string& text, const Config& cfg, int n_ranks);

// "rank 0: layers 0-3 (4) + head, rank 1: layers 4-11 (8)" style one-line description.
std::string describe_split(const std::vector<int>& split);

}  // namespace mdi
