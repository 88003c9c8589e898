// The end-of-run report (stderr), the per-sample JSONL and the time-vs-tokens CSV.
#include "mdi/report.h"

#include <fmt/ranges.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "mdi/error.h"
#include "mdi/file.h"
#include "mdi/partition.h"

namespace mdi {

namespace {
double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

std::ofstream open_out(const std::string& path, const char* flag) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) user_error("{} {}: cannot open for writing", flag, path);
  return f;
}
}  // namespace

bool mps_daemon_running() {
  const char* dir = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  const std::string path = std::string(dir && *dir ? dir : "/tmp/nvidia-mps") + "/control";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // The socket file stays behind when the daemon quits: only a connection tells it is there.
  for (const int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    const int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    const bool up = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    if (up) return true;
  }
  return false;
}

std::vector<std::string> shared_gpu_notes(const std::vector<RankStats>& ranks) {
  std::vector<std::string> notes;
  std::vector<bool> seen(ranks.size(), false);
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (seen[i] || ranks[i].gpu[0] == '\0') continue;
    std::vector<size_t> group;  // ranks on i's host with i's GPU
    bool mps = false;
    for (size_t j = i; j < ranks.size(); ++j)
      if (std::string(ranks[j].host) == ranks[i].host &&
          std::string(ranks[j].gpu) == ranks[i].gpu) {
        seen[j] = true;
        group.push_back(j);
        mps = mps || ranks[j].mps;
      }
    if (group.size() < 2 || mps) continue;
    notes.push_back(
        fmt::format("ranks {} share the GPU {} on {} without MPS, so they take turns on it: "
                    "start nvidia-cuda-mps-control -d first to run them side by side "
                    "(README, \"GPUs\")",
                    fmt::join(group, ", "), ranks[i].gpu, ranks[i].host));
  }
  return notes;
}

void print_report(std::FILE* out, const RunSummary& run, const std::vector<RankStats>& ranks,
                  const std::vector<SampleResult>& samples) {
  size_t generated = 0;
  double ttft_sum = 0, ttft_max = 0, per_sample_sum = 0;
  for (const SampleResult& s : samples) {
    generated += s.tokens.size();
    if (s.token_times.empty()) continue;
    ttft_sum += s.token_times.front();
    ttft_max = std::max(ttft_max, s.token_times.front());
    per_sample_sum += s.tokens.size() / std::max(1e-12, s.token_times.back());
  }
  const double n = double(std::max<size_t>(1, samples.size()));
  const Config& c = run.cfg;
  fmt::print(out, "\n--- mdi-llm report ---\n");
  fmt::print(out, "model       {} ({}, {}, n_embd {}, n_head {}, vocab {}, block {})\n",
             run.model_path, c.model_type, count_of(c.n_layer, "layer"), c.n_embd, c.n_head,
             c.vocab_size, c.block_size);
  fmt::print(out, "ranks       {} ({} backend), {}\n", run.ranks, run.backend,
             count_of(run.micro_batches, "micro-batch", "micro-batches"));
  if (run.ranks > 1 && run.shm_eager_limit >= 0)
    fmt::print(out, "eager limit {} bytes between ranks on one host (larger messages go by rendezvous)\n",
               run.shm_eager_limit);
  fmt::print(out, "split       {}\n", describe_split(run.split, run.head_split, run.cfg.vocab_size));
  fmt::print(out, "generated   {}, {} in {:.3f} s\n", count_of(samples.size(), "sample"),
             count_of(generated, "token"), run.gen_seconds);
  fmt::print(out, "throughput  {:.2f} tokens/s aggregate, {:.2f} tokens/s per sample (mean)\n",
             generated / std::max(1e-12, run.gen_seconds), per_sample_sum / n);
  fmt::print(out, "first token {:.4f} s mean, {:.4f} s max\n", ttft_sum / n, ttft_max);
  double dec_bytes = 0, dec_rows = 0;
  for (const RankStats& r : ranks) dec_bytes += r.decode_bytes, dec_rows += r.decode_rows;
  if (dec_rows > 0)
    fmt::print(out, "decode msg  {:.1f} bytes per sample per hop ({} activations + header{})\n",
               dec_bytes / dec_rows, c.n_embd * 4,
               run.head_split > 0 ? fmt::format("; the last hop also {} bytes of logits", run.head_split * 4) : "");
  fmt::print(out, "{:>4} {:<16} {:>9} {:>4} {:>7} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8} {:>11}\n", "rank",
             "host", "layers", "thr", "load_s", "weights_MB", "work_MB", "peak_MB", "compute_s",
             "comm_s", "wait_s", "B/token/hop");
  for (size_t i = 0; i < ranks.size(); ++i) {
    const RankStats& r = ranks[i];
    std::string layers = r.layer_end > r.layer_begin
                             ? fmt::format("{}-{}", r.layer_begin, r.layer_end - 1)
                             : std::string("-");
    if (i == 0) layers = "H " + layers;
    if (std::string(r.device) != "cpu") layers += " " + std::string(r.device);
    fmt::print(out, "{:>4} {:<16} {:>9} {:>4} {:>7.3f} {:>10.1f} {:>8.1f} {:>8.1f} {:>9.3f} {:>8.3f} {:>8.3f} {:>11.1f}\n",
               i, std::string(r.host).substr(0, 16), layers, r.threads, r.load_s,
               mib(r.weights_bytes), mib(r.workspace_bytes), mib(r.peak_rss_bytes), r.compute_s,
               r.comm_s, r.wait_s,
               generated ? r.bytes_sent / double(generated) : 0.0);
  }
  for (const std::string& note : shared_gpu_notes(ranks)) fmt::print(out, "note        {}\n", note);
  std::fflush(out);
}

void write_report_json(const std::string& path, const RunSummary& run, const std::vector<RankStats>& ranks,
                       const std::vector<SampleResult>& samples) {
  std::ofstream f = open_out(path, "--report-json");
  size_t generated = 0;
  nlohmann::json js = nlohmann::json::array(), jr = nlohmann::json::array();
  for (const SampleResult& s : samples) {
    generated += s.tokens.size();
    js.push_back({{"id", s.id},
                  {"tokens", s.tokens.size()},
                  {"ttft_s", s.token_times.empty() ? 0.0 : s.token_times.front()},
                  {"total_s", s.token_times.empty() ? 0.0 : s.token_times.back()}});
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    const RankStats& r = ranks[i];
    jr.push_back({{"rank", i},
                  {"host", std::string(r.host)},
                  {"device", std::string(r.device)},
                  {"gpu", std::string(r.gpu)},
                  {"mps", r.mps != 0},
                  {"layer_begin", r.layer_begin},
                  {"layer_end", r.layer_end},
                  {"threads", r.threads},
                  {"load_s", r.load_s},
                  {"compute_s", r.compute_s},
                  {"comm_s", r.comm_s},
                  {"wait_s", r.wait_s},
                  {"bytes_sent", r.bytes_sent},
                  {"messages_sent", r.messages_sent},
                  {"decode_bytes", r.decode_bytes},
                  {"decode_rows", r.decode_rows},
                  {"head_passes", r.head_passes},
                  {"head_micro_batches", r.head_micro_batches},
                  {"weights_bytes", r.weights_bytes},
                  {"workspace_bytes", r.workspace_bytes},
                  {"peak_rss_bytes", r.peak_rss_bytes}});
  }
  const Config& c = run.cfg;
  nlohmann::json j = {
      {"model", run.model_path}, {"backend", run.backend}, {"ranks", run.ranks},
      {"micro_batches", run.micro_batches}, {"tokens_per_sample", run.tokens}, {"split", run.split}, {"head_split", run.head_split},
      {"shm_eager_limit", run.shm_eager_limit},
      {"config", {{"model_type", c.model_type}, {"n_layer", c.n_layer}, {"n_head", c.n_head},
                  {"n_embd", c.n_embd}, {"block_size", c.block_size}, {"vocab_size", c.vocab_size}}},
      {"seconds", run.gen_seconds}, {"generated", generated},
      {"tokens_per_s", generated / std::max(1e-12, run.gen_seconds)},
      {"rank_stats", jr}, {"samples", js}};
  f << j.dump(1) << '\n';
  close_output(f, "--report-json", path);
}

void write_jsonl(const std::string& path, const std::vector<SampleResult>& samples) {
  std::ofstream f = open_out(path, "--output");
  for (const SampleResult& s : samples) {
    const double total = s.token_times.empty() ? 0.0 : s.token_times.back();
    nlohmann::json j = {
        {"id", s.id},
        {"prompt_index", s.prompt_index},
        {"prompt", s.prompt},
        {"prompt_tokens", s.prompt_tokens},
        {"text", s.text},
        {"tokens", s.tokens},
        {"stop", s.stop},
        {"timings",
         {{"ttft_s", s.token_times.empty() ? 0.0 : s.token_times.front()},
          {"total_s", total},
          {"tokens_per_s", total > 0 ? s.tokens.size() / total : 0.0}}},
    };
    // Generated text may end inside a multi-byte character: keep the bytes, replace in JSON.
    f << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  }
  close_output(f, "--output", path);
}

void write_timings_csv(const std::string& path, const std::vector<SampleResult>& samples) {
  std::ofstream f = open_out(path, "--timings");
  f << "sample,tokens,time_s\n";
  for (const SampleResult& s : samples)
    for (size_t i = 0; i < s.token_times.size(); ++i)
      f << s.id << ',' << (i + 1) << ',' << fmt::format("{:.6f}", s.token_times[i]) << '\n';
  close_output(f, "--timings", path);
}

}  // namespace mdi
