// Where the shipped files are (mdi/paths.h).
#include "mdi/paths.h"

#include <filesystem>
#include <system_error>

namespace mdi {

std::string shipped_file(const std::string& name, const std::string& source_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // The executable itself, links resolved (a link to bin/mdi-llm finds the tree it points into).
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path installed = exe.parent_path() / MDI_DATA_FROM_BIN / name;
    if (fs::is_regular_file(installed, ec)) return installed.lexically_normal().string();
  }
  return source_path;
}

std::string bundled_model() {
  return shipped_file("shakespeare_char.h5", MDI_SOURCE_DIR "/data/shakespeare_char.h5");
}

}  // namespace mdi
