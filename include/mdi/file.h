// Whole-file reads with one clear error for a file that cannot be read.
#pragma once

#include <string>

namespace mdi {

// The bytes of the file at PATH. Throws UserError for a missing, unreadable or directory path,
// naming WHAT (e.g. "--eval"; may be empty) and the path.
std::string read_file(const std::string& path, const std::string& what = "");

// The same, where PATH "-" is standard input (the flags that name an input file: --prompts-file,
// --eval).
std::string read_input(const std::string& path, const std::string& what);

}  // namespace mdi
