// Whole-file reads (mdi/file.h).
#include "mdi/file.h"

#include <cerrno>
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

}  // namespace mdi
