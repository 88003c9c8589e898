// What a run measured, per rank and per sample, and how rank 0 prints and saves it.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "mdi/config.h"

namespace mdi {

// Per-rank counters; gathered to rank 0 as raw bytes (the ranks run the same binary).
struct RankStats {
  char host[64] = {0};
  char device[32] = {0};       // "cpu", "cuda:0 fp16"
  char gpu[32] = {0};          // Backend::gpu_id(): the GPU's PCI bus id, "" on the CPU
  int mps = 0;  // 1: a CUDA MPS control daemon runs on the rank's host (mps_daemon_running)
  int layer_begin = 0, layer_end = 0, threads = 1;
  double load_s = 0;           // weight loading
  double compute_s = 0;        // backend work (and sampling on rank 0)
  double comm_s = 0;           // posting sends / receives and waiting for sends to complete
  double wait_s = 0;           // blocked waiting for the next message to arrive (idle)
  double bytes_sent = 0;       // all ring messages sent
  double messages_sent = 0;
  double decode_bytes = 0;     // bytes of DECODE messages
  double decode_rows = 0;      // sample-rows carried by DECODE messages
  double head_passes = 0;      // rank 0: times micro-batches came back and were finished together
  double head_micro_batches = 0;  // rank 0: micro-batches finished (over head_passes: the batching)
  double weights_bytes = 0, workspace_bytes = 0, peak_rss_bytes = 0;
};

struct SampleResult {
  int id = 0, prompt_index = 0;
  std::string prompt;                 // as given
  std::vector<int> prompt_tokens;     // after cropping to block_size
  std::vector<int> tokens;            // generated ids
  std::string text;                   // decoded generated ids
  std::vector<double> token_times;    // seconds since generation start, one per generated token
  std::string stop;                   // "length" | "eot" | "interrupted" (a stop signal)
};

struct RunSummary {
  std::string model_path, backend;
  Config cfg;
  std::vector<int> split;
  int head_split = 0;  // lm_head rows the last rank computes
  int ranks = 1, micro_batches = 1, tokens = 0;
  double gen_seconds = 0;
  long shm_eager_limit = -1;  // bytes; -1 unknown (shared_memory_eager_limit())
};

// Whether the CUDA MPS control daemon runs on this host, where its clients look for it: its
// socket "control" in $CUDA_MPS_PIPE_DIRECTORY, else in /tmp/nvidia-mps, takes a connection.
bool mps_daemon_running();

// One line per GPU that several ranks of a host share without MPS, naming them: such ranks take
// turns on the GPU (time slices), so they run far slower than they would under MPS.
std::vector<std::string> shared_gpu_notes(const std::vector<RankStats>& ranks);

void print_report(std::FILE* out, const RunSummary& run, const std::vector<RankStats>& ranks,
                  const std::vector<SampleResult>& samples);
// Throw UserError when the file cannot be written.
// The report as one JSON object (run, per-rank stats, per-sample timings), for benchmark tools.
void write_report_json(const std::string& path, const RunSummary& run, const std::vector<RankStats>& ranks,
                       const std::vector<SampleResult>& samples);
void write_jsonl(const std::string& path, const std::vector<SampleResult>& samples);
void write_timings_csv(const std::string& path, const std::vector<SampleResult>& samples);

}  // namespace mdi
