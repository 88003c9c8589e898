// Whole-file reads with one clear error for a file that cannot be read, and writes whose failure
// (a full disk, a quota, a closed pipe) is an error too, never silent.
#pragma once

#include <fstream>
#include <string>
#include <string_view>

namespace mdi {

// The bytes of the file at PATH. Throws UserError for a missing, unreadable or directory path,
// naming WHAT (e.g. "--eval"; may be empty) and the path.
std::string read_file(const std::string& path, const std::string& what = "");

// The same, where PATH "-" is standard input (the flags that name an input file: --prompts-file,
// --eval).
std::string read_input(const std::string& path, const std::string& what);

// Writes BYTES to standard output and flushes them. Throws UserError naming WHAT (e.g. "the
// samples"; may be empty) and the reason where they could not be written. Under mpirun a rank's
// standard output is a pipe to mpirun, which forwards it and does not report its own failed writes.
void write_stdout(std::string_view bytes, std::string_view what);

// Closes F, an output file opened for FLAG (e.g. "--output") at PATH. Throws UserError where
// anything written to it, its last buffer included, did not reach the file.
void close_output(std::ofstream& f, std::string_view flag, const std::string& path);

}  // namespace mdi
