// Core utilities: UTF-8 helpers, trimming, atomic writes, sha256, the thread pool.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/median.h"
#include "core/text.h"
#include "core/thread_pool.h"

using namespace qeval;

TEST_CASE("utf8 length, offsets and valid prefixes") {
  std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";  // a é € 😀 z
  CHECK(utf8_length(s) == 5);
  CHECK(utf8_byte_offset(s, 0) == 0);
  CHECK(utf8_byte_offset(s, 2) == 3);
  CHECK(utf8_byte_offset(s, 4) == 10);
  CHECK(utf8_byte_offset(s, 9) == s.size());
  CHECK(utf8_valid_prefix(s) == s.size());
  CHECK(utf8_valid_prefix(s.substr(0, 8)) == 6);  // the emoji is cut: held back
  CHECK(utf8_valid_prefix("\xFFok") == 3);        // invalid lead byte passes through
}

TEST_CASE("utf8_first_invalid: well-formed UTF-8 only (RFC 3629)") {
  constexpr size_t kOk = std::string_view::npos;
  CHECK(utf8_first_invalid("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z") == kOk);
  CHECK(utf8_first_invalid("") == kOk);
  CHECK(utf8_first_invalid("\xEF\xBF\xBF\xF4\x8F\xBF\xBF") == kOk);  // U+FFFF, U+10FFFF
  CHECK(utf8_first_invalid("ab\xFF") == 2);
  CHECK(utf8_first_invalid("\x80") == 0);              // a lone continuation byte
  CHECK(utf8_first_invalid("\xC0\x80") == 0);          // overlong NUL
  CHECK(utf8_first_invalid("\xE0\x80\x80") == 0);      // overlong
  CHECK(utf8_first_invalid("\xED\xA0\x80") == 0);      // a surrogate
  CHECK(utf8_first_invalid("\xF4\x90\x80\x80") == 0);  // past U+10FFFF
  CHECK(utf8_first_invalid("x\xC3") == 1);             // cut off at the end
  CHECK(utf8_first_invalid("\xE2\x82z") == 0);         // cut off before another character
  // Randomized against nlohmann::json, whose dump() rejects exactly the ill-formed strings.
  std::mt19937 rng(5);
  const unsigned char pool[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
  for (int t = 0; t < 20000; ++t) {
    std::string x(rng() % 6, '\0');
    for (char& c : x) c = static_cast<char>(pool[rng() % sizeof pool]);
    bool dump_ok = true;
    try {
      (void)nlohmann::json(x).dump();
    } catch (const nlohmann::json::exception&) {
      dump_ok = false;
    }
    INFO("bytes " << nlohmann::json(x).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    CHECK((utf8_first_invalid(x) == kOk) == dump_ok);
  }
}

TEST_CASE("trim and split") {
  CHECK(trim("  a b \n\t") == "a b");
  CHECK(trim("") == "");
  CHECK(split("a,,b", ',') == std::vector<std::string>{"a", "", "b"});
  CHECK(starts_with("abc", "ab"));
  CHECK(ends_with("abc", "bc"));
  CHECK_FALSE(ends_with("c", "bc"));
}

TEST_CASE("py_strip is Python's str.strip()") {
  // python3: "\u3000\xa0 a b \u2009\n".strip() -> 'a b'; "\u200bx".strip() -> '\u200bx' (not space)
  CHECK(py_strip("\xe3\x80\x80\xc2\xa0 a b \xe2\x80\x89\n") == "a b");
  CHECK(py_strip("\xe2\x80\x8bx") == "\xe2\x80\x8bx");
  CHECK(py_strip(" \x1c\x1f") == "");
  CHECK(py_strip("") == "");
  CHECK(py_strip("\xff  x \xc3") == "\xff  x \xc3");  // invalid bytes are not spaces
  CHECK(py_strip("x\xc2\x85") == "x");
  // rstrip(): "Answer:\n\u3000 " -> "Answer:"; a cut-off sequence at the end is not a space.
  CHECK(py_rstrip_size("Answer:\n\xe3\x80\x80 ") == 7);
  CHECK(py_rstrip_size(" a") == 2);
  CHECK(py_rstrip_size("a\xe3\x80") == 3);
  CHECK(py_rstrip_size("") == 0);
}

TEST_CASE("median: the middle value, or the mean of the two middle ones") {
  CHECK(median({}) == 0.0);
  CHECK(median({3.0}) == 3.0);
  CHECK(median({3.0, 1.0, 2.0}) == 2.0);
  CHECK(median({4.0, 1.0, 3.0, 2.0}) == 2.5);  // not 3: the upper middle is a best-of-two at n = 2
  CHECK(median({10.0, 20.0}) == 15.0);
}

TEST_CASE("sha256 of known strings") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("atomic write replaces the file and leaves no temp files") {
  fs::path d = fs::temp_directory_path() / ("qeval_core_" + std::to_string(::getpid()));
  fs::remove_all(d);
  write_file_atomic(d / "sub" / "f.txt", "one");
  write_file_atomic(d / "sub" / "f.txt", "two");
  CHECK(read_file(d / "sub" / "f.txt") == "two");
  CHECK(sha256_file(d / "sub" / "f.txt") == sha256_hex("two"));
  int n = 0;
  for (auto& e : fs::directory_iterator(d / "sub")) n += e.is_regular_file();
  CHECK(n == 1);
  CHECK_THROWS_WITH(read_file(d / "missing"), Catch::Contains("missing"));
  // A directory where a file is expected: one error naming it, with the reason.
  CHECK_THROWS_WITH(read_file(d / "sub"), Catch::Contains("sub: is a directory"));
  CHECK_THROWS_WITH(write_file_atomic(d / "sub", "x"), Catch::Contains("sub: cannot write it") &&
                                                           !Catch::Contains("Success"));
  n = 0;
  for (auto& e : fs::directory_iterator(d)) n += e.is_regular_file();
  CHECK(n == 0);  // no temp file left
  fs::remove_all(d);
}

TEST_CASE("thread pool covers every index exactly once, chunk i on thread i") {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::vector<int> owner(static_cast<size_t>(n), -1);
    pool.parallel_for(n, [&](int t, int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        hits[static_cast<size_t>(i)]++;
        owner[static_cast<size_t>(i)] = t;
      }
    });
    for (int64_t i = 0; i < n; ++i) CHECK(hits[static_cast<size_t>(i)] == 1);
    for (int64_t i = 1; i < n; ++i) CHECK(owner[static_cast<size_t>(i)] >= owner[static_cast<size_t>(i - 1)]);
  }
  std::atomic<int> calls{0};
  pool.run_on_all([&](int) { calls++; });
  CHECK(calls == 3);
}

TEST_CASE("thread pool, dynamic pieces: every index once, pieces of the grain, a slow thread does less") {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 7, 64, 1000})
      for (int64_t grain : {0, 1, 3, 16, 5000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> bad_piece{0};
        pool.parallel_for_dynamic(n, grain, [&](int t, int64_t b, int64_t e) {
          // Pieces start on a multiple of the grain and are the grain long, except the last;
          // one thread, or n <= grain: a single call over everything.
          const int64_t g = threads == 1 ? n : std::max<int64_t>(1, grain);
          if (t < 0 || t >= threads || b % g != 0 || !(e - b == g || (e == n && e - b <= g))) bad_piece++;
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        });
        CHECK(bad_piece == 0);
        for (int64_t i = 0; i < n; ++i) CHECK(hits[static_cast<size_t>(i)] == 1);
      }
  }
  // Thread 0 (the caller) is held up in its first piece until the other thread has taken every
  // remaining piece (up to 10 s): a slow thread does less of the work. (On a loaded machine
  // thread 1 may take all 40 before thread 0 starts: then thread 0 runs none.)
  ThreadPool pool(2);
  std::vector<int> pieces(2, 0);
  std::atomic<int> done{0};
  pool.parallel_for_dynamic(40, 1, [&](int t, int64_t, int64_t) {
    if (t == 0 && pieces[0] == 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (done.load() < 39 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    }
    pieces[static_cast<size_t>(t)]++;
    done++;
  });
  CHECK(pieces[0] <= 1);
  CHECK(pieces[0] + pieces[1] == 40);
}

TEST_CASE("thread pool, stealing pieces: every index once, own share in order, a slow thread's share is taken") {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 7, 64, 1000})
      for (int64_t grain : {0, 1, 3, 16, 5000}) {
        INFO("threads " << threads << " n " << n << " grain " << grain);
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> bad_piece{0};
        const int64_t g = std::max<int64_t>(1, grain), pieces = (n + g - 1) / g;
        std::vector<std::vector<int64_t>> own(static_cast<size_t>(threads));  // pieces of its own share, as run
        pool.parallel_for_stealing(n, grain, [&](int t, int64_t b, int64_t e) {
          const int64_t gg = threads == 1 ? n : g;
          if (t < 0 || t >= threads || b % gg != 0 || !(e - b == gg || (e == n && e - b <= gg))) {
            bad_piece++;
            return;
          }
          const int64_t p = b / g;
          if (p >= pieces * t / threads && p < pieces * (t + 1) / threads) own[static_cast<size_t>(t)].push_back(p);
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        });
        CHECK(bad_piece == 0);
        int64_t once = 0;
        for (int64_t i = 0; i < n; ++i) once += hits[static_cast<size_t>(i)] == 1;
        CHECK(once == n);
        // A thread's own pieces run in ascending order and from the start of its share on.
        for (int t = 0; t < threads && threads > 1; ++t) {
          const auto& v = own[static_cast<size_t>(t)];
          CHECK(std::is_sorted(v.begin(), v.end()));
          if (!v.empty()) CHECK(v.front() == pieces * t / threads);
        }
      }
  }
  // Thread 0 (the caller) is held up in its first piece until the other thread has taken every
  // remaining piece (up to 10 s): the other takes thread 0's share from its far end.
  ThreadPool pool(2);
  std::vector<std::vector<int64_t>> ran(2);
  std::atomic<int> done{0};
  pool.parallel_for_stealing(40, 1, [&](int t, int64_t b, int64_t) {
    if (t == 0 && ran[0].empty()) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (done.load() < 39 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    }
    ran[static_cast<size_t>(t)].push_back(b);
    done++;
  });
  // (On a loaded machine thread 1 may finish before thread 0 starts: then it ran piece 0 too.)
  const int64_t first_stolen = ran[0].empty() ? 0 : 1;
  if (!ran[0].empty()) CHECK(ran[0] == std::vector<int64_t>{0});
  std::vector<int64_t> want;
  for (int64_t p = 20; p < 40; ++p) want.push_back(p);             // its own share, in order
  for (int64_t p = 19; p >= first_stolen; --p) want.push_back(p);  // then thread 0's, from the far end
  CHECK(ran[1] == want);
}

TEST_CASE("thread pool: many back-to-back jobs and jobs after the workers fell asleep") {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    int64_t total = 0;
    std::vector<int64_t> part(static_cast<size_t>(threads), 0);
    for (int rep = 0; rep < 20000; ++rep) {
      pool.parallel_for(97, [&](int t, int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) part[static_cast<size_t>(t)] += i;
      });
      if (rep == 5000 || rep == 15000)  // longer than the spin window: workers sleep
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    for (int64_t p : part) total += p;
    CHECK(total == int64_t{20000} * (96 * 97 / 2));
  }
  // Destroyed while its workers sleep, and right after a job while they spin.
  { ThreadPool idle(3); std::this_thread::sleep_for(std::chrono::milliseconds(20)); }
  {
    ThreadPool busy(3);
    std::atomic<int> n{0};
    busy.run_on_all([&](int) { n++; });
    CHECK(n == 3);
  }
}

TEST_CASE("thread pool: a thread that cannot start is one Error, the started ones are joined (no hang)") {
  // Thread 5 of 8 fails as on EAGAIN: workers 1-4 are running (spinning or asleep) and must be
  // stopped before the half-built pool goes away.
  ThreadPool::fail_thread_start_for_testing(5);
  try {
    ThreadPool pool(8);
    FAIL("the pool started although its thread 5 could not");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK(what.find("cannot start 8 threads") != std::string::npos);
    CHECK(what.find("more than 5") != std::string::npos);
  }
  ThreadPool::fail_thread_start_for_testing(1);  // the first worker: nothing to join
  CHECK_THROWS_AS(ThreadPool(2), Error);
  ThreadPool::fail_thread_start_for_testing(0);
  ThreadPool pool(3);
  std::atomic<int> n{0};
  pool.run_on_all([&](int) { n++; });
  CHECK(n == 3);
}
