// The report's note on ranks that share a GPU without MPS (shared_gpu_notes, mps_daemon_running).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "mdi/report.h"

namespace {

mdi::RankStats rank_on(const char* host, const char* gpu, int mps = 0) {
  mdi::RankStats r;
  std::snprintf(r.host, sizeof r.host, "%s", host);
  std::snprintf(r.gpu, sizeof r.gpu, "%s", gpu);
  std::snprintf(r.device, sizeof r.device, "%s", *gpu ? "cuda:0 fp16" : "cpu");
  r.mps = mps;
  return r;
}

constexpr const char* kGpu0 = "0000:19:00.0";
constexpr const char* kGpu1 = "0000:3B:00.0";

TEST(SharedGpuNotes, RanksOnOneGpuWithoutMpsAreNamed) {
  const auto notes =
      mdi::shared_gpu_notes({rank_on("a", kGpu0), rank_on("a", kGpu0), rank_on("a", kGpu0)});
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("ranks 0, 1, 2 share the GPU 0000:19:00.0 on a without MPS"),
            std::string::npos)
      << notes[0];
  EXPECT_NE(notes[0].find("nvidia-cuda-mps-control -d"), std::string::npos) << notes[0];
}

TEST(SharedGpuNotes, NothingWhenNoGpuIsShared) {
  EXPECT_TRUE(mdi::shared_gpu_notes({rank_on("a", kGpu0)}).empty());                 // one rank
  EXPECT_TRUE(mdi::shared_gpu_notes({rank_on("a", ""), rank_on("a", "")}).empty());  // CPUs
  EXPECT_TRUE(
      mdi::shared_gpu_notes({rank_on("a", kGpu0), rank_on("a", kGpu1)}).empty());  // two GPUs
  EXPECT_TRUE(
      mdi::shared_gpu_notes({rank_on("a", kGpu0), rank_on("b", kGpu0)}).empty());  // two hosts
  EXPECT_TRUE(mdi::shared_gpu_notes({rank_on("a", kGpu0, 1), rank_on("a", kGpu0, 1)})
                  .empty());  // under MPS
}

TEST(SharedGpuNotes, OneNotePerSharedGpu) {
  // Ranks 0 and 2 share GPU 0 of host a, 1 and 3 GPU 1; rank 4 has GPU 0 of host b alone; ranks
  // 5 and 6 share host c's GPU under MPS; rank 7 is a CPU.
  const auto notes = mdi::shared_gpu_notes(
      {rank_on("a", kGpu0), rank_on("a", kGpu1), rank_on("a", kGpu0), rank_on("a", kGpu1),
       rank_on("b", kGpu0), rank_on("c", kGpu0, 1), rank_on("c", kGpu0, 1), rank_on("c", "")});
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[0].find("ranks 0, 2 share the GPU 0000:19:00.0 on a "), std::string::npos)
      << notes[0];
  EXPECT_NE(notes[1].find("ranks 1, 3 share the GPU 0000:3B:00.0 on a "), std::string::npos)
      << notes[1];
}

// A UNIX stream socket bound at path; listening, or closed again (what a daemon that quit leaves).
int bind_socket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return -1;
  return fd;
}

TEST(SharedGpuNotes, MpsDaemonIsLookedForWhereClientsLook) {
  char dir[] = "/tmp/mdi_mps_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const char* old = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  const std::string saved = old ? old : "", pipe = std::string(dir) + "/control";
  setenv("CUDA_MPS_PIPE_DIRECTORY", dir, 1);
  EXPECT_FALSE(mdi::mps_daemon_running());  // no socket
  const int fd = bind_socket(pipe);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(listen(fd, 4), 0);
  EXPECT_TRUE(mdi::mps_daemon_running());  // a daemon listening
  close(fd);
  EXPECT_FALSE(mdi::mps_daemon_running());  // its socket file left behind
  unlink(pipe.c_str());
  rmdir(dir);
  if (old)
    setenv("CUDA_MPS_PIPE_DIRECTORY", saved.c_str(), 1);
  else
    unsetenv("CUDA_MPS_PIPE_DIRECTORY");
}

}  // namespace
