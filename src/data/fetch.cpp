// `qeval fetch`: manifest lookup, libcurl downloads, libarchive extraction of tar members,
// mirror copies, sha256 verification and atomic placement (see fetch.h).
#include "data/fetch.h"

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/text.h"
#include "data/datasets.h"

namespace qeval {

namespace {

namespace fs = std::filesystem;

// A temp file that is removed on destruction unless committed (renamed into place).
class TempFile {
 public:
  explicit TempFile(fs::path path) : path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!committed_) {
      std::error_code ec;
      fs::remove(path_, ec);
    }
  }
  const fs::path& path() const { return path_; }
  // Renames the temp file to `dest` (same directory, so atomic). Throws Error on failure.
  void commit(const fs::path& dest) {
    std::error_code ec;
    fs::rename(path_, dest, ec);
    if (ec) fail("{}: cannot move the verified temp file {} into place: {}", dest.string(), path_.string(), ec.message());
    committed_ = true;
  }

 private:
  fs::path path_;
  bool committed_ = false;
};

// Temp path next to `dest`: "<dir>/.<name>.part.<pid>", so it never looks like the real file.
// The temp files of `dest` that earlier fetches left when killed (their process is gone) are
// removed first.
fs::path temp_path_for(const fs::path& dest) {
  const std::string prefix = fmt::format(".{}.part.", dest.filename().string());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dest.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (pid <= 0 || *end != 0 || pid == getpid()) continue;
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(e.path(), ec);
  }
  return dest.parent_path() / (prefix + std::to_string(getpid()));
}

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory: {} (is the destination writable?)", dir.string(), ec.message());
}

// True when `path` exists with the expected size and sha256.
bool already_present(const fs::path& path, const FetchFile& f) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  if (fs::file_size(path, ec) != f.size || ec) return false;
  return sha256_file(path) == f.sha256;
}

[[noreturn]] void fail_hash(const fs::path& dest, const FetchFile& f, const std::string& actual, uint64_t actual_size,
                            const std::string& source) {
  fail("{}: sha256 mismatch: expected {}, got {} ({} bytes, expected {}; source {}). The source file differs from "
       "the one in the manifest (corrupted download or changed upstream); nothing was written. Retry, or use "
       "--mirror DIR with a verified copy",
       dest.string(), f.sha256, actual, actual_size, f.size, source);
}

// Verifies the temp file against `f` and renames it to `dest`.
void verify_and_commit(TempFile& tmp, const fs::path& dest, const FetchFile& f, const std::string& source) {
  std::string actual = sha256_file(tmp.path());
  if (actual != f.sha256) {
    std::error_code ec;
    uint64_t size = fs::file_size(tmp.path(), ec);
    fail_hash(dest, f, actual, size, source);
  }
  tmp.commit(dest);
}

// ---- libcurl ----

// Where the write callback puts the body, and the most bytes it accepts: a server (or a proxy
// or captive portal) that sends more than the manifest lists is cut off there instead of
// filling the disk before the sha256 check.
struct DownloadSink {
  FILE* file = nullptr;
  uint64_t max_bytes = 0;
  uint64_t written = 0;
  bool over_limit = false;
};

size_t write_to_file(char* data, size_t size, size_t nmemb, void* user) {
  auto* sink = static_cast<DownloadSink*>(user);
  const uint64_t n = static_cast<uint64_t>(size) * nmemb;
  if (n > sink->max_bytes - sink->written) {
    sink->over_limit = true;
    return 0;  // curl stops with CURLE_WRITE_ERROR
  }
  sink->written += n;
  return std::fwrite(data, 1, n, sink->file);
}

std::string no_proxy_list() {
  std::string list = "127.0.0.1,localhost,::1";
  for (const char* var : {"no_proxy", "NO_PROXY"})
    if (const char* v = std::getenv(var); v && *v) list += std::string(",") + v;
  return list;
}

// Downloads `url` into the file `out` (created/truncated), accepting at most `max_bytes` bytes
// (`limit_what` says where that number comes from, for the error). Throws Error naming the URL
// on any network or HTTP failure or a longer body; `out` may hold partial data then (the
// caller's TempFile removes it).
void download(const std::string& url, const fs::path& out, const FetchOptions& opt, uint64_t max_bytes,
              const std::string& limit_what) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  FILE* f = std::fopen(out.c_str(), "wb");
  if (!f) fail("{}: cannot create temp file (is the destination writable?)", out.string());
  CURL* curl = curl_easy_init();
  if (!curl) {
    std::fclose(f);
    fail("{}: cannot initialise libcurl", url);
  }
  char errbuf[CURL_ERROR_SIZE] = {0};
  std::string user_agent = std::string("qeval/") + git_revision();
  std::string no_proxy = no_proxy_list();
  DownloadSink sink{f, max_bytes, 0, false};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, opt.connect_timeout_s);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, opt.stall_timeout_s);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, no_proxy.c_str());
  curl_easy_setopt(curl, CURLOPT_USERAGENT, user_agent.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  // Refuses a Content-Length above the limit before any byte is written (0 would mean "no
  // limit" to curl; the write callback still holds such a download to 0 bytes).
  if (max_bytes > 0 && max_bytes <= static_cast<uint64_t>(INT64_MAX))
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(max_bytes));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_to_file);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  CURLcode rc = curl_easy_perform(curl);
  long http_code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http_code);
  curl_easy_cleanup(curl);
  bool write_ok = std::fflush(f) == 0;
  write_ok = (fsync(fileno(f)) == 0) && write_ok;
  write_ok = (std::fclose(f) == 0) && write_ok;
  if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && sink.over_limit))
    fail("{}: the server sends more than the {} bytes {}; the download was stopped and nothing was written "
         "(hint: the upstream file changed, or a proxy or captive portal answered; retry, or use --mirror DIR "
         "with a verified copy)",
         url, max_bytes, limit_what);
  if (rc == CURLE_HTTP_RETURNED_ERROR)
    fail("{}: download failed with HTTP {} (check the address, or use --mirror DIR with a local copy)", url,
         http_code);
  if (rc != CURLE_OK)
    fail("{}: download failed: {} ({}); check the network/proxy, or use --mirror DIR with a local copy", url,
         errbuf[0] ? errbuf : curl_easy_strerror(rc), curl_easy_strerror(rc));
  if (!write_ok) fail("{}: writing the download failed (disk full?)", out.string());
}

// The URL to fetch for an upstream URL, honouring base_url_override.
std::string effective_url(const std::string& url, const FetchOptions& opt) {
  if (opt.base_url_override.empty()) return url;
  std::string base = opt.base_url_override;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + url.substr(url.rfind('/'));
}

// ---- libarchive ----

std::string normalize_member(std::string name) {
  while (starts_with(name, "./")) name.erase(0, 2);
  return name;
}

// Writes the current member of `a` (the manifest's `f`, at most f.size bytes) to `tmp_path`.
// The member is streamed, never held in memory, and refused as soon as it is longer than the
// manifest says: a tar (gzip/xz decompressed on the fly) can hold any number of bytes.
void extract_member(struct archive* a, struct archive_entry* entry, const std::string& name, const FetchFile& f,
                    const fs::path& tar_path, const std::string& url, const fs::path& dest,
                    const fs::path& tmp_path) {
  auto too_long = [&](const std::string& how) {
    fail("{}: member {} of {} {}, the manifest lists {} bytes; nothing was written (hint: upstream changed the "
         "archive; use --mirror DIR with a verified copy)",
         dest.string(), name, url, how, f.size);
  };
  if (archive_entry_size_is_set(entry) && archive_entry_size(entry) != static_cast<la_int64_t>(f.size))
    too_long(fmt::format("holds {} bytes", static_cast<int64_t>(archive_entry_size(entry))));
  FILE* out = std::fopen(tmp_path.c_str(), "wb");
  if (!out) fail("{}: cannot create temp file (is the destination writable?)", tmp_path.string());
  struct Closer {
    FILE* f;
    ~Closer() {
      if (f) std::fclose(f);
    }
  } closer{out};
  uint64_t total = 0;
  char buf[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n < 0) fail("{} (from {}): cannot read member {}: {}", tar_path.string(), url, name, archive_error_string(a));
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    if (total > f.size) too_long(fmt::format("holds more than {} bytes", f.size));
    if (std::fwrite(buf, 1, static_cast<size_t>(n), out) != static_cast<size_t>(n))
      fail("{}: writing the extracted member failed (disk full?)", tmp_path.string());
  }
  bool ok = std::fflush(out) == 0;
  ok = (fsync(fileno(out)) == 0) && ok;
  ok = (std::fclose(out) == 0) && ok;
  closer.f = nullptr;
  if (!ok) fail("{}: writing the extracted member failed (disk full?)", tmp_path.string());
}

// Extracts the `wanted` members (member name -> file) of the tar at `tar_path` into
// <root>/<file.path>, verifying each. Throws Error when the archive is unreadable, a member is
// missing, longer than the manifest says, or a hash differs.
void extract_members(const fs::path& tar_path, const std::string& url, const std::map<std::string, FetchFile>& wanted,
                     const fs::path& root) {
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_support_format_gnutar(a);
  archive_read_support_filter_all(a);
  struct Closer {
    struct archive* a;
    ~Closer() { archive_read_free(a); }
  } closer{a};
  if (archive_read_open_filename(a, tar_path.c_str(), 1 << 16) != ARCHIVE_OK)
    fail("{} (from {}): not a readable tar archive: {}", tar_path.string(), url, archive_error_string(a));
  std::map<std::string, bool> done;
  struct archive_entry* entry = nullptr;
  for (;;) {
    int r = archive_read_next_header(a, &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
      fail("{} (from {}): corrupt tar archive: {}", tar_path.string(), url, archive_error_string(a));
    std::string name = normalize_member(archive_entry_pathname(entry));
    auto it = wanted.find(name);
    if (it == wanted.end() || archive_entry_filetype(entry) != AE_IFREG) continue;
    const FetchFile& f = it->second;
    fs::path dest = root / f.path;
    make_dirs(dest.parent_path());
    TempFile tmp(temp_path_for(dest));
    extract_member(a, entry, name, f, tar_path, url, dest, tmp.path());
    verify_and_commit(tmp, dest, f, url + " member " + name);
    done[name] = true;
  }
  for (const auto& [name, f] : wanted)
    if (!done.count(name))
      fail("{}: member {} not found in the archive {} (upstream layout changed? use --mirror DIR)",
           (root / f.path).string(), name, url);
}

// ---- mirror ----

// The file in the mirror tree for `f`: DIR/<path without its first component>, else DIR/<path>.
fs::path mirror_source(const fs::path& mirror, const FetchFile& f) {
  fs::path rel(f.path);
  fs::path stripped;
  for (auto it = std::next(rel.begin()); it != rel.end(); ++it) stripped /= *it;
  std::error_code ec;
  if (fs::is_regular_file(mirror / stripped, ec)) return mirror / stripped;
  if (fs::is_regular_file(mirror / rel, ec)) return mirror / rel;
  fail("{}: not in the mirror (looked for {} and {}); a mirror holds the same layout as the datasets or models "
       "tree, e.g. DIR/gsm8k/test.jsonl, DIR/mmlu/dev/anatomy_dev.csv, DIR/stories260K/stories260K.gguf",
       f.path, (mirror / stripped).string(), (mirror / rel).string());
}

void copy_from_mirror(const fs::path& src, const fs::path& dest, const FetchFile& f) {
  make_dirs(dest.parent_path());
  TempFile tmp(temp_path_for(dest));
  std::error_code ec;
  fs::copy_file(src, tmp.path(), fs::copy_options::overwrite_existing, ec);
  if (ec) fail("{}: cannot copy from the mirror file {}: {}", dest.string(), src.string(), ec.message());
  verify_and_commit(tmp, dest, f, src.string());
}

std::string human_size(uint64_t bytes) {
  if (bytes >= (1u << 20)) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  if (bytes >= 1024) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  return fmt::format("{} B", bytes);
}

}  // namespace

const nlohmann::json& builtin_manifest() {
  static const nlohmann::json kManifest = [] {
    try {
      return nlohmann::json::parse(builtin_manifest_text());
    } catch (const nlohmann::json::exception& e) {
      fail("built-in fetch manifest is not valid JSON ({}); regenerate src/data/manifest.cpp with "
           "datasets/embed_manifest.py",
           e.what());
    }
  }();
  return kManifest;
}

std::vector<std::string> fetch_names(const nlohmann::json& manifest) {
  std::vector<std::string> names;
  if (manifest.contains("sets") && manifest["sets"].is_object())
    for (const auto& [k, v] : manifest["sets"].items()) names.push_back(k);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<FetchFile> manifest_files(const nlohmann::json& manifest, const std::string& name) {
  if (!manifest.is_object() || !manifest.contains("sets") || !manifest["sets"].is_object())
    fail("fetch manifest: missing object \"sets\"");
  const auto& sets = manifest["sets"];
  if (!sets.contains(name)) {
    std::vector<std::string> known = fetch_names(manifest);
    fail("fetch: unknown name \"{}\" (known: {})", name, fmt::join(known, ", "));
  }
  const auto& set = sets[name];
  if (!set.contains("files") || !set["files"].is_array()) fail("fetch manifest: sets.{}.files must be an array", name);
  std::vector<FetchFile> out;
  for (size_t i = 0; i < set["files"].size(); ++i) {
    const auto& e = set["files"][i];
    auto str = [&](const char* key, bool required) -> std::string {
      if (!e.contains(key)) {
        if (required) fail("fetch manifest: sets.{}.files[{}]: missing string \"{}\"", name, i, key);
        return "";
      }
      if (!e[key].is_string()) fail("fetch manifest: sets.{}.files[{}].{} must be a string", name, i, key);
      return e[key].get<std::string>();
    };
    FetchFile f;
    f.path = str("path", true);
    f.url = str("url", true);
    f.member = str("member", false);
    f.sha256 = str("sha256", true);
    if (!e.contains("size") || !e["size"].is_number_integer() || e["size"].get<int64_t>() < 0)
      fail("fetch manifest: sets.{}.files[{}]: missing non-negative integer \"size\"", name, i);
    f.size = e["size"].get<uint64_t>();
    fs::path p(f.path);
    if (p.is_absolute() || f.path.find("..") != std::string::npos || std::distance(p.begin(), p.end()) < 2)
      fail("fetch manifest: sets.{}.files[{}].path \"{}\" must be relative, like datasets/gsm8k/test.jsonl", name, i,
           f.path);
    // effective_url() and the archive temp name take the part after the last '/' as the file name.
    const size_t host = f.url.find("://");
    const size_t slash = host == std::string::npos ? std::string::npos : f.url.find('/', host + 3);
    if (host == std::string::npos || host == 0 || slash == std::string::npos || slash == host + 3 ||
        f.url.back() == '/')
      fail("fetch manifest: sets.{}.files[{}].url \"{}\" must be a URL like https://host/path/file", name, i, f.url);
    if (f.sha256.size() != 64 || f.sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
      fail("fetch manifest: sets.{}.files[{}].sha256 must be 64 lowercase hex digits", name, i);
    out.push_back(std::move(f));
  }
  return out;
}

void fetch(const std::vector<std::string>& names, const FetchOptions& opt, std::ostream& log) {
  const nlohmann::json& manifest = opt.manifest.is_null() ? builtin_manifest() : opt.manifest;
  if (names.empty())
    fail("fetch: nothing to fetch; name one or more of: {}", fmt::join(fetch_names(manifest), ", "));
  const fs::path root = opt.dest_root.empty() ? cache_dir() : opt.dest_root;
  if (opt.mirror && !fs::is_directory(*opt.mirror))
    fail("{}: --mirror directory does not exist", opt.mirror->string());
  // Resolve every name first so a typo fails before anything is downloaded.
  std::vector<std::pair<std::string, std::vector<FetchFile>>> sets;
  for (const auto& name : names) sets.emplace_back(name, manifest_files(manifest, name));

  for (const auto& [name, files] : sets) {
    std::vector<FetchFile> todo;
    for (const auto& f : files)
      if (!already_present(root / f.path, f)) todo.push_back(f);
    log << fmt::format("{}: {} file(s), {} already present and verified, {} to fetch into {}\n", name, files.size(),
                       files.size() - todo.size(), todo.size(), root.string());
    if (todo.empty()) continue;

    if (opt.mirror) {
      for (const auto& f : todo) copy_from_mirror(mirror_source(*opt.mirror, f), root / f.path, f);
      log << fmt::format("{}: copied {} file(s) from {}, sha256 verified\n", name, todo.size(), opt.mirror->string());
      continue;
    }

    // Direct files one by one; archive members grouped by archive so each tar is fetched once.
    std::map<std::string, std::map<std::string, FetchFile>> archives;  // url -> member -> file
    for (const auto& f : todo) {
      if (!f.member.empty()) {
        archives[f.url][normalize_member(f.member)] = f;
        continue;
      }
      fs::path dest = root / f.path;
      std::string url = effective_url(f.url, opt);
      make_dirs(dest.parent_path());
      log << fmt::format("{}: downloading {} ({})\n", name, url, human_size(f.size));
      TempFile tmp(temp_path_for(dest));
      download(url, tmp.path(), opt, f.size, "the manifest lists");
      verify_and_commit(tmp, dest, f, url);
      log << fmt::format("{}: {} verified\n", name, dest.string());
    }
    for (const auto& [upstream, wanted] : archives) {
      std::string url = effective_url(upstream, opt);
      make_dirs(root);
      std::string base = upstream.substr(upstream.rfind('/') + 1);
      TempFile tmp(temp_path_for(root / base));
      log << fmt::format("{}: downloading {} to extract {} file(s)\n", name, url, wanted.size());
      download(url, tmp.path(), opt, opt.max_archive_bytes, "qeval accepts for a tar archive");
      extract_members(tmp.path(), url, wanted, root);
      log << fmt::format("{}: extracted {} file(s), sha256 verified\n", name, wanted.size());
    }
  }
}

nlohmann::json check_dataset_files(const std::vector<fs::path>& files) {
  // The manifest's dataset files by their path under the datasets root.
  std::map<std::string, std::string> published;
  const nlohmann::json& m = builtin_manifest();
  for (const auto& name : fetch_names(m))
    for (const FetchFile& f : manifest_files(m, name))
      if (f.path.rfind("datasets/", 0) == 0) published[f.path.substr(9)] = f.sha256;
  const fs::path root = datasets_root();
  nlohmann::json out = nlohmann::json::object();
  for (const fs::path& p : files) {
    const std::string rel = fs::relative(p, root).generic_string();
    if (out.contains(rel)) continue;
    const std::string sha = sha256_file(p);
    auto it = published.find(rel);
    out[rel] = {{"sha256", sha}, {"published", it != published.end() && it->second == sha}};
  }
  return out;
}

fs::path models_root() {
  if (const char* env = std::getenv("QEVAL_MODELS"); env && *env) return fs::path(env);
  return cache_dir() / "models";
}

fs::path model_file(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name.find("..") != std::string::npos)
    fail("model name \"{}\" is not a plain name like stories260K", name);
  fs::path p = models_root() / name / (name + ".gguf");
  if (!fs::is_regular_file(p)) {
    const char* env = std::getenv("QEVAL_MODELS");
    fail("{}: model {} not found (models root {}, {}); run `qeval fetch {}` (or `qeval fetch {} --mirror DIR` "
         "to copy from a local models tree), or point $QEVAL_MODELS at a models tree",
         p.string(), name, models_root().string(),
         env && *env ? "from $QEVAL_MODELS" : "the default; set $QEVAL_MODELS to use another tree", name, name);
  }
  return p;
}

std::string resolve_model_name(const std::string& model) {
  std::error_code ec;
  if (model.empty() || model.find('/') != std::string::npos || model.rfind("random:", 0) == 0 ||
      fs::exists(model, ec))
    return model;
  for (const auto& name : fetch_names(builtin_manifest()))
    if (name == model && name != "gsm8k" && name != "mmlu") return model_file(name).string();
  return model;
}

}  // namespace qeval
