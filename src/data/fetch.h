// `qeval fetch`: puts the upstream datasets (GSM8K, MMLU) and small test models (stories260K)
// into a local tree, from the network (libcurl; MMLU members extracted from the official tar
// with libarchive) or from a local mirror, verifying every file's sha256 against the manifest
// compiled into the binary (datasets/manifest.json). Files are written to a temp file in the
// destination directory and renamed into place only after their hash matched, so an
// interrupted or corrupted fetch never leaves a partial file under its final name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

struct FetchOptions {
  // Copy from a local tree instead of downloading. Layout: DIR/gsm8k/..., DIR/mmlu/<split>/...
  // for datasets, DIR/stories260K/stories260K.gguf for models (i.e. a datasets or models root);
  // DIR/datasets/... and DIR/models/... (a whole fetch destination) are accepted too.
  std::optional<std::filesystem::path> mirror;
  // Destination: datasets land in <dest_root>/datasets/..., models in <dest_root>/models/...
  // Empty = cache_dir() (never the checkout).
  std::filesystem::path dest_root;
  // Tests: a loopback base URL (e.g. "http://127.0.0.1:1234/files") that replaces everything
  // up to the last '/' of each upstream URL, so ".../data/train.jsonl" is fetched from
  // "<base>/train.jsonl". "" = the upstream URLs.
  std::string base_url_override;
  // Tests: a manifest (same schema as datasets/manifest.json) replacing the built-in one.
  // null = builtin_manifest().
  nlohmann::json manifest;
  // Network: seconds to connect; a transfer slower than 1 KiB/s for stall_timeout_s fails.
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;
  // The most bytes a tar archive may have (the manifest lists its members' sizes, not its own;
  // MMLU's data.tar is 166 MB). A direct file may have at most its manifest size.
  uint64_t max_archive_bytes = uint64_t{1} << 30;
};

// One file of the manifest. `path` is relative to the destination root
// ("datasets/gsm8k/test.jsonl"); `member`, when not empty, is the file's path inside the tar
// archive at `url`.
struct FetchFile {
  std::string path;
  std::string url;
  std::string member;
  std::string sha256;  // lowercase hex
  uint64_t size = 0;   // bytes
};

// Fetches the named sets ("gsm8k", "mmlu", "stories260K"; see fetch_names()). Files already
// present with the right sha256 are skipped. Progress lines go to `log`. Throws Error on an
// unknown name, a network/HTTP failure, a missing mirror file, a download or tar member longer
// than the manifest's size (stopped there, so nothing unbounded reaches disk or memory), or a
// sha256 mismatch (naming the file, the expected and the actual hash); files fetched before the
// error stay in place.
void fetch(const std::vector<std::string>& names, const FetchOptions& opt, std::ostream& log);

// The manifest compiled into the binary (parsed once; thread-safe), and its raw text.
const nlohmann::json& builtin_manifest();
std::string_view builtin_manifest_text();

// Names of the sets in `manifest`, sorted.
std::vector<std::string> fetch_names(const nlohmann::json& manifest);

// Files of one set in `manifest`. Throws Error on an unknown name (listing the known ones) or
// a malformed entry (a url must look like scheme://host/.../file).
std::vector<FetchFile> manifest_files(const nlohmann::json& manifest, const std::string& name);

// What a run read: per dataset file (`files` under datasets_root()), its path relative to that
// root -> {"sha256", "published": whether it equals the file the built-in manifest names (false
// also for a file the manifest lacks)}. Hashes each file once (the datasets are ~12 MB).
nlohmann::json check_dataset_files(const std::vector<std::filesystem::path>& files);

// Root of the models tree: $QEVAL_MODELS if set, else cache_dir()/"models".
std::filesystem::path models_root();

// "stories260K" -> <models_root>/stories260K/stories260K.gguf. Throws Error naming the
// expected path and hinting `qeval fetch <name>` (or --mirror DIR) when it is missing.
std::filesystem::path model_file(const std::string& name);

// A variant's or a command's `model`: a name `qeval fetch` knows ("stories260K"), given where a
// path is expected and not an existing path, becomes model_file(name); anything else (a path,
// "random:SHAPE") is returned as it is.
std::string resolve_model_name(const std::string& model);

}  // namespace qeval
