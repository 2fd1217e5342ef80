// `qeval fetch` against a loopback HTTP server (cpp-httplib) and a local mirror: downloads,
// tar extraction (a tar built here with libarchive), skip of verified files, sha256 failures,
// and atomicity (no partial or temp file is ever left behind).
#include <archive.h>
#include <sys/wait.h>
#include <unistd.h>
#include <archive_entry.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <httplib.h>
#include <fmt/format.h>

#include "core/error.h"
#include "core/fs.h"
#include "data/datasets.h"
#include "data/fetch.h"
#include "data_test_util.h"

using Catch::Matchers::Contains;
using qeval::test::EnvGuard;
using qeval::test::TempDir;
using qeval::test::write_bytes;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A tar archive (pax) holding `members` (name -> bytes), built in memory.
std::string make_tar(const std::map<std::string, std::string>& members) {
  std::string buf(1 << 20, '\0');
  size_t used = 0;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  for (const auto& [name, data] : members) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    REQUIRE(archive_write_data(a, data.data(), data.size()) == static_cast<la_ssize_t>(data.size()));
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  buf.resize(used);
  return buf;
}

// An HTTP server on 127.0.0.1 serving fixed bodies; counts requests per path.
class LoopbackServer {
 public:
  void serve(const std::string& path, std::string body) {
    svr_.Get(path, [this, path, body = std::move(body)](const httplib::Request&, httplib::Response& res) {
      ++hits_[path];
      res.set_content(body, "application/octet-stream");
    });
  }
  httplib::Server& raw() { return svr_; }
  void start() {
    port_ = svr_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    for (int i = 0; i < 200 && !svr_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~LoopbackServer() {
    svr_.stop();
    if (thread_.joinable()) thread_.join();
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/files"; }
  int hits(const std::string& path) { return hits_[path].load(); }
  int total_hits() {
    int n = 0;
    for (auto& [k, v] : hits_) n += v.load();
    return n;
  }
  void declare(const std::string& path) { hits_[path] = 0; }

 private:
  httplib::Server svr_;
  std::thread thread_;
  int port_ = -1;
  std::map<std::string, std::atomic<int>> hits_;
};

json file_entry(const std::string& path, const std::string& url, const std::string& content,
                const std::string& member = "") {
  json e = {{"path", path}, {"url", url}, {"sha256", qeval::sha256_hex(content)}, {"size", content.size()}};
  if (!member.empty()) e["member"] = member;
  return e;
}

// Regular files (not directories) below `dir`, as relative paths.
std::set<std::string> files_below(const fs::path& dir) {
  std::set<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

const std::string kTrain = "{\"question\": \"q1\", \"answer\": \"#### 1\"}\n{\"question\": \"q2\", \"answer\": \"#### 2\"}\n";
const std::string kDevCsv = "\"What, is\nit?\",a,b,c,d,A\r\n";
const std::string kTestCsv = "q,a,b,c,d,C";
const std::string kModel = std::string("GGUF\x03\0\0\0fake", 12);
// kTrain and kDevCsv with one byte changed: the manifest's size, another hash.
const std::string kTrainTampered = "{\"question\": \"q9\", \"answer\": \"#### 1\"}\n{\"question\": \"q2\", \"answer\": \"#### 2\"}\n";
const std::string kDevCsvTampered = "\"What, is\nit?\",a,b,c,d,B\r\n";
const std::string kUp = "https://upstream.invalid/some/path/";

// Fixture: a server with a jsonl, a tar with two wanted members and one other, and a manifest.
struct FetchFixture {
  std::atomic<uint64_t> endless_sent{0};  // before server: its handler writes here until it stops
  LoopbackServer server;
  TempDir dest;
  json manifest;
  std::string tar;

  FetchFixture() {
    tar = make_tar({{"data/dev/anatomy_dev.csv", kDevCsv},
                    {"data/test/anatomy_test.csv", kTestCsv},
                    {"data/README.txt", "not wanted"}});
    for (const char* p : {"/files/train.jsonl", "/files/data.tar", "/files/moved.jsonl", "/files/bad.jsonl"})
      server.declare(p);
    server.serve("/files/train.jsonl", kTrain);
    server.serve("/files/data.tar", tar);
    server.serve("/files/bad.jsonl", kTrainTampered);
    server.serve("/files/long.jsonl", kTrain + "and more");
    server.serve("/files/bomb.tar", make_tar({{"data/dev/anatomy_dev.csv", std::string(1 << 18, '0')}}));
    // An endless body without Content-Length (chunked): counts what it could send.
    server.raw().Get("/files/endless.jsonl", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/octet-stream", [this](size_t, httplib::DataSink& sink) {
        static const std::string chunk(1 << 16, 'x');
        if (endless_sent >= (uint64_t{64} << 20)) {
          sink.done();
          return true;
        }
        if (!sink.write(chunk.data(), chunk.size())) return false;
        endless_sent += chunk.size();
        return true;
      });
    });
    server.raw().Get("/files/moved.jsonl", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/files/train.jsonl");
    });
    server.raw().Get("/files/truncated.gguf", [](const httplib::Request&, httplib::Response& res) {
      res.set_content_provider(kModel.size() * 1000, "application/octet-stream",
                               [](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset > 0) return false;  // abort after the first chunk
                                 sink.write(kModel.data(), kModel.size());
                                 return true;
                               });
    });
    server.start();
    manifest = {{"version", 1},
                {"sets",
                 {{"gsm8k", {{"files", {file_entry("datasets/gsm8k/train.jsonl", kUp + "train.jsonl", kTrain)}}}},
                  {"mmlu",
                   {{"files",
                     {file_entry("datasets/mmlu/dev/anatomy_dev.csv", kUp + "data.tar", kDevCsv,
                                 "data/dev/anatomy_dev.csv"),
                      file_entry("datasets/mmlu/test/anatomy_test.csv", kUp + "data.tar", kTestCsv,
                                 "data/test/anatomy_test.csv")}}}},
                  {"redirected",
                   {{"files", {file_entry("datasets/gsm8k/test.jsonl", kUp + "moved.jsonl", kTrain)}}}},
                  {"bad", {{"files", {file_entry("datasets/gsm8k/train.jsonl", kUp + "bad.jsonl", kTrain)}}}},
                  {"missing", {{"files", {file_entry("datasets/gsm8k/train.jsonl", kUp + "nope.jsonl", kTrain)}}}},
                  {"truncated",
                   {{"files", {file_entry("models/m/m.gguf", kUp + "truncated.gguf", kModel)}}}},
                  {"toolong", {{"files", {file_entry("datasets/gsm8k/train.jsonl", kUp + "long.jsonl", kTrain)}}}},
                  {"endless", {{"files", {file_entry("datasets/gsm8k/train.jsonl", kUp + "endless.jsonl", kTrain)}}}},
                  {"badmember",
                   {{"files",
                     {file_entry("datasets/mmlu/dev/anatomy_dev.csv", kUp + "data.tar", kDevCsvTampered,
                                 "data/dev/anatomy_dev.csv")}}}},
                  {"bomb",
                   {{"files",
                     {file_entry("datasets/mmlu/dev/anatomy_dev.csv", kUp + "bomb.tar", kDevCsv,
                                 "data/dev/anatomy_dev.csv")}}}},
                  {"nomember",
                   {{"files",
                     {file_entry("datasets/mmlu/val/anatomy_val.csv", kUp + "data.tar", "x",
                                 "data/val/anatomy_val.csv")}}}}}}};
  }

  qeval::FetchOptions options() const {
    qeval::FetchOptions opt;
    opt.dest_root = dest.path();
    opt.base_url_override = server.base();
    opt.manifest = manifest;
    opt.connect_timeout_s = 5;
    opt.stall_timeout_s = 5;
    return opt;
  }
};

}  // namespace

TEST_CASE("fetch: downloads a file and tar members, verifies them, then skips them", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  qeval::fetch({"gsm8k", "mmlu"}, fx.options(), log);
  const fs::path root = fx.dest.path();
  CHECK(qeval::read_file(root / "datasets/gsm8k/train.jsonl") == kTrain);
  CHECK(qeval::read_file(root / "datasets/mmlu/dev/anatomy_dev.csv") == kDevCsv);
  CHECK(qeval::read_file(root / "datasets/mmlu/test/anatomy_test.csv") == kTestCsv);
  CHECK(files_below(root) == std::set<std::string>{"datasets/gsm8k/train.jsonl", "datasets/mmlu/dev/anatomy_dev.csv",
                                                   "datasets/mmlu/test/anatomy_test.csv"});
  CHECK(fx.server.hits("/files/train.jsonl") == 1);
  CHECK(fx.server.hits("/files/data.tar") == 1);  // one download for both members
  CHECK_THAT(log.str(), Contains("extracted 2 file(s)"));

  // The fetched tree loads with the dataset loaders.
  CHECK(qeval::load_gsm8k(root / "datasets/gsm8k/train.jsonl").size() == 2);
  CHECK(qeval::load_mmlu(root / "datasets/mmlu/dev/anatomy_dev.csv", "anatomy")[0]["question"] == "What, is\nit?");

  // Second run: everything present and verified, no request.
  std::ostringstream log2;
  qeval::fetch({"gsm8k", "mmlu"}, fx.options(), log2);
  CHECK(fx.server.total_hits() == 2);
  CHECK_THAT(log2.str(), Contains("1 already present and verified, 0 to fetch"));
  CHECK_THAT(log2.str(), Contains("2 already present and verified, 0 to fetch"));

  // A corrupted local copy is fetched again.
  write_bytes(root / "datasets/mmlu/test/anatomy_test.csv", "q,a,b,c,d,D");
  qeval::fetch({"mmlu"}, fx.options(), log2);
  CHECK(fx.server.hits("/files/data.tar") == 2);
  CHECK(qeval::read_file(root / "datasets/mmlu/test/anatomy_test.csv") == kTestCsv);
}

TEST_CASE("fetch: follows redirects", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  qeval::fetch({"redirected"}, fx.options(), log);
  CHECK(qeval::read_file(fx.dest.path() / "datasets/gsm8k/test.jsonl") == kTrain);
  CHECK(fx.server.hits("/files/train.jsonl") == 1);
}

TEST_CASE("fetch: sha256 mismatch names file and both hashes, leaves nothing", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  const std::string served = kTrainTampered;
  const fs::path dest = fx.dest.path() / "datasets/gsm8k/train.jsonl";
  REQUIRE_THROWS_WITH(qeval::fetch({"bad"}, fx.options(), log),
                      Contains(dest.string()) && Contains("sha256 mismatch") &&
                          Contains("expected " + qeval::sha256_hex(kTrain)) &&
                          Contains("got " + qeval::sha256_hex(served)));
  CHECK(files_below(fx.dest.path()).empty());
  CHECK(fx.server.hits("/files/bad.jsonl") == 1);
}

TEST_CASE("fetch: HTTP errors and broken transfers leave no file", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  REQUIRE_THROWS_WITH(qeval::fetch({"missing"}, fx.options(), log),
                      Contains("nope.jsonl") && Contains("HTTP 404"));
  CHECK(files_below(fx.dest.path()).empty());
  REQUIRE_THROWS_WITH(qeval::fetch({"truncated"}, fx.options(), log), Contains("truncated.gguf"));
  CHECK(files_below(fx.dest.path()).empty());
}

TEST_CASE("fetch: a body longer than the manifest's size is cut off there and leaves no file", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  const std::string limit = fmt::format("more than the {} bytes the manifest lists", kTrain.size());
  // With a Content-Length: refused before the body is written.
  REQUIRE_THROWS_WITH(qeval::fetch({"toolong"}, fx.options(), log),
                      Contains(fx.server.base() + "/long.jsonl") && Contains(limit));
  CHECK(files_below(fx.dest.path()).empty());
  // Without one (64 MiB, chunked): stopped after the first chunks, not read to the end.
  REQUIRE_THROWS_WITH(qeval::fetch({"endless"}, fx.options(), log),
                      Contains(fx.server.base() + "/endless.jsonl") && Contains(limit));
  CHECK(files_below(fx.dest.path()).empty());
  CHECK(fx.endless_sent < (uint64_t{16} << 20));
  // A tar larger than the archive cap.
  qeval::FetchOptions opt = fx.options();
  opt.max_archive_bytes = 1000;
  REQUIRE_THROWS_WITH(qeval::fetch({"mmlu"}, opt, log),
                      Contains(fx.server.base() + "/data.tar") && Contains("more than the 1000 bytes"));
  CHECK(files_below(fx.dest.path()).empty());
}

TEST_CASE("fetch: a tar member longer than the manifest's size is refused before it is read", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  REQUIRE_THROWS_WITH(qeval::fetch({"bomb"}, fx.options(), log),
                      Contains((fx.dest.path() / "datasets/mmlu/dev/anatomy_dev.csv").string()) &&
                          Contains("member data/dev/anatomy_dev.csv") && Contains("holds 262144 bytes") &&
                          Contains(fmt::format("the manifest lists {} bytes", kDevCsv.size())));
  CHECK(files_below(fx.dest.path()).empty());
}

TEST_CASE("fetch: tar member with a wrong hash or missing member is an error", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  REQUIRE_THROWS_WITH(qeval::fetch({"badmember"}, fx.options(), log),
                      Contains("anatomy_dev.csv") && Contains("sha256 mismatch") &&
                          Contains("got " + qeval::sha256_hex(kDevCsv)));
  CHECK(files_below(fx.dest.path()).empty());  // neither the member nor the downloaded tar
  REQUIRE_THROWS_WITH(qeval::fetch({"nomember"}, fx.options(), log),
                      Contains("member data/val/anatomy_val.csv not found in the archive"));
  CHECK(files_below(fx.dest.path()).empty());
}

TEST_CASE("fetch: unknown names fail before any download", "[fetch]") {
  FetchFixture fx;
  std::ostringstream log;
  REQUIRE_THROWS_WITH(qeval::fetch({"gsm8k", "gsm9k"}, fx.options(), log),
                      Contains("unknown name \"gsm9k\"") && Contains("gsm8k, missing, mmlu"));
  CHECK(fx.server.total_hits() == 0);
  REQUIRE_THROWS_WITH(qeval::fetch({}, fx.options(), log), Contains("nothing to fetch"));
}

TEST_CASE("fetch --mirror: copies and verifies from a local tree", "[fetch][mirror]") {
  TempDir mirror, dest;
  json manifest = {{"sets",
                    {{"gsm8k", {{"files", {file_entry("datasets/gsm8k/train.jsonl", kUp + "train.jsonl", kTrain)}}}},
                     {"mmlu",
                      {{"files",
                        {file_entry("datasets/mmlu/dev/anatomy_dev.csv", kUp + "data.tar", kDevCsv,
                                    "data/dev/anatomy_dev.csv")}}}},
                     {"m", {{"files", {file_entry("models/m/m.gguf", kUp + "m.gguf", kModel)}}}}}}};
  write_bytes(mirror.path() / "gsm8k/train.jsonl", kTrain);
  write_bytes(mirror.path() / "mmlu/dev/anatomy_dev.csv", kDevCsv);
  write_bytes(mirror.path() / "m/m.gguf", kModel);
  qeval::FetchOptions opt;
  opt.dest_root = dest.path();
  opt.mirror = mirror.path();
  opt.manifest = manifest;
  opt.base_url_override = "http://127.0.0.1:9/never-used";
  std::ostringstream log;
  qeval::fetch({"gsm8k", "mmlu", "m"}, opt, log);
  CHECK(qeval::read_file(dest.path() / "datasets/gsm8k/train.jsonl") == kTrain);
  CHECK(qeval::read_file(dest.path() / "datasets/mmlu/dev/anatomy_dev.csv") == kDevCsv);
  CHECK(qeval::read_file(dest.path() / "models/m/m.gguf") == kModel);
  CHECK(files_below(dest.path()).size() == 3);

  SECTION("a whole fetch destination is accepted as a mirror") {
    TempDir dest2;
    opt.dest_root = dest2.path();
    opt.mirror = dest.path();
    qeval::fetch({"gsm8k", "m"}, opt, log);
    CHECK(qeval::read_file(dest2.path() / "models/m/m.gguf") == kModel);
  }
  SECTION("a corrupted mirror file is rejected and not copied") {
    TempDir dest2;
    opt.dest_root = dest2.path();
    write_bytes(mirror.path() / "gsm8k/train.jsonl", kTrain + "\n");
    REQUIRE_THROWS_WITH(qeval::fetch({"gsm8k"}, opt, log),
                        Contains("sha256 mismatch") && Contains("got " + qeval::sha256_hex(kTrain + "\n")));
    CHECK(files_below(dest2.path()).empty());
  }
  SECTION("a file missing from the mirror is named") {
    TempDir dest2;
    opt.dest_root = dest2.path();
    fs::remove(mirror.path() / "mmlu/dev/anatomy_dev.csv");
    REQUIRE_THROWS_WITH(qeval::fetch({"mmlu"}, opt, log),
                        Contains((mirror.path() / "mmlu/dev/anatomy_dev.csv").string()) && Contains("not in the mirror"));
  }
  SECTION("temp files that killed fetches left are removed; a live process's are not") {
    TempDir dest2;
    opt.dest_root = dest2.path();
    const pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, nullptr, 0);  // a pid whose process is gone
    const fs::path dir = dest2.path() / "datasets/gsm8k";
    fs::create_directories(dir);
    write_bytes(dir / fmt::format(".train.jsonl.part.{}", child), "partial");
    write_bytes(dir / ".train.jsonl.part.1", "init's: alive");
    qeval::fetch({"gsm8k"}, opt, log);
    CHECK(qeval::read_file(dir / "train.jsonl") == kTrain);
    CHECK_FALSE(fs::exists(dir / fmt::format(".train.jsonl.part.{}", child)));
    CHECK(fs::exists(dir / ".train.jsonl.part.1"));
  }
  SECTION("a missing mirror directory is an error") {
    opt.mirror = mirror.path() / "nope";
    REQUIRE_THROWS_WITH(qeval::fetch({"gsm8k"}, opt, log), Contains("--mirror directory does not exist"));
  }
}

TEST_CASE("manifest: embedded copy agrees with datasets/manifest.json", "[manifest]") {
  json on_disk = json::parse(qeval::read_file(fs::path(QEVAL_SOURCE_DIR) / "datasets" / "manifest.json"));
  CHECK(on_disk == qeval::builtin_manifest());
}

TEST_CASE("manifest: covers GSM8K, all MMLU subjects and splits, stories260K", "[manifest]") {
  const json& m = qeval::builtin_manifest();
  CHECK(qeval::fetch_names(m) == std::vector<std::string>{"gsm8k", "mmlu", "stories260K"});
  auto g = qeval::manifest_files(m, "gsm8k");
  REQUIRE(g.size() == 2);
  CHECK(g[0].url == "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/train.jsonl");
  CHECK(g[0].sha256 == "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465");
  CHECK(g[1].path == "datasets/gsm8k/test.jsonl");
  auto mm = qeval::manifest_files(m, "mmlu");
  REQUIRE(mm.size() == 171);
  std::set<std::string> paths;
  for (const auto& f : mm) {
    CHECK(f.url == "https://people.eecs.berkeley.edu/~hendrycks/data.tar");
    CHECK(f.member == "data/" + f.path.substr(std::string("datasets/mmlu/").size()));
    paths.insert(f.path);
  }
  for (const auto& s : qeval::mmlu_subjects())
    for (const char* split : {"dev", "val", "test"})
      CHECK(paths.count(fmt::format("datasets/mmlu/{}/{}_{}.csv", split, s, split)) == 1);
  auto st = qeval::manifest_files(m, "stories260K");
  REQUIRE(st.size() == 1);
  CHECK(st[0].path == "models/stories260K/stories260K.gguf");
  CHECK(st[0].sha256 == "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d");
  CHECK(st[0].size == 1185376);
  REQUIRE_THROWS_WITH(qeval::manifest_files(m, "mmlu_pro"), Contains("unknown name \"mmlu_pro\""));
}

TEST_CASE("manifest: malformed entries are rejected", "[manifest]") {
  json m = {{"sets", {{"x", {{"files", {{{"path", "/abs/file"}, {"url", "https://h/u"}, {"sha256", std::string(64, 'a')}, {"size", 1}}}}}}}}};
  REQUIRE_THROWS_WITH(qeval::manifest_files(m, "x"), Contains("must be relative"));
  m["sets"]["x"]["files"][0]["path"] = "datasets/x";
  m["sets"]["x"]["files"][0]["sha256"] = "ABC";
  REQUIRE_THROWS_WITH(qeval::manifest_files(m, "x"), Contains("64 lowercase hex"));
  m["sets"]["x"]["files"][0]["sha256"] = std::string(64, 'a');
  // effective_url() and the archive temp name need a '/' before the file name.
  for (const char* url : {"nourl", "https://host", "https://host/dir/", "//host/f", "https:///f"}) {
    INFO(url);
    m["sets"]["x"]["files"][0]["url"] = url;
    REQUIRE_THROWS_WITH(qeval::manifest_files(m, "x"),
                        Contains(fmt::format("sets.x.files[0].url \"{}\" must be a URL like https://host/path/file", url)));
  }
  m["sets"]["x"]["files"][0]["url"] = "nourl";
  TempDir dest;
  qeval::FetchOptions opt;
  opt.dest_root = dest.path();
  opt.manifest = m;
  opt.base_url_override = "http://127.0.0.1:9/files";
  std::ostringstream log;
  REQUIRE_THROWS_AS(qeval::fetch({"x"}, opt, log), qeval::Error);  // was an uncaught std::out_of_range
  m["sets"]["x"]["files"][0]["url"] = "https://host/f";
  CHECK(qeval::manifest_files(m, "x")[0].url == "https://host/f");
  m["sets"]["x"]["files"][0].erase("size");
  REQUIRE_THROWS_WITH(qeval::manifest_files(m, "x"), Contains("size"));
}

TEST_CASE("models tree: root from $QEVAL_MODELS, model_file hint", "[paths]") {
  TempDir dir;
  {
    EnvGuard env("QEVAL_MODELS", std::nullopt);
    CHECK(qeval::models_root() == qeval::cache_dir() / "models");
  }
  EnvGuard env("QEVAL_MODELS", dir.path().string());
  CHECK(qeval::models_root() == dir.path());
  auto p = dir.path() / "stories260K" / "stories260K.gguf";
  REQUIRE_THROWS_WITH(qeval::model_file("stories260K"), Contains(p.string()) && Contains("qeval fetch stories260K"));
  write_bytes(p, kModel);
  CHECK(qeval::model_file("stories260K") == p);
  REQUIRE_THROWS_WITH(qeval::model_file("../x"), Contains("plain name"));
}

TEST_CASE("fetch --mirror with the real trees verifies the built-in manifest", "[fetch][data][model]") {
  const char* data = std::getenv("QEVAL_DATA");
  const char* models = std::getenv("QEVAL_MODELS");
  if (!data || !*data) WARN("QEVAL_DATA not set: skipping the datasets half");
  if (!models || !*models) WARN("QEVAL_MODELS not set: skipping the models half");
  TempDir dest;
  qeval::FetchOptions opt;
  opt.dest_root = dest.path();
  std::ostringstream log;
  if (data && *data) {
    opt.mirror = fs::path(data);
    qeval::fetch({"gsm8k", "mmlu"}, opt, log);
    CHECK(files_below(dest.path() / "datasets").size() == 173);
    EnvGuard env("QEVAL_DATA", (dest.path() / "datasets").string());
    CHECK(qeval::load_gsm8k(qeval::gsm8k_file("test")).size() == 1319);
  }
  if (models && *models) {
    opt.mirror = fs::path(models);
    qeval::fetch({"stories260K"}, opt, log);
    CHECK(qeval::sha256_file(dest.path() / "models/stories260K/stories260K.gguf") ==
          "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d");
  }
}
