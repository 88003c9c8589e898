// Recurrent pipelining over the ring (DESIGN.md). Set-up runs in phases that end with a collective
// error check, so a user error on any rank is reported once by rank 0 and every rank exits. Then
// rank 0 keeps up to M micro-batches in flight: it receives one back from the last rank, samples
// the next token of each of its samples, embeds them, runs its own layers and sends the batch on,
// while the other micro-batches are being worked on by the other ranks.
#include "mdi/pipeline.h"

#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "mdi/backend.h"
#include "mdi/cuda_backend.h"
#include "mdi/error.h"
#include "mdi/file.h"
#include "mdi/partition.h"
#include "mdi/report.h"
#include "mdi/ring.h"
#include "mdi/sampler.h"
#include "mdi/tokenizer.h"
#include "mdi/weights.h"

namespace mdi {

namespace {

constexpr int kTag = 7;

double now() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Adds the seconds spent in its scope to a counter.
struct Timer {
  explicit Timer(double& acc) : acc_(acc), t0_(now()) {}
  ~Timer() { acc_ += now() - t0_; }
  double& acc_;
  double t0_;
};

// Runs f and returns the message of a user error (or of any other failure), empty when fine.
template <typename F>
std::string attempt(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  } catch (const std::bad_alloc&) {
    return "out of memory (the model share, KV cache, buffers or --samples x --tokens results do not fit on "
           "this host)";
  } catch (const std::exception& e) {
    return std::string("internal error: ") + e.what();
  }
  return {};
}

// The head of an error line: rank 0's, or rank `rank`'s, naming its "host:rank" `at`.
std::string error_head(int rank, const std::string& at) {
  return rank == 0 ? "mdi-llm: error" : fmt::format("mdi-llm: error on rank {} ({})", rank, at);
}

// Collective: true when no rank failed. Otherwise rank 0 prints the first failing rank's message
// once (naming the rank when it is not rank 0) and every rank returns false.
bool agree(MPI_Comm comm, const std::string& err) {
  int rank = 0, n = 1, mine = err.empty() ? 0 : 1, any = 0;
  MDI_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MDI_MPI_CHECK(MPI_Comm_size(comm, &n));
  MDI_MPI_CHECK(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm));
  if (!any) return true;
  std::string text = err.empty() ? std::string() : where() + "\n" + err;
  int len = int(text.size());
  std::vector<int> lens(n), displs(n);
  MDI_MPI_CHECK(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, comm));
  std::string all;
  if (rank == 0) {
    for (int r = 1; r < n; ++r) displs[r] = displs[r - 1] + lens[r - 1];
    all.resize(displs[n - 1] + lens[n - 1]);
  }
  MDI_MPI_CHECK(MPI_Gatherv(text.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(),
                            MPI_CHAR, 0, comm));
  if (rank == 0) {
    for (int r = 0; r < n; ++r) {
      if (lens[r] == 0) continue;
      std::string t = all.substr(displs[r], lens[r]);
      size_t nl = t.find('\n');
      std::fprintf(stderr, "%s: %s\n", error_head(r, t.substr(0, nl)).c_str(), t.substr(nl + 1).c_str());
      break;
    }
    std::fflush(stderr);
  }
  return false;
}

// `handler` for the signals `sigs` while in scope; their handlers before come back after.
class ScopedSignals {
 public:
  ScopedSignals(std::initializer_list<int> sigs, void (*handler)(int), int flags = 0)
      : sigs_(sigs), old_(sigs_.size()) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = flags;
    for (size_t i = 0; i < sigs_.size(); ++i) sigaction(sigs_[i], &sa, &old_[i]);
  }
  ~ScopedSignals() {
    for (size_t i = 0; i < sigs_.size(); ++i) sigaction(sigs_[i], &old_[i], nullptr);
  }
  ScopedSignals(const ScopedSignals&) = delete;
  ScopedSignals& operator=(const ScopedSignals&) = delete;

 private:
  std::vector<int> sigs_;
  std::vector<struct sigaction> old_;
};

// While the model file is read, HDF5 itself can loop forever or crash on a corrupt file (HDF5
// 1.10.8 on a damaged global heap: tests/fuzz/README.md), which no error check of ours can catch.
// A ReadGuard ends this process with one error line if the read takes longer than `seconds` (0: no
// time limit) or dies of a fatal signal; mpirun then ends the job. Every rank reads the same
// metadata, so a bad file usually stops them all at once: rank 0 reports at once, the others wait
// kDeferSeconds first, so that mpirun, ending the job for rank 0, ends them before they write (one
// line), and a rank whose own copy of the file is bad still says so. Metadata (attributes, the
// tokenizer) reads in milliseconds, so its limit is a few seconds.
class ReadGuard {
 public:
  ReadGuard(const std::string& file, int rank, double seconds) {
    const std::string head = error_head(rank, where());
    defer_ = rank == 0 ? 0 : kDeferSeconds;
    crash_ = fmt::format("{}: reading {}: HDF5 crashed on it (a corrupt file?)\n", head, file);
    hang_ = fmt::format("{}: reading {} took more than {:g} s: HDF5 did not return (a corrupt file?)\n",
                        head, file, seconds);
#ifndef __SANITIZE_ADDRESS__  // under ASan its own report of the fault is worth more
    active_ = this;
    handlers_.emplace(std::initializer_list<int>{SIGSEGV, SIGBUS, SIGFPE, SIGILL}, on_signal);
#endif
    if (seconds > 0) watchdog_ = std::thread([this, seconds] {
      std::unique_lock<std::mutex> lk(m_);
      if (!cv_.wait_for(lk, std::chrono::duration<double>(seconds + defer_), [this] { return done_; })) {
        (void)!write(STDERR_FILENO, hang_.data(), hang_.size());
        _exit(1);
      }
    });
  }
  ~ReadGuard() {
    if (watchdog_.joinable()) {
      {
        std::lock_guard<std::mutex> lk(m_);
        done_ = true;
      }
      cv_.notify_all();
      watchdog_.join();
    }
#ifndef __SANITIZE_ADDRESS__
    handlers_.reset();
    active_ = nullptr;
#endif
  }
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;

 private:
  static constexpr unsigned kDeferSeconds = 2;
  static void on_signal(int) {  // async-signal-safe: sleep, write and _exit only
    if (const ReadGuard* g = active_) {
      if (g->defer_) sleep(g->defer_);
      (void)!write(STDERR_FILENO, g->crash_.data(), g->crash_.size());
    }
    _exit(1);
  }
  static inline ReadGuard* active_ = nullptr;
  std::string crash_, hang_;
  unsigned defer_ = 0;  // seconds this rank waits before it reports
  std::optional<ScopedSignals> handlers_;
  std::thread watchdog_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
};

constexpr double kMetadataSeconds = 5;  // a few milliseconds when the file is sound

// This rank's place among the ranks of its host (MPI_COMM_TYPE_SHARED): GPUs and cores are
// shared out by it.
struct LocalRank {
  int rank = 0, size = 1;
};

LocalRank local_rank(MPI_Comm world) {
  MPI_Comm local;
  MDI_MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  LocalRank l;
  MDI_MPI_CHECK(MPI_Comm_rank(local, &l.rank));
  MDI_MPI_CHECK(MPI_Comm_size(local, &l.size));
  MDI_MPI_CHECK(MPI_Comm_free(&local));
  return l;
}

// Default threads per rank: the cores this rank may run on, shared with the other ranks of the
// host (Open MPI binds ranks to cores or sockets; unbound ranks share all cores).
int default_threads(const LocalRank& local) {
  int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  int t = hw / local.size;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < hw)
    t = std::min(t, int(CPU_COUNT(&set)));
  return std::max(1, t);
}

// The --device entries: one for every rank, or one per rank.
std::vector<std::string> device_list(const Options& o, int N) {
  std::vector<std::string> list;
  for (size_t start = 0;;) {
    const size_t comma = o.device.find(',', start);
    list.push_back(o.device.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (list.size() != 1 && int(list.size()) != N)
    user_error("--device {} lists {} for {} (give one for all, or one per rank)", o.device,
               count_of(list.size(), "device"), count_of(N, "rank"));
  return list;
}

std::string rank_device(const Options& o, int rank, int N) {
  const std::vector<std::string> list = device_list(o, N);
  return list.size() == 1 ? list[0] : list[rank];
}

// The head split (rows of the lm_head the last rank computes): --head-split, or by the partition
// rule (head_split_rows). Only for generation with rank 0 and the last rank on the CPU: --eval
// needs every row's logits on rank 0, and the CUDA backend computes the whole lm_head.
int choose_head_split(const Options& o, const Config& cfg, const std::vector<int>& split, int N) {
  const bool cpu_ends = rank_device(o, 0, N) == "cpu" && rank_device(o, N - 1, N) == "cpu";
  if (o.head_split < 0) return !o.eval_file.empty() || !cpu_ends ? 0 : head_split_rows(cfg, split);
  check_head_split(o.head_split, cfg, N);
  if (o.head_split > 0 && !o.eval_file.empty())
    user_error("--head-split {}: --eval computes every row's logits on rank 0 (use --head-split 0)", o.head_split);
  if (o.head_split > 0 && !cpu_ends)
    user_error("--head-split {} needs rank 0 and the last rank on the CPU (the CUDA backend computes the "
               "whole lm_head)", o.head_split);
  return o.head_split;
}

// This rank's device from --device ("cpu", "cuda", "cuda:K", or one entry per rank) and --dtype.
struct RankDevice {
  bool cuda = false;
  int gpu = -1;  // cuda:K; -1 for "cuda": node-local rank mod the host's GPUs (gpu_of)
  DType dt = DType::kF32;
};

RankDevice rank_device_of(const Options& o, int rank, int N) {
  const std::vector<std::string> list = device_list(o, N);
  const std::string dev = list.size() == 1 ? list[0] : list[rank];
  RankDevice d;
  if (o.dtype == "fp16")
    d.dt = DType::kF16;
  else if (o.dtype == "bf16")
    d.dt = DType::kBF16;
  else if (o.dtype != "fp32") user_error("--dtype {}: expected fp32, fp16 or bf16", o.dtype);
  if (dev == "cpu") {
    if (d.dt != DType::kF32 && list.size() == 1)
      user_error("--dtype {} needs --device cuda: the CPU backend computes in fp32", o.dtype);
    return d;
  }
  if (dev == "cuda" || dev.rfind("cuda:", 0) == 0) {
    d.cuda = true;
    if (dev != "cuda") {
      const std::string k = dev.substr(5);
      if (k.empty() || k.find_first_not_of("0123456789") != std::string::npos || k.size() > 4)
        user_error("--device {}: expected cuda:K with a GPU number K", dev);
      d.gpu = std::stoi(k);
    }
    return d;
  }
  user_error("--device {}: expected cpu, cuda or cuda:K (or a comma-separated list, one per rank)", dev);
}

// "cuda" picks GPU node-local rank mod GPUs of the host, so ranks of a host spread over its GPUs.
int gpu_of(const RankDevice& d, const LocalRank& local) {
  if (d.gpu >= 0) return d.gpu;
  const int n = cuda_device_count();
  return n > 0 ? local.rank % n : 0;
}

std::unique_ptr<Backend> make_backend(const RankDevice& d, const Config& cfg, const Weights& w,
                                      const BackendSpec& spec, const LocalRank& local,
                                      CudaStart* start, std::string& device_used) {
  if (!d.cuda) {
    device_used = "cpu";
    return make_cpu_backend(cfg, w, spec);
  }
  const int gpu = gpu_of(d, local);
  device_used = fmt::format("cuda:{} {}", gpu, dtype_name(d.dt));
  return make_cuda_backend(cfg, w, spec, gpu, d.dt, start);
}

double peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) * 1024.0;
}

// What every rank must know about the run: broadcast by rank 0 after it has read the prompts.
struct Plan {
  int32_t samples = 0;        // S
  int32_t micro_batches = 0;  // M
  int32_t max_items = 0;      // samples in the largest micro-batch
  int32_t max_rows = 0;       // rows in the largest message
  int32_t positions = 0;      // the longest context of a sample: KV cache rows per sample
};

// Rows one lm_head pass on rank 0 may take: the micro-batches that came back together share it
// (Head::finish), up to 16 samples or one micro-batch if that is larger.
int head_rows(const Plan& plan) { return std::min<int>(plan.samples, std::max<int>(plan.max_items, 16)); }

struct SampleState {
  int mb = 0;
  std::vector<int> tokens;  // prompt (cropped) then generated ids
  int prompt_len = 0;
  int generated = 0;
  bool done = false;
};

// SIGUSR1, SIGTERM or SIGINT during generation (`kill -USR1` on mpirun, which forwards it to the
// ranks; scancel or a Slurm time limit; Ctrl-C): rank 0 starts no new trip around the ring, lets
// the trips on their way come back, stops the ring as at the end, and writes every sample as far
// as it got (stop "interrupted"). The other ranks only note the signal: they serve until STOP.
// mpirun gives its ranks about a second after a SIGTERM before it kills them; SIGUSR1 it forwards
// at once, and waits.
class StopSignals {
 public:
  StopSignals() = default;
  ~StopSignals() { g_signal = 0; }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal that asked to stop, or 0.
  static int received() { return g_signal; }
  static const char* name(int sig) {
    return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : "SIGINT";
  }

 private:
  static inline volatile std::sig_atomic_t g_signal = 0;
  ScopedSignals handlers_{{SIGUSR1, SIGTERM, SIGINT}, [](int sig) { g_signal = sig; }, SA_RESTART};
};

// Rank 0's part of a run: what goes into each micro-batch's next trip around the ring, and what
// to do with it when it comes back. Generation and evaluation are the two drivers.
class Driver {
 public:
  virtual ~Driver() = default;
  // Builds micro-batch mb's next message in m (embeddings, then rank 0's layers); false when the
  // micro-batch has nothing left to do.
  virtual bool prepare(Message& m, int mb, RankStats& st) = 0;
  // Takes k micro-batches that went around the ring (in the order they came back).
  virtual void finish(Message* const* ms, int k, RankStats& st) = 0;
  void finish(Message& m, RankStats& st) {
    Message* one = &m;
    finish(&one, 1, st);
  }
};

// Writes the samples to stdout in order, each as "--- sample i (prompt p) ---" (where there are
// several), its prompt and its text, ending in a newline. With --stream a sample goes out as its
// tokens come: sample 0 live, each later one once those before it are done (at once up to where
// it is, then live). Without, everything goes out at the end. The bytes are the same.
class SamplePrinter {
 public:
  SamplePrinter(std::vector<SampleResult>& results, const Tokenizer& tok, bool stream)
      : results_(results), tok_(tok), stream_(stream) {}

  // After tokens were taken: with --stream, writes what can go out.
  void update() {
    if (stream_) write();
  }

  // At the end (every sample done): writes the rest, and sets each sample's text. Throws
  // UserError where standard output could not take them (the texts are set first, so that
  // --output still has them).
  void finish() {
    for (SampleResult& r : results_) r.text = tok_.decode(r.tokens);
    write();
    if (!error_.empty()) throw UserError(error_);
  }

 private:
  void write() {
    buf_.clear();
    for (; next_ < results_.size(); ++next_, opened_ = false, written_ = 0) {
      const SampleResult& r = results_[next_];
      if (!opened_) {
        if (results_.size() > 1)
          buf_ += fmt::format("--- sample {} (prompt {}) ---\n", r.id, r.prompt_index);
        buf_ += r.prompt;
        last_ = r.prompt.empty() ? 0 : r.prompt.back();
        opened_ = true;
      }
      for (; written_ < r.tokens.size(); ++written_) {
        const size_t before = buf_.size();
        tok_.decode_token(r.tokens[written_], buf_);
        if (buf_.size() > before) last_ = buf_.back();
      }
      if (r.stop.empty()) break;  // still generating
      if (last_ != '\n') buf_ += '\n';
    }
    if (buf_.empty() || !error_.empty()) return;
    // A failed write ends the writing, not the run: the samples still go to --output.
    error_ = attempt([&] { write_stdout(buf_, "the samples"); });
  }

  std::vector<SampleResult>& results_;
  const Tokenizer& tok_;
  bool stream_;
  size_t next_ = 0;      // the sample being written
  bool opened_ = false;  // its header and prompt are out
  size_t written_ = 0;   // its tokens that are out
  char last_ = 0;        // the last byte of its prompt and text
  std::string buf_;
  std::string error_;  // the first failed write to standard output
};

// Generation: sample states, the sampler and the head of the model.
class Head final : public Driver {
 public:
  // tail: the lm_head rows the last rank computes (head split), whose logits come with the rows.
  Head(const Options& o, const Config& cfg, const Tokenizer& tok, Backend& be, const Plan& plan, int tail,
       std::vector<SampleResult>& results)
      : o_(o), cfg_(cfg), tok_(tok), be_(be), plan_(plan), results_(results),
        sampler_(o.sampling, tok.vocab_size()), states_(plan.samples),  // the tokenizer's ids only: vocab_size may be padded (nanoGPT 50304)
        tok_ids_(plan.max_rows), head_rows_(head_rows(plan)),
        last_(size_t(plan.samples) * cfg.n_embd), last_items_(plan.samples),
        logits_(size_t(head_rows_) * cfg.vocab_size), tail_(tail),
        last_tail_(size_t(plan.samples) * tail), own_(tail > 0 ? size_t(head_rows_) * (cfg.vocab_size - tail) : 0),
        top_k_(tail > 0 ? 0 : sampler_.candidates()),
        top_ids_(size_t(head_rows_) * top_k_), top_vals_(size_t(head_rows_) * top_k_) {
    for (int s = 0; s < plan.samples; ++s) {
      SampleState& st = states_[s];
      st.mb = s % plan.micro_batches;
      st.tokens = results[s].prompt_tokens;
      st.tokens.reserve(st.tokens.size() + o.tokens);
      st.prompt_len = int(st.tokens.size());
      rngs_.emplace_back(o.sampling.seed, uint64_t(s));
      results[s].tokens.reserve(o.tokens);
      results[s].token_times.reserve(o.tokens);
    }
  }

  void start_clock() { t0_ = now(); }

  bool prepare(Message& m, int mb, RankStats& st) override {
    Timer t(st.compute_s);
    const int T = cfg_.block_size;
    MsgHeader& h = m.header();
    h = MsgHeader{int32_t(MsgKind::kDecode), mb, 0, 0, 0};
    BatchItem* items = m.items();
    for (int s = mb; s < plan_.samples; s += plan_.micro_batches) {
      SampleState& ss = states_[s];
      if (ss.done) continue;
      if (StopSignals::received()) {
        ss.done = true;
        results_[s].stop = "interrupted";
        continue;
      }
      const int L = int(ss.tokens.size());
      int start, pos, rows;
      if (ss.generated == 0) {  // prefill with the prompt
        start = 0, pos = 0, rows = L;
      } else if (L <= T) {  // decode: the newest token, its keys and values join the cache
        start = L - 1, pos = L - 1, rows = 1;
      } else {  // past the context: condition on the last T tokens, rebuild the cache
        start = L - T, pos = 0, rows = T;
      }
      if (rows > 1 || pos == 0) h.kind = int32_t(MsgKind::kPrefill);
      std::copy(ss.tokens.begin() + start, ss.tokens.begin() + start + rows, tok_ids_.begin() + h.rows);
      items[h.n_items++] = BatchItem{s, pos, rows};
      h.rows += rows;
    }
    if (h.n_items == 0) return false;
    be_.embed(m.payload(), tok_ids_.data(), items, h.n_items);
    be_.forward(m.payload(), items, h.n_items);
    return true;
  }

  // Logits of each sample's last row, its next token. The micro-batches that came back together
  // share one lm_head pass (up to head_rows_ rows: the head's weights are read once per pass, and
  // a row's logits are the same in any batch), so a head that is the ring's slowest stage
  // catches up with the others instead of holding them back. With a head split the last rank's
  // logits (the vocabulary's last tail_ ids) came with the rows.
  void finish(Message* const* ms, int k, RankStats& st) override {
    Timer t(st.compute_s);
    const size_t C = cfg_.n_embd, V = cfg_.vocab_size, tail = tail_;
    int n = 0;
    for (int j = 0; j < k; ++j) {
      const BatchItem* items = ms[j]->items();
      const float* x = ms[j]->payload();
      if (ms[j]->header().logit_cols != tail_)
        abort_job(fmt::format("internal error: a message came back with {} logits per item, expected {}",
                              ms[j]->header().logit_cols, tail_));
      const float* tl = ms[j]->logits();
      for (int i = 0; i < ms[j]->header().n_items; ++i) {
        x += items[i].rows * C;
        std::copy(x - C, x, last_.data() + n * C);
        std::copy(tl + i * tail, tl + (i + 1) * tail, last_tail_.data() + n * tail);
        last_items_[n++] = BatchItem{items[i].sample, items[i].pos + items[i].rows - 1, 1};
      }
    }
    for (int i0 = 0; i0 < n; i0 += head_rows_) {
      const int rows = std::min(head_rows_, n - i0);
      const float* x = last_.data() + i0 * C;
      const BatchItem* items = last_items_.data() + i0;
      // Where the backend selects (CUDA), only the candidates the sampler needs come back.
      if (top_k_ > 0 && be_.top(top_k_, tok_.vocab_size(), top_ids_.data(), top_vals_.data(), x, items, rows)) {
        const double when = now() - t0_;
        for (int i = 0; i < rows; ++i) {
          const size_t o = size_t(i) * top_k_;
          take(items[i].sample, sampler_.sample_top(top_ids_.data() + o, top_vals_.data() + o, rngs_[items[i].sample]), when);
        }
      } else {
        if (tail == 0) {
          be_.logits(logits_.data(), x, items, rows);
        } else {  // rank 0's ids, then the last rank's
          const size_t own = V - tail;
          be_.logits(own_.data(), x, items, rows);
          for (int i = 0; i < rows; ++i) {
            std::copy_n(own_.data() + i * own, own, logits_.data() + i * V);
            std::copy_n(last_tail_.data() + (i0 + i) * tail, tail, logits_.data() + i * V + own);
          }
        }
        const double when = now() - t0_;
        for (int i = 0; i < rows; ++i)
          take(items[i].sample, sampler_.sample(logits_.data() + i * V, rngs_[items[i].sample]), when);
      }
    }
    generated_ += n;
    printer_.update();
    const double when = now() - t0_;
    if (progress_ && when - last_progress_ > 0.25) show_progress(when, false);
  }

  // Sample s's next token is id.
  void take(int s, int id, double when) {
    SampleState& ss = states_[s];
    SampleResult& r = results_[s];
    ss.tokens.push_back(id);
    ss.generated++;
    r.tokens.push_back(id);
    r.token_times.push_back(when);
    if (tok_.eot() && id == *tok_.eot()) {
      ss.done = true;
      r.stop = "eot";
    } else if (ss.generated >= o_.tokens) {
      ss.done = true;
      r.stop = "length";
    }
  }

  // A one-line progress meter on stderr, only when stderr is a terminal (quiet in pipes and jobs)
  // and the text is not streamed to a terminal too.
  void show_progress(double when, bool last) {
    last_progress_ = when;
    const long total = long(plan_.samples) * o_.tokens;
    std::fprintf(stderr, "\r%ld/%ld tokens, %.1f tokens/s%s", generated_, total,
                 generated_ / std::max(when, 1e-9), last ? "\n" : "   ");
    std::fflush(stderr);
  }
  void end_progress() {
    if (progress_ && generated_ > 0) show_progress(now() - t0_, true);
  }

  // The samples on stdout (what --stream has not written yet), and each sample's text.
  void print_samples() { printer_.finish(); }

 private:
  const Options& o_;
  const Config& cfg_;
  const Tokenizer& tok_;
  Backend& be_;
  Plan plan_;
  std::vector<SampleResult>& results_;
  Sampler sampler_;
  std::vector<SampleState> states_;
  std::vector<Rng> rngs_;
  std::vector<int> tok_ids_;
  int head_rows_;                       // rows per lm_head pass (head_rows)
  std::vector<float> last_;             // (samples, C): the last row of each item to finish
  std::vector<BatchItem> last_items_;
  std::vector<float> logits_;           // (head_rows_, V)
  int tail_;                            // logits per row that the last rank computes (head split)
  std::vector<float> last_tail_;        // (samples, tail_): those of the rows in last_
  std::vector<float> own_;              // (head_rows_, V - tail_): rank 0's part of a pass's logits
  int top_k_;                           // candidates the sampler needs of a row (0: all)
  std::vector<int> top_ids_;            // (head_rows_, top_k_): what Backend::top returns
  std::vector<float> top_vals_;
  SamplePrinter printer_{results_, tok_, o_.stream};
  double t0_ = 0;
  long generated_ = 0;
  const bool progress_ = isatty(STDERR_FILENO) != 0 && !(o_.stream && isatty(STDOUT_FILENO) != 0);
  double last_progress_ = 0;
};

// Evaluation (--eval FILE): mean cross-entropy of the model on a text. The text's tokens are cut
// into windows of block_size inputs (stride block_size, the last one partial); every position
// predicts the next token. Each slot of a micro-batch takes every S-th window.
class Evaluator final : public Driver {
 public:
  Evaluator(const Config& cfg, Backend& be, const Plan& plan, std::vector<int> tokens)
      : cfg_(cfg), be_(be), plan_(plan), tokens_(std::move(tokens)),
        windows_(n_windows(int(tokens_.size()), cfg.block_size)), window_loss_(windows_, 0.0),
        next_(plan.samples), current_(plan.samples), row_items_(kLogitRows),
        logits_(size_t(kLogitRows) * cfg.vocab_size) {
    for (int s = 0; s < plan.samples; ++s) next_[s] = s;
    ids_.reserve(plan.max_rows);
  }

  static int n_windows(int n_tokens, int T) { return (n_tokens - 1 + T - 1) / T; }

  bool prepare(Message& m, int mb, RankStats& st) override {
    Timer t(st.compute_s);
    MsgHeader& h = m.header();
    h = MsgHeader{int32_t(MsgKind::kPrefill), mb, 0, 0, 0};
    BatchItem* items = m.items();
    std::vector<int>& ids = ids_;
    ids.clear();
    for (int s = mb; s < plan_.samples; s += plan_.micro_batches) {
      const int w = next_[s];
      if (w >= windows_) continue;
      next_[s] += plan_.samples;
      current_[s] = w;
      const int start = w * cfg_.block_size;
      const int rows = std::min(cfg_.block_size, int(tokens_.size()) - 1 - start);
      ids.insert(ids.end(), tokens_.begin() + start, tokens_.begin() + start + rows);
      items[h.n_items++] = BatchItem{s, 0, rows};
      h.rows += rows;
    }
    if (h.n_items == 0) return false;
    be_.embed(m.payload(), ids.data(), items, h.n_items);
    be_.forward(m.payload(), items, h.n_items);
    return true;
  }

  void finish(Message* const* ms, int k, RankStats& st) override {
    for (int j = 0; j < k; ++j) finish_one(*ms[j], st);
  }

  void finish_one(Message& m, RankStats& st) {
    Timer t(st.compute_s);
    const int V = cfg_.vocab_size, C = cfg_.n_embd;
    const BatchItem* items = m.items();
    const float* x = m.payload();
    for (int i = 0; i < m.header().n_items; ++i) {
      const int w = current_[items[i].sample];
      const int start = w * cfg_.block_size;
      double sum = 0;
      for (int r0 = 0; r0 < items[i].rows; r0 += kLogitRows) {  // logits of every row, in chunks
        const int n = std::min(kLogitRows, items[i].rows - r0);
        for (int r = 0; r < n; ++r) row_items_[r] = BatchItem{items[i].sample, r0 + r, 1};
        be_.logits(logits_.data(), x + size_t(r0) * C, row_items_.data(), n);
        for (int r = 0; r < n; ++r) {
          const float* l = logits_.data() + size_t(r) * V;
          const double mx = *std::max_element(l, l + V);
          double z = 0;
          for (int v = 0; v < V; ++v) z += std::exp(double(l[v]) - mx);
          sum += std::log(z) + mx - l[tokens_[start + r0 + r + 1]];
        }
      }
      window_loss_[w] = sum;
      x += size_t(items[i].rows) * C;
    }
  }

  // Mean loss over all predictions, summed in window order (independent of the split).
  double loss() const {
    double total = 0;
    for (double l : window_loss_) total += l;
    return total / double(tokens_.size() - 1);
  }
  size_t predictions() const { return tokens_.size() - 1; }
  int windows() const { return windows_; }

 private:
  static constexpr int kLogitRows = 64;
  const Config& cfg_;
  Backend& be_;
  Plan plan_;
  std::vector<int> tokens_;
  int windows_;
  std::vector<double> window_loss_;
  std::vector<int> next_, current_, ids_;
  std::vector<BatchItem> row_items_;
  std::vector<float> logits_;
};

void count_send(const Message& m, RankStats& st) {
  const double b = double(m.bytes());
  st.bytes_sent += b;
  st.messages_sent += 1;
  if (m.header().kind == int32_t(MsgKind::kDecode)) {
    st.decode_bytes += b;
    st.decode_rows += m.header().rows;
  }
}

void post_recv(const Ring& ring, Message& m, MPI_Request& req, RankStats& st) {
  Timer t(st.comm_s);
  MDI_MPI_CHECK(MPI_Irecv(m.raw(), int(m.capacity()), MPI_BYTE, ring.prev(), kTag, ring.comm(), &req));
}

// Checks a message that arrived into m against what its status says was received.
void validate_received(Message& m, const MPI_Status& status) {
  int count = 0;
  MDI_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &count));
  m.validate(count);
}

void wait_recv(Message& m, MPI_Request& req, RankStats& st) {
  MPI_Status status;
  {
    Timer t(st.wait_s);
    MDI_MPI_CHECK(MPI_Wait(&req, &status));
  }
  validate_received(m, status);
}

// Whether the receive posted into m has completed (then m is checked like wait_recv's).
bool test_recv(Message& m, MPI_Request& req, RankStats& st) {
  MPI_Status status;
  int done = 0;
  {
    Timer t(st.comm_s);
    MDI_MPI_CHECK(MPI_Test(&req, &done, &status));
  }
  if (!done) return false;
  validate_received(m, status);
  return true;
}

void send(const Ring& ring, Message& m, MPI_Request& req, RankStats& st) {
  Timer t(st.comm_s);
  MDI_MPI_CHECK(MPI_Isend(m.raw(), int(m.bytes()), MPI_BYTE, ring.next(), kTag, ring.comm(), &req));
  count_send(m, st);
}

void wait_send(MPI_Request& req, RankStats& st) {
  Timer t(st.comm_s);
  MDI_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
}

// While it lives, the backend moves the sends in `reqs` on while it computes (between matrix
// products, slices of the lm_head, polls of the GPU: Backend::set_progress): a rank that computes
// for a whole pass right after a send would otherwise hold a rendezvous message back from the next
// rank for that long.
class SendProgress {
 public:
  SendProgress(Backend& be, MPI_Request* reqs, int n) : be_(be) {
    be_.set_progress([reqs, n] {
      int done = 0;
      MDI_MPI_CHECK(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE));
    });
  }
  ~SendProgress() { be_.set_progress(nullptr); }
  SendProgress(const SendProgress&) = delete;
  SendProgress& operator=(const SendProgress&) = delete;

 private:
  Backend& be_;
};

// A buffer for the largest message of the plan, in memory from the rank's backend, with room for
// logit_cols logits per item (the messages from the last rank of a head split to rank 0).
Message plan_message(const Plan& plan, int C, const Backend& be, int logit_cols = 0) {
  return Message(plan.max_items, plan.max_rows, C, plan.samples, &be, logit_cols);
}

// Rank 0 alone: no ring, micro-batches one after the other.
void run_single(Driver& head, const Backend& be, const Plan& plan, int C, RankStats& st) {
  Message m = plan_message(plan, C, be);
  for (bool active = true; active;) {
    active = false;
    for (int mb = 0; mb < plan.micro_batches; ++mb) {
      if (!head.prepare(m, mb, st)) continue;
      head.finish(m, st);
      active = true;
    }
  }
}

// Rank 0 of a ring. One send buffer per micro-batch, so rank 0 never blocks on a send while
// messages wait to be received (the ring cannot deadlock); B + 1 receive buffers, the next receive
// always posted before compute. Up to B micro-batches that came back while rank 0 was busy are
// finished together (Driver::finish), without waiting for any that are still on their way.
void run_starter(const Ring& ring, Driver& head, Backend& be, const Plan& plan, int C, int tail, RankStats& st) {
  constexpr int kMaxBack = 4;
  const int M = plan.micro_batches, B = std::min(M, kMaxBack), R = B + 1;
  std::vector<Message> sbuf, rbuf;
  sbuf.reserve(M);
  rbuf.reserve(R);
  for (int i = 0; i < M; ++i) sbuf.push_back(plan_message(plan, C, be));
  for (int i = 0; i < R; ++i) rbuf.push_back(plan_message(plan, C, be, tail));
  std::vector<MPI_Request> sreq(M, MPI_REQUEST_NULL);
  const SendProgress progress(be, sreq.data(), M);
  MPI_Request rreq = MPI_REQUEST_NULL;
  int rnext = 0, in_flight = 0;  // rbuf[rnext]: the buffer of the next receive
  std::vector<Message*> back;  // micro-batches come back, to finish together
  back.reserve(B);
  // Tests: wait for up to B micro-batches instead of taking only those already back, so that
  // batched finishing happens every time.
  const bool gather = std::getenv("MDI_TEST_GATHER_HEAD") != nullptr;

  auto launch = [&](int mb) {
    wait_send(sreq[mb], st);
    if (!head.prepare(sbuf[mb], mb, st)) return false;
    send(ring, sbuf[mb], sreq[mb], st);
    return true;
  };
  auto take = [&]() {  // the message just received into rbuf[rnext]
    back.push_back(&rbuf[rnext]);
    --in_flight;
    rnext = (rnext + 1) % R;
  };
  post_recv(ring, rbuf[rnext], rreq, st);
  for (int mb = 0; mb < M; ++mb) in_flight += launch(mb);
  while (in_flight > 0) {
    back.clear();
    wait_recv(rbuf[rnext], rreq, st);
    take();
    // The next receive is posted before compute; what has arrived already joins this batch. With
    // at most B in `back`, the buffer posted (the R-th) is never one of them.
    while (in_flight > 0) {
      post_recv(ring, rbuf[rnext], rreq, st);
      if (int(back.size()) == B) break;
      if (gather) wait_recv(rbuf[rnext], rreq, st);
      else if (!test_recv(rbuf[rnext], rreq, st)) break;
      take();
    }
    head.finish(back.data(), int(back.size()), st);
    st.head_passes += 1;
    st.head_micro_batches += double(back.size());
    for (Message* m : back) in_flight += launch(m->header().micro_batch);
    if (rreq == MPI_REQUEST_NULL && in_flight > 0) post_recv(ring, rbuf[rnext], rreq, st);
  }
  for (MPI_Request& r : sreq) wait_send(r, st);
  // STOP goes once around the ring; every rank forwards it and returns.
  Message stop(0, 0, C, 0);
  stop.header() = MsgHeader{int32_t(MsgKind::kStop), -1, 0, 0, 0};
  MPI_Request req;
  send(ring, stop, req, st);
  post_recv(ring, rbuf[0], rreq, st);
  wait_recv(rbuf[0], rreq, st);
  wait_send(req, st);
  if (rbuf[0].header().kind != int32_t(MsgKind::kStop))
    abort_job("internal error: expected STOP to come back around the ring");
}

// Ranks 1..N-1: receive, run my layers in place, send on. Three buffers rotate: one being
// computed, one receiving the next message, one still being sent. The last rank of a head split
// (tail > 0) adds its rows of each item's logits to the message.
void run_worker(const Ring& ring, Backend& be, const Plan& plan, int C, int tail, RankStats& st) {
  Message buf[3] = {plan_message(plan, C, be, tail), plan_message(plan, C, be, tail), plan_message(plan, C, be, tail)};
  MPI_Request sreq[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  const SendProgress progress(be, sreq, 3);
  MPI_Request rreq = MPI_REQUEST_NULL;
  int cur = 0;
  post_recv(ring, buf[cur], rreq, st);
  for (;;) {
    Message& m = buf[cur];
    wait_recv(m, rreq, st);
    if (m.header().kind == int32_t(MsgKind::kStop)) {
      for (MPI_Request& r : sreq) wait_send(r, st);
      send(ring, m, sreq[0], st);
      wait_send(sreq[0], st);
      return;
    }
    const int nxt = (cur + 1) % 3;
    wait_send(sreq[nxt], st);
    post_recv(ring, buf[nxt], rreq, st);
    {
      Timer t(st.compute_s);
      be.forward(m.payload(), m.items(), m.header().n_items);
      if (tail > 0) {
        m.header().logit_cols = tail;
        be.logits(m.logits(), m.payload(), m.items(), m.header().n_items);
      }
    }
    send(ring, m, sreq[cur], st);
    cur = nxt;
  }
}

// Micro-batches in flight: --micro-batches, or one per rank; never more than the samples.
int choose_micro_batches(const Options& o, int N, int samples, std::vector<std::string>& notes) {
  int M = o.micro_batches > 0 ? o.micro_batches : N;
  if (M > samples) {
    if (o.micro_batches > 0)
      notes.push_back(fmt::format("--micro-batches {} is more than the {}: using {}", M,
                                  count_of(samples, "sample"), samples));
    M = samples;
  }
  if (samples < N)
    notes.push_back(fmt::format(
        "{} on {}: some ranks will idle; use --samples {} or more to keep every rank busy",
        count_of(samples, "sample"), count_of(N, "rank"), N));
  return M;
}

// Sizes of the largest micro-batch when slot s (of plan.samples) needs rows_of(s) rows at most.
template <typename F>
void size_messages(Plan& plan, F rows_of) {
  std::vector<int> rows(plan.micro_batches, 0), items(plan.micro_batches, 0);
  for (int s = 0; s < plan.samples; ++s) {
    rows[s % plan.micro_batches] += rows_of(s);
    items[s % plan.micro_batches] += 1;
  }
  plan.max_rows = *std::max_element(rows.begin(), rows.end());
  plan.max_items = *std::max_element(items.begin(), items.end());
}

// Generation set-up on rank 0: prompts to token ids (longer than block_size: an error, or with
// --crop-prompts their last block_size tokens), one result per sample.
Plan plan_generation(const Options& o, const Config& cfg, const Tokenizer& tok, int N,
                     std::vector<SampleResult>& results, std::vector<std::string>& notes) {
  Sampler check(o.sampling, tok.vocab_size());  // validates the sampling flags
  if (!o.output.empty()) write_jsonl(o.output, {});  // unwritable outputs fail now, not after
  if (!o.timings.empty()) write_timings_csv(o.timings, {});
  if (!o.report_json.empty()) write_report_json(o.report_json, RunSummary{}, {}, {});
  std::vector<std::string> prompts = collect_prompts(o);
  std::vector<std::vector<int>> ids;
  for (size_t p = 0; p < prompts.size(); ++p) {
    std::vector<int> t;
    try {
      t = tok.encode(prompts[p]);
    } catch (const UserError& e) {
      user_error("prompt {}: {}", p, e.what());
    }
    if (t.empty()) user_error("prompt {} encodes to no tokens", p);
    if (int(t.size()) > cfg.block_size) {
      if (!o.crop_prompts)
        user_error("prompt {} has {} tokens, more than the model's block_size {} (--crop-prompts keeps its "
                   "last {})", p, t.size(), cfg.block_size, cfg.block_size);
      notes.push_back(fmt::format("prompt {} has {} tokens, more than block_size {}: keeping its last {}", p,
                                  t.size(), cfg.block_size, cfg.block_size));
      t.erase(t.begin(), t.end() - cfg.block_size);
    }
    ids.push_back(std::move(t));
  }
  Plan plan;
  plan.samples = o.samples > 0 ? o.samples : std::max<int>(N, int(prompts.size()));
  plan.micro_batches = choose_micro_batches(o, N, plan.samples, notes);
  for (int s = 0; s < plan.samples; ++s) {
    SampleResult r;
    r.id = s;
    r.prompt_index = s % int(prompts.size());
    r.prompt = prompts[r.prompt_index];
    r.prompt_tokens = ids[r.prompt_index];
    results.push_back(std::move(r));
  }
  // A sample's largest message: its prompt, or a whole window once it outgrows block_size. Its
  // context grows to the prompt and all new tokens but the last (which is never fed back).
  size_messages(plan, [&](int s) {
    const int P = int(results[s].prompt_tokens.size());
    return P + o.tokens - 1 > cfg.block_size ? cfg.block_size : P;
  });
  for (const SampleResult& r : results)
    plan.positions = std::max(plan.positions, int32_t(std::min<int64_t>(
                                                  cfg.block_size, int64_t(r.prompt_tokens.size()) + o.tokens - 1)));
  return plan;
}

// Evaluation set-up on rank 0: the text's token ids; slots = --samples (default: ranks).
Plan plan_eval(const Options& o, const Config& cfg, const Tokenizer& tok, int N, std::vector<int>& ids,
               std::vector<std::string>& notes) {
  const std::string text = read_input(o.eval_file, "--eval");
  try {
    ids = tok.encode(text);
  } catch (const UserError& e) {
    user_error("--eval {}: {}", o.eval_file, e.what());
  }
  if (ids.size() < 2) user_error("--eval {}: the text needs at least two tokens", o.eval_file);
  Plan plan;
  plan.samples = std::min(o.samples > 0 ? o.samples : N, Evaluator::n_windows(int(ids.size()), cfg.block_size));
  plan.micro_batches = choose_micro_batches(o, N, plan.samples, notes);
  // A window's rows: its largest message and its context.
  const int window = std::min<int>(cfg.block_size, int(ids.size()) - 1);
  size_messages(plan, [window](int) { return window; });
  plan.positions = window;
  return plan;
}

// --tokenize / --detokenize on rank 0: the model file's tokenizer between stdin and stdout.
void tokenize_stdio(const Options& o) {
  std::unique_ptr<Tokenizer> tok;
  {
    ReadGuard guard(o.model, 0, kMetadataSeconds);
    tok = load_tokenizer(o.model);
  }
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::string out;
  if (o.tokenize) {
    for (int id : tok->encode(in)) out += (out.empty() ? "" : " ") + std::to_string(id);
    out += '\n';
  } else {
    size_t i = 0;
    while (true) {
      i = in.find_first_not_of(" \t\r\n", i);
      if (i == std::string::npos) break;
      size_t j = in.find_first_of(" \t\r\n", i);
      const std::string word = in.substr(i, j == std::string::npos ? std::string::npos : j - i);
      if (word.find_first_not_of("0123456789") != std::string::npos || word.size() > 9)
        user_error("--detokenize: '{}' is not a token id", word);
      tok->decode_token(std::stoi(word), out);
      i = j;
    }
  }
  write_stdout(out, o.tokenize ? "--tokenize" : "--detokenize");
}

}  // namespace

int run(const Options& o, MPI_Comm world) {
  Ring ring(world);
  const int rank = ring.rank(), N = ring.size();
  const bool starter = rank == 0;
  const bool eval = !o.eval_file.empty();
  RankStats st;
  gethostname(st.host, sizeof st.host - 1);
  if (o.tokenize || o.detokenize) return agree(ring.comm(), starter ? attempt([&] { tokenize_stdio(o); }) : "") ? 0 : 1;

  // Phase 1, every rank: the model's shape, the split and the head split.
  Config cfg;
  std::vector<int> split;
  int tail = 0;  // lm_head rows the last rank computes
  if (!agree(ring.comm(), attempt([&] {
        {
          ReadGuard guard(o.model, rank, kMetadataSeconds);
          // Tests: a read that hangs, "SECONDS" on every rank or "SECONDS@RANK" on one.
          if (const char* stall = std::getenv("MDI_TEST_STALL_READ_S")) {
            const char* at = std::strchr(stall, '@');
            if (!at || std::atoi(at + 1) == rank)
              std::this_thread::sleep_for(std::chrono::duration<double>(std::atof(stall)));
          }
          cfg = read_config(o.model);
        }
        split = o.layers.empty() ? balanced_split(cfg, N) : parse_split(o.layers, cfg, N);
        tail = choose_head_split(o, cfg, split, N);
      })))
    return 1;
  for (int r = 0; r < rank; ++r) st.layer_begin += split[r];
  st.layer_end = st.layer_begin + split[rank];

  // Phase 2, rank 0: tokenizer, prompts or evaluation text, the plan every rank needs.
  std::unique_ptr<Tokenizer> tok;
  std::vector<SampleResult> results;
  std::vector<int> eval_ids;
  Plan plan;
  std::vector<std::string> notes;
  if (!agree(ring.comm(), attempt([&] {
        if (!starter) return;
        {
          ReadGuard guard(o.model, rank, kMetadataSeconds);
          tok = load_tokenizer(o.model);
        }
        if (tok->vocab_size() > cfg.vocab_size)
          user_error("{}: the tokenizer has {} tokens but the model's vocab_size is {}", o.model,
                     tok->vocab_size(), cfg.vocab_size);
        plan = eval ? plan_eval(o, cfg, *tok, N, eval_ids, notes)
                    : plan_generation(o, cfg, *tok, N, results, notes);
      })))
    return 1;
  MDI_MPI_CHECK(MPI_Bcast(&plan, sizeof plan, MPI_BYTE, 0, ring.comm()));
  if (starter) {
    std::fprintf(stderr, "mdi-llm: %s\n", describe_split(split, tail, cfg.vocab_size).c_str());
    for (const std::string& n : notes) std::fprintf(stderr, "mdi-llm: note: %s\n", n.c_str());
    if (o.verbose)
      std::fprintf(stderr, "mdi-llm: plan: %d samples in %d micro-batches of up to %d; largest message %d rows "
                   "(%.1f KiB); KV cache %d positions per sample\n", plan.samples, plan.micro_batches,
                   plan.max_items, plan.max_rows,
                   (sizeof(MsgHeader) + sizeof(BatchItem) * plan.max_items + 4.0 * plan.max_rows * cfg.n_embd) / 1024,
                   plan.positions);
  }

  // Phase 3, every rank: its weights and its backend; rank 0 also its driver (the sample states
  // reserve room for every token to come, so an absurd --tokens fails here, cleanly).
  Weights w;
  std::unique_ptr<Backend> be;
  std::unique_ptr<Head> head;
  std::unique_ptr<Evaluator> evaluator;
  Driver* driver = nullptr;
  const LocalRank local = local_rank(world);
  st.threads = o.threads > 0 ? o.threads : default_threads(local);
  if (!agree(ring.comm(), attempt([&] {
        const double t0 = now();
        // Rank 0's backend also takes lm_head passes of head_rows rows, and selects what the
        // sampler needs of them.
        BackendSpec spec{starter ? std::max<int>(plan.max_rows, head_rows(plan)) : plan.max_rows,
                         plan.samples, st.threads,
                         starter && !eval ? sampling_candidates(o.sampling, tok->vocab_size()) : 0,
                         plan.positions};
        const RankDevice dev = rank_device_of(o, rank, N);
        // A CUDA rank starts its GPU (context, cuBLAS) while it reads the file (MDI_CUDA_START=0:
        // in the backend's constructor, after the read; for measurement). A float16 file's
        // matrices stay halves on CPU ranks (widened in the kernels, the same bits, half the bytes
        // read per token) and on CUDA ranks with 16-bit weights (no fp32 copy on the host). The
        // ReadGuard's crash message would also speak for a crash of that thread during the read
        // (none has been seen).
        std::unique_ptr<CudaStart> start;
        const char* start_env = std::getenv("MDI_CUDA_START");
        if (dev.cuda && !(start_env && std::string(start_env) == "0"))
          start = std::make_unique<CudaStart>([dev, local] { return gpu_of(dev, local); }, dev.dt,
                                              cfg.n_embd, spec.max_rows);
        {
          ReadGuard guard(o.model, rank, 0);  // big reads may take long: crashes only
          const int V = cfg.vocab_size;  // rank 0: lm_head rows [0, V - tail), the last rank the rest
          const bool last = rank == N - 1 && N > 1;
          w = load_weights(o.model, cfg, st.layer_begin, st.layer_end, starter, last ? V - tail : 0,
                           starter ? V - tail
                           : last  ? V
                                   : 0,
                           !dev.cuda || dev.dt != DType::kF32);
        }
        std::string device;
        be = make_backend(dev, cfg, w, spec, local, start.get(), device);
        st.load_s = now() - t0;
        std::snprintf(st.device, sizeof st.device, "%s", device.c_str());
        const std::string gpu = be->gpu_id();
        std::snprintf(st.gpu, sizeof st.gpu, "%s", gpu.c_str());
        st.mps = !gpu.empty() && mps_daemon_running();
        st.weights_bytes = double(w.bytes());
        st.workspace_bytes = double(be->workspace_bytes());
        if (device != "cpu") w = Weights{};  // the GPU holds its own copy
        if (starter && eval) driver = (evaluator = std::make_unique<Evaluator>(cfg, *be, plan, std::move(eval_ids))).get();
        if (starter && !eval) driver = (head = std::make_unique<Head>(o, cfg, *tok, *be, plan, tail, results)).get();
      })))
    return 1;

  // The run: rank 0 drives, the others serve their layers until STOP. A stop signal ends a
  // generation early, with what it generated written (StopSignals).
  std::optional<StopSignals> stop_signals;
  if (!eval) stop_signals.emplace();
  MDI_MPI_CHECK(MPI_Barrier(ring.comm()));
  const double t0 = now();
  if (head) head->start_clock();
  if (starter && N == 1) run_single(*driver, *be, plan, cfg.n_embd, st);
  else if (starter) run_starter(ring, *driver, *be, plan, cfg.n_embd, tail, st);
  else run_worker(ring, *be, plan, cfg.n_embd, rank == N - 1 ? tail : 0, st);
  const double seconds = now() - t0;
  if (head) head->end_progress();
  st.peak_rss_bytes = peak_rss_bytes();

  std::vector<RankStats> all(starter ? N : 0);
  MDI_MPI_CHECK(MPI_Gather(&st, sizeof st, MPI_BYTE, all.data(), sizeof st, MPI_BYTE, 0, ring.comm()));
  if (!starter) return 0;

  RunSummary summary{o.model, be->name(), cfg, split, tail, N, plan.micro_batches, eval ? 0 : o.tokens, seconds};
  summary.shm_eager_limit = shared_memory_eager_limit();
  // What could not be written is an error; the rest is still written (samples that standard
  // output did not take are in --output).
  std::vector<std::string> errors;
  if (eval) {
    errors.push_back(attempt([&] {
      write_stdout(
          fmt::format("eval loss {:.6f} (mean cross-entropy, nats) over {} predictions in {} "
                      "windows of up to {} tokens: {}\n",
                      evaluator->loss(), evaluator->predictions(), evaluator->windows(),
                      cfg.block_size, o.eval_file),
          "--eval");
    }));
    if (o.verbose) print_report(stderr, summary, all, {});
  } else {
    errors.push_back(attempt([&] { head->print_samples(); }));
    print_report(stderr, summary, all, results);
    if (!o.output.empty()) errors.push_back(attempt([&] { write_jsonl(o.output, results); }));
    if (!o.timings.empty())
      errors.push_back(attempt([&] { write_timings_csv(o.timings, results); }));
    if (!o.report_json.empty())
      errors.push_back(attempt([&] { write_report_json(o.report_json, summary, all, results); }));
  }
  int code = 0;
  for (const std::string& e : errors) {
    if (e.empty()) continue;
    std::fprintf(stderr, "mdi-llm: error: %s\n", e.c_str());
    code = 1;
  }
  if (const int sig = StopSignals::received(); sig != 0 && !eval) {
    const long stopped = std::count_if(results.begin(), results.end(), [](const SampleResult& r) {
      return r.stop == "interrupted";
    });
    std::fprintf(
        stderr,
        "mdi-llm: stopped by %s: %s early (stop \"interrupted\"), written as far as they got\n",
        StopSignals::name(sig), count_of(stopped, "sample ended", "samples ended").c_str());
    code = 128 + sig;  // as a shell reports a process a signal ended
  }
  return code;
}

}  // namespace mdi
