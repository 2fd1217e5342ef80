// safetensors reader and to_f32: values round-trip from fixture files, exact F16/BF16/E4M3
// decoding, and corrupt or truncated files give Error (never a crash).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "core/fs.h"
#include "engine/safetensors.h"
#include "fixtures_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

namespace {

std::string small_file(const fs::path& dir) {
  fx::FixtureTensor a{"a", {2, 3}, {1, 2, 3, 4, 5, 6}, "F32", {}};
  fx::FixtureTensor b{"b", {4}, {0.5f, -1.25f, 3.0f, 1e-3f}, "BF16", {}};
  fx::FixtureTensor c{"c", {3}, {}, "I8", {1, 0xFF, 0x80}};
  fx::FixtureTensor d{"d", {2, 2}, {}, "F8_E4M3", {0x38, 0x7E, 0x01, 0xB8}};
  auto p = dir / "small.safetensors";
  fx::write_safetensors(p, {&a, &b, &c, &d}, "F32", {{"format", "pt"}});
  return read_file(p);
}

// Builds a file from a header string and `data_bytes` zero bytes.
std::vector<uint8_t> build(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    SafetensorsFile::parse(bytes, "x.safetensors");
    FAIL("no error; expected one containing: " << needle);
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    CHECK(std::string(e.what()).find("x.safetensors") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("to_f32 decodes F16, BF16 and F8_E4M3 exactly", "[safetensors][unit]") {
  auto dec = [](DType t, std::vector<uint8_t> bytes) {
    std::vector<float> out(bytes.size() / dtype_size(t));
    to_f32_into(t, bytes.data(), out.size(), out.data());
    return out;
  };
  // e4m3: 1.0, 448 (max), 2^-9 (smallest subnormal), 2^-6 (smallest normal), 7*2^-9, -1, -0, NaN x2, 0.
  auto e = dec(DType::F8_E4M3, {0x38, 0x7E, 0x01, 0x08, 0x07, 0xB8, 0x80, 0x7F, 0xFF, 0x00, 0x77, 0x39});
  CHECK(e[0] == 1.0f);
  CHECK(e[1] == 448.0f);
  CHECK(e[2] == std::ldexp(1.0f, -9));
  CHECK(e[3] == std::ldexp(1.0f, -6));
  CHECK(e[4] == 7 * std::ldexp(1.0f, -9));
  CHECK(e[5] == -1.0f);
  CHECK((e[6] == 0.0f && std::signbit(e[6])));
  CHECK(std::isnan(e[7]));
  CHECK(std::isnan(e[8]));
  CHECK(e[9] == 0.0f);
  CHECK(e[10] == 240.0f);  // exp 14, mantissa 7: 1.875 * 2^7
  CHECK(e[11] == 1.125f);
  // f16: 1, smallest subnormal, -65504, inf, NaN, 2^-14.
  auto h = dec(DType::F16, {0x00, 0x3C, 0x01, 0x00, 0xFF, 0xFB, 0x00, 0x7C, 0x01, 0x7E, 0x00, 0x04});
  CHECK(h[0] == 1.0f);
  CHECK(h[1] == std::ldexp(1.0f, -24));
  CHECK(h[2] == -65504.0f);
  CHECK(std::isinf(h[3]));
  CHECK(std::isnan(h[4]));
  CHECK(h[5] == std::ldexp(1.0f, -14));
  auto b = dec(DType::BF16, {0x80, 0x3F, 0x49, 0xC0});
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == -3.140625f);
  TensorView iv{"ints", DType::I32, {1}, b.data(), 4};
  CHECK_THROWS_AS(to_f32(iv), Error);
}

TEST_CASE("safetensors reader returns every tensor with its values", "[safetensors][unit]") {
  auto dir = fx::temp_dir("st");
  small_file(dir);
  auto f = SafetensorsFile::open(dir / "small.safetensors");
  REQUIRE(f->tensors().size() == 4);
  CHECK(f->metadata().at("format") == "pt");
  const TensorView* a = f->find("a");
  REQUIRE(a);
  CHECK(a->shape == std::vector<int64_t>{2, 3});
  CHECK(to_f32(*a) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(to_f32(*f->find("b")) == std::vector<float>{0.5f, -1.25f, 3.0f, fx::fx_bf16_value(fx::fx_bf16_bits(1e-3f))});
  const TensorView* c = f->find("c");
  REQUIRE(c->dtype == DType::I8);
  CHECK(static_cast<const int8_t*>(c->data)[1] == -1);
  CHECK(to_f32(*f->find("d")) == std::vector<float>{1.0f, 448.0f, std::ldexp(1.0f, -9), -1.0f});
  CHECK(f->find("nope") == nullptr);
  fs::remove_all(dir);
}

TEST_CASE("safetensors reader rejects malformed headers with clear errors", "[safetensors][unit]") {
  expect_error({1, 2, 3}, "too short");
  expect_error(build("{", 0), "not valid JSON");
  expect_error(build("[1,2]", 0), "not an object");
  auto big = build("{}", 0);
  big[5] = 1;  // header size ~ 2^40
  expect_error(big, "exceeds");
  auto past = build("{}", 0);
  past[0] = 200;
  expect_error(past, "past the end");
  expect_error(build(R"({"t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8), "unsupported dtype F64");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "12 bytes but data_offsets span 8");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "run past");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", 8), "non-negative");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8), "overflow");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "end 0 < begin 8");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"u":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
               "overlaps");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "trailing");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[1]}})", 4), "data_offsets");
  expect_error(build(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4), "unknown field");
  expect_error(build(R"({"__metadata__":{"a":1}})", 0), "__metadata__");
  // A valid empty file and a scalar tensor are fine.
  CHECK(SafetensorsFile::parse(build("{}", 0), "e")->tensors().empty());
  CHECK(SafetensorsFile::parse(build(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4), "s")->find("s")->numel() == 1);
}

TEST_CASE("safetensors reader: every truncation and random mutation is an Error or a valid file", "[safetensors][unit]") {
  auto dir = fx::temp_dir("st");
  std::string good = small_file(dir);
  std::vector<uint8_t> bytes(good.begin(), good.end());
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    CHECK_THROWS_AS(SafetensorsFile::parse(cut, "cut"), Error);
  }
  std::mt19937 rng(7);
  int errors = 0, ok = 0;
  for (int i = 0; i < 3000; ++i) {
    auto m = bytes;
    int flips = 1 + rng() % 4;
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<uint8_t>(rng());
    try {
      auto f = SafetensorsFile::parse(m, "mut");
      for (const auto& t : f->tensors())
        if (t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16 || t.dtype == DType::F8_E4M3)
          to_f32(t);
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  CHECK(errors > 0);
  CHECK(ok > 0);  // flips inside the data section leave a valid file
  fs::remove_all(dir);
}

TEST_CASE("safetensors index json is validated", "[safetensors][unit]") {
  auto dir = fx::temp_dir("st");
  auto p = dir / "model.safetensors.index.json";
  write_file_atomic(p, R"({"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors","c":"m-1.safetensors"}})");
  auto idx = read_safetensors_index(p);
  CHECK(idx.files() == std::vector<std::string>{"m-1.safetensors", "m-2.safetensors"});
  write_file_atomic(p, R"({"weight_map":{"a":"../evil.safetensors"}})");
  CHECK_THROWS_WITH(read_safetensors_index(p), Catch::Contains("plain file name"));
  write_file_atomic(p, R"({"metadata":{}})");
  CHECK_THROWS_WITH(read_safetensors_index(p), Catch::Contains("weight_map"));
  CHECK_THROWS_AS(SafetensorsFile::open(dir / "missing.safetensors"), Error);
  fs::remove_all(dir);
}
