// Small filesystem helpers: whole-file reads, atomic writes (temp file + rename), the user's
// cache directory and sha256 of files and strings.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace qeval {

namespace fs = std::filesystem;

// Returns the whole file as bytes. Throws Error naming the path when it cannot be read.
std::string read_file(const fs::path& path);

// Writes `data` to `path` atomically: a temp file in the same directory, flushed, then
// renamed over `path`. Creates parent directories. Throws Error on failure.
void write_file_atomic(const fs::path& path, std::string_view data);

// Whether `a` and `b` name the same file, in any spelling: equal weakly_canonical paths (symlinks,
// "..", "./" and a trailing "/" resolved; neither need exist) or fs::equivalent (hard links).
bool same_path(const fs::path& a, const fs::path& b);

// Whether `p` lies strictly inside the folder `dir` (any depth), compared as same_path does.
bool path_inside(const fs::path& p, const fs::path& dir);

// $XDG_CACHE_HOME/qeval, else ~/.cache/qeval. Not created here.
fs::path cache_dir();

// Lowercase hex sha256.
std::string sha256_hex(std::string_view data);
std::string sha256_file(const fs::path& path);

}  // namespace qeval
