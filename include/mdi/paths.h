// Files that ship with the executables: the bundled model (mdi-llm's default --model) and
// mdi-convert's Python helper. An installed tree (`cmake --install build --prefix P`) holds them
// in P/share/mdi-llm, found from the running executable's own path, so the tree can be moved or
// copied to every board as it is; an executable run from its build tree uses the source tree's
// copy.
#pragma once

#include <string>

namespace mdi {

// `name` in the installed data folder beside the running executable (<bin>/../share/mdi-llm, as
// configured) where that file exists, else `source_path`.
std::string shipped_file(const std::string& name, const std::string& source_path);

// The bundled model: shakespeare_char.h5, installed or in the source tree's data/.
std::string bundled_model();

}  // namespace mdi
