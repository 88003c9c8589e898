// Whole-file reads (mdi/file.h).
#include "mdi/file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "mdi/error.h"

namespace mdi {

std::string read_file(const std::string& path, const std::string& what) {
  const std::string name = what.empty() ? path : what + " " + path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) user_error("{}: it is a directory", name);
  std::ifstream in(path, std::ios::binary);
  if (!in) user_error("{}: cannot read the file ({})", name, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad() || text.bad()) user_error("{}: reading the file failed", name);
  return std::move(text).str();
}

std::string read_input(const std::string& path, const std::string& what) {
  if (path != "-") return read_file(path, what);
  std::ostringstream text;
  text << std::cin.rdbuf();
  if (std::cin.bad() || text.bad()) user_error("{} -: reading standard input failed", what);
  return std::move(text).str();
}

namespace {
// The reason of a failed write, where the C library left one.
std::string reason(int err) {
  return err ? fmt::format(" ({})", std::strerror(err)) : std::string();
}
}  // namespace

void write_stdout(std::string_view bytes, std::string_view what) {
  errno = 0;
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  if (std::fflush(stdout) != 0 || n != bytes.size() || std::ferror(stdout))
    user_error("{}writing to standard output failed{}",
               what.empty() ? "" : fmt::format("{}: ", what), reason(errno));
}

void close_output(std::ofstream& f, std::string_view flag, const std::string& path) {
  // A write that failed before (a full buffer that would not go out) left its errno.
  const bool failed = f.fail();
  const int before = errno;
  errno = 0;
  f.close();
  if (failed || f.fail())
    user_error("{} {}: write failed{}", flag, path, reason(failed ? before : errno));
}

}  // namespace mdi
