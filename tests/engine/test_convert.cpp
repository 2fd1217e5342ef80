// Converter and safetensors writer: DeepSeek-V3-style MoE names and odd shapes, every target
// checked bit for bit against plain reference formulas written here (independent of quant.h),
// FP8 -> BF16 -> INT8 chains, resume per shard, --verify catching a corrupted shard, and the
// converted checkpoints loading back through Checkpoint.
#include <catch2/catch.hpp>

#include <cmath>
#include <chrono>
#include <cstring>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/fs.h"
#include "engine/checkpoint.h"
#include "engine/convert.h"
#include "engine/engine.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"
#include "fixtures_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

namespace {

// ---- reference formulas (plain, slow, independent) -------------------------------------

float e4m3_value(int code) {
  int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return NAN;
  float v = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.0f + m / 8.0f, e - 7);
  return s ? -v : v;
}
// Nearest e4m3 code to v (|v| <= 448), ties to the even code (even mantissa).
uint8_t e4m3_nearest(float v) {
  int best = 0;
  double best_d = INFINITY;
  for (int c = 0; c < 256; ++c) {
    float x = e4m3_value(c);
    if (std::isnan(x) || (c == 0x80)) continue;  // prefer +0 for zero
    double d = std::fabs(double(x) - double(v));
    if (d < best_d || (d == best_d && (c & 1) == 0 && (best & 1) == 1)) {
      best = c;
      best_d = d;
    }
  }
  if (best == 0 && std::signbit(v)) best = 0x80;
  return static_cast<uint8_t>(best);
}
int8_t int8_ref(float v) {
  float r = std::nearbyint(v);  // default rounding mode: nearest even
  return static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, r)));
}
float bf16_ref(float x) { return fx::fx_bf16_value(fx::fx_bf16_bits(x)); }

struct RefQuant {
  std::vector<uint8_t> q;
  std::vector<float> s;
};
// scheme: "fp8-block" | "int8-block" | "int8-channel"; w [N, K].
RefQuant ref_quantize(const std::vector<float>& w, int64_t N, int64_t K, const std::string& scheme) {
  RefQuant r;
  r.q.resize(N * K);
  const bool fp8 = scheme == "fp8-block";
  const float Q = fp8 ? 448.0f : 127.0f;
  const int64_t bn = scheme == "int8-channel" ? 1 : 128, bk = scheme == "int8-channel" ? K : 128;
  const int64_t nb = (N + bn - 1) / bn, kb = (K + bk - 1) / bk;
  r.s.resize(nb * kb);
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = 0; j < kb; ++j) {
      float amax = 0;
      for (int64_t n = i * bn; n < std::min(N, (i + 1) * bn); ++n)
        for (int64_t k = j * bk; k < std::min(K, (j + 1) * bk); ++k) amax = std::max(amax, std::fabs(w[n * K + k]));
      float s = amax == 0 ? 1.0f : amax / Q;
      r.s[i * kb + j] = s;
      for (int64_t n = i * bn; n < std::min(N, (i + 1) * bn); ++n)
        for (int64_t k = j * bk; k < std::min(K, (j + 1) * bk); ++k) {
          float v = w[n * K + k] / s;
          r.q[n * K + k] = fp8 ? e4m3_nearest(std::max(-448.0f, std::min(448.0f, v)))
                               : static_cast<uint8_t>(int8_ref(v));
        }
    }
  return r;
}

std::vector<uint8_t> bytes_of(const TensorView& t) {
  const auto* p = static_cast<const uint8_t*>(t.data);
  return {p, p + t.nbytes};
}
std::vector<float> floats_of(const TensorView& t) { return to_f32(t); }

// A DeepSeek-V3-flavoured checkpoint: MoE expert names, a router, odd shapes, an all-zero block.
std::map<std::string, fx::FixtureTensor> write_moe_fixture(const fs::path& dir, const std::string& dtype, int shards) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::map<std::string, fx::FixtureTensor> ts;
  std::vector<std::string> order;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    fx::FixtureTensor t{name, shape, std::vector<float>(n), "", {}};
    for (auto& v : t.values) v = nd(rng);
    ts[name] = t;
    order.push_back(name);
  };
  add("model.embed_tokens.weight", {300, 200});
  add("model.layers.0.input_layernorm.weight", {200});
  add("model.layers.0.self_attn.q_proj.weight", {200, 200});
  add("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {72, 200});
  add("model.layers.0.self_attn.kv_a_layernorm.weight", {72});
  add("model.layers.3.mlp.gate.weight", {8, 200});
  add("model.layers.3.mlp.gate.e_score_correction_bias", {8});
  add("model.layers.3.mlp.experts.7.gate_proj.weight", {130, 200});
  add("model.layers.3.mlp.experts.7.down_proj.weight", {200, 130});
  add("model.layers.3.mlp.shared_experts.up_proj.weight", {257, 129});
  add("model.norm.weight", {200});
  add("lm_head.weight", {300, 200});
  // All-zero 128x128 block and an all-zero row in q_proj; one large outlier.
  auto& q = ts["model.layers.0.self_attn.q_proj.weight"].values;
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < 128; ++k) q[n * 200 + k] = 0.0f;
  for (int k = 0; k < 200; ++k) q[150 * 200 + k] = 0.0f;
  q[199 * 200 + 199] = 3.0f;
  ts["model.layers.3.mlp.gate.e_score_correction_bias"].dtype = "F32";
  nlohmann::json wm;
  size_t per = (order.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    std::string fname = shards == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards);
    std::vector<fx::FixtureTensor*> part;
    for (size_t i = s * per; i < std::min(order.size(), (s + 1) * per); ++i) {
      part.push_back(&ts[order[i]]);
      wm[order[i]] = fname;
    }
    fx::write_safetensors(dir / fname, part, dtype);
  }
  if (shards > 1) write_file_atomic(dir / "model.safetensors.index.json", nlohmann::json{{"weight_map", wm}}.dump());
  write_file_atomic(dir / "config.json",
                    nlohmann::json{{"architectures", {"DeepseekV3ForCausalLM"}}, {"hidden_size", 200}}.dump());
  write_file_atomic(dir / "tokenizer.json", "{\"fake\": true}");
  write_file_atomic(dir / "generation_config.json", "{}");
  return ts;
}

const std::vector<std::string> kQuantized = {
    "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
    "model.layers.3.mlp.experts.7.gate_proj.weight", "model.layers.3.mlp.experts.7.down_proj.weight",
    "model.layers.3.mlp.shared_experts.up_proj.weight"};

struct OutDir {
  std::map<std::string, TensorView> t;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  nlohmann::json config;
};
OutDir read_out(const fs::path& dir) {
  OutDir o;
  auto idx = read_safetensors_index(dir / "model.safetensors.index.json");
  for (const auto& f : idx.files()) {
    o.files.push_back(SafetensorsFile::open(dir / f));
    for (const auto& t : o.files.back()->tensors()) o.t[t.name] = t;
  }
  CHECK(o.t.size() == idx.weight_map.size());
  o.config = nlohmann::json::parse(read_file(dir / "config.json"));
  return o;
}

ConvertOptions opts(const fs::path& in, const fs::path& out, const std::string& to) {
  ConvertOptions o;
  o.in = in;
  o.out = out;
  o.to = to;
  o.progress = false;
  o.shard_bytes = 60000;  // several shards even for the small fixture
  return o;
}

}  // namespace

TEST_CASE("safetensors writer streams tensors and renames atomically", "[convert][unit]") {
  auto dir = fx::temp_dir("stw");
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {0x3F80, 0x4000};
  {
    SafetensorsWriter w(dir / "x.safetensors", {{"a", DType::F32, {2, 3}}, {"empty", DType::I8, {0}}, {"b", DType::BF16, {2}}},
                        {{"format", "pt"}});
    CHECK(w.current() == "a");
    w.append(a.data(), 8);
    CHECK_THROWS_AS(w.write("b", b.data(), 4), Error);  // out of order
    w.append(a.data() + 2, 16);
    CHECK(!fs::exists(dir / "x.safetensors"));
    w.write("b", b.data(), 4);
    CHECK_THROWS_AS(w.append(b.data(), 1), Error);  // past the end
    w.finish();
  }
  auto f = SafetensorsFile::open(dir / "x.safetensors");
  CHECK(to_f32(*f->find("a")) == a);
  CHECK(to_f32(*f->find("b")) == std::vector<float>{1.0f, 2.0f});
  CHECK(f->find("empty")->nbytes == 0);
  CHECK(f->metadata().at("format") == "pt");
  CHECK(f->data_start() % 8 == 0);
  {
    SafetensorsWriter w(dir / "y.safetensors", {{"a", DType::F32, {2}}});
    w.append(a.data(), 4);
    CHECK_THROWS_AS(w.finish(), Error);  // incomplete
  }
  CHECK(!fs::exists(dir / "y.safetensors"));
  CHECK(!fs::exists(dir / "y.safetensors.partial"));
  fs::remove_all(dir);
}

TEST_CASE("convert: every target matches the reference formulas bit for bit", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  auto src = write_moe_fixture(dir / "in", "BF16", 2);
  for (std::string to : {"int8-block", "int8-channel", "fp8-block", "bf16"}) {
    DYNAMIC_SECTION(to) {
      auto o = opts(dir / "in", dir / to, to);
      o.verify = true;
      ConvertStats st = convert_checkpoint(o);
      CHECK(st.n_shards > 1);
      CHECK(st.n_quantized == (to == "bf16" ? 0 : 5));
      OutDir out = read_out(dir / to);
      CHECK(read_file(dir / to / "tokenizer.json") == "{\"fake\": true}");
      CHECK(fs::exists(dir / to / "generation_config.json"));
      CHECK(out.config["architectures"][0] == "DeepseekV3ForCausalLM");
      if (to == "bf16") {
        CHECK(!out.config.contains("quantization_config"));
      } else {
        CHECK(out.config["quantization_config"]["quant_method"] ==
              (to == "fp8-block" ? "fp8" : to == "int8-block" ? "blockwise_int8" : "w8a8_int8"));
      }
      for (const auto& [name, t] : src) {
        INFO(to << " " << name);
        REQUIRE(out.t.count(name));
        const TensorView& ov = out.t.at(name);
        CHECK(ov.shape == t.shape);
        const bool q = to != "bf16" && std::find(kQuantized.begin(), kQuantized.end(), name) != kQuantized.end();
        if (!q) {
          // Unquantised tensors keep their values (BF16 sources stay BF16; the F32 bias stays
          // F32 except in bf16 mode).
          CHECK(floats_of(ov) == (to == "bf16" ? [&] { auto v = t.values; for (auto& x : v) x = bf16_ref(x); return v; }() : t.values));
          const std::string base = name.substr(0, name.size() - 7);
          CHECK(!out.t.count(base + ".weight_scale_inv"));
          CHECK(!out.t.count(base + ".weight_scale"));
          continue;
        }
        RefQuant r = ref_quantize(t.values, t.shape[0], t.shape[1], to);
        CHECK(ov.dtype == (to == "fp8-block" ? DType::F8_E4M3 : DType::I8));
        CHECK(bytes_of(ov) == r.q);
        const std::string base = name.substr(0, name.size() - 7);
        const std::string sname = base + (to == "int8-channel" ? ".weight_scale" : ".weight_scale_inv");
        REQUIRE(out.t.count(sname));
        const TensorView& sv = out.t.at(sname);
        std::vector<int64_t> es = to == "int8-channel" ? std::vector<int64_t>{t.shape[0], 1}
                                                       : std::vector<int64_t>{(t.shape[0] + 127) / 128, (t.shape[1] + 127) / 128};
        CHECK(sv.shape == es);
        CHECK(floats_of(sv) == r.s);
      }
      // The all-zero block / row got scale 1.
      const auto& qs = out.t;
      if (to == "int8-channel") CHECK(floats_of(qs.at("model.layers.0.self_attn.q_proj.weight_scale"))[150] == 1.0f);
      if (to == "int8-block" || to == "fp8-block")
        CHECK(floats_of(qs.at("model.layers.0.self_attn.q_proj.weight_scale_inv"))[0] == 1.0f);
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("convert: FP8 -> BF16 -> INT8 chain and FP8 -> INT8 agree", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  auto src = write_moe_fixture(dir / "in", "F32", 1);
  convert_checkpoint(opts(dir / "in", dir / "fp8", "fp8-block"));
  auto fp8 = read_out(dir / "fp8");
  auto o = opts(dir / "fp8", dir / "bf16", "bf16");
  o.verify = true;
  convert_checkpoint(o);
  auto bf = read_out(dir / "bf16");
  CHECK(!bf.config.contains("quantization_config"));
  CHECK(bf.config["torch_dtype"] == "bfloat16");
  for (const auto& name : kQuantized) {
    INFO(name);
    const TensorView& w = fp8.t.at(name);
    const TensorView& s = fp8.t.at(name + "_scale_inv");
    auto q = bytes_of(w);
    auto sv = floats_of(s);
    const int64_t K = w.shape[1], kb = s.shape[1];
    std::vector<float> expect(q.size());
    for (size_t i = 0; i < q.size(); ++i)
      expect[i] = bf16_ref(e4m3_value(q[i]) * sv[(i / K / 128) * kb + (i % K) / 128]);
    CHECK(bf.t.at(name).dtype == DType::BF16);
    CHECK(floats_of(bf.t.at(name)) == expect);
    CHECK(!bf.t.count(name + "_scale_inv"));
  }
  // From FP8 only the FP8 weights become BF16; the other tensors stay as they are (F32 here),
  // as DeepSeek's fp8_cast_bf16 leaves them.
  CHECK(bf.t.at("model.embed_tokens.weight").dtype == DType::F32);
  CHECK(bytes_of(bf.t.at("model.layers.3.mlp.gate.e_score_correction_bias")) ==
        bytes_of(fp8.t.at("model.layers.3.mlp.gate.e_score_correction_bias")));
  convert_checkpoint(opts(dir / "bf16", dir / "int8a", "int8-block"));
  convert_checkpoint(opts(dir / "fp8", dir / "int8b", "int8-block"));
  auto a = read_out(dir / "int8a"), b = read_out(dir / "int8b");
  for (const auto& name : kQuantized) {
    INFO(name);
    CHECK(bytes_of(a.t.at(name)) == bytes_of(b.t.at(name)));
    CHECK(bytes_of(a.t.at(name + "_scale_inv")) == bytes_of(b.t.at(name + "_scale_inv")));
    auto r = ref_quantize(floats_of(bf.t.at(name)), a.t.at(name).shape[0], a.t.at(name).shape[1], "int8-block");
    CHECK(bytes_of(a.t.at(name)) == r.q);
  }
  // FP8 -> FP8 keeps the tensors as they are.
  convert_checkpoint(opts(dir / "fp8", dir / "fp8b", "fp8-block"));
  auto f2 = read_out(dir / "fp8b");
  for (const auto& [name, t] : fp8.t) CHECK(bytes_of(f2.t.at(name)) == bytes_of(t));
  fs::remove_all(dir);
}

TEST_CASE("convert: an FP8 weight whose weight_scale_inv lies in another shard", "[convert][unit]") {
  // The index may put a weight and its scale in different files; the converter must read each
  // from its own file. Re-shard a one-file FP8 checkpoint so every scale is in the second file.
  auto dir = fx::temp_dir("conv");
  write_moe_fixture(dir / "in", "F32", 1);
  auto o1 = opts(dir / "in", dir / "fp8", "fp8-block");
  o1.shard_bytes = 1ull << 30;
  convert_checkpoint(o1);
  auto fp8 = read_out(dir / "fp8");
  fs::create_directories(dir / "split");
  std::vector<TensorSpec> a, b;
  nlohmann::json wm;
  for (const auto& [name, v] : fp8.t) {
    const bool scale = name.size() > 10 && name.compare(name.size() - 10, 10, "_scale_inv") == 0;
    (scale ? b : a).push_back({name, v.dtype, v.shape});
    wm[name] = scale ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  for (auto [file, specs] : {std::pair{"model-00001-of-00002.safetensors", a}, std::pair{"model-00002-of-00002.safetensors", b}}) {
    SafetensorsWriter w(dir / "split" / file, specs);
    for (const auto& sp : specs) w.append(fp8.t.at(sp.name).data, fp8.t.at(sp.name).nbytes);
    w.finish();
  }
  write_file_atomic(dir / "split" / "model.safetensors.index.json", nlohmann::json{{"weight_map", wm}}.dump());
  fs::copy_file(dir / "fp8" / "config.json", dir / "split" / "config.json");
  for (std::string to : {"bf16", "int8-block", "int8-channel", "fp8-block"}) {
    INFO(to);
    auto x = opts(dir / "fp8", dir / ("x" + to), to), y = opts(dir / "split", dir / ("y" + to), to);
    y.verify = true;
    convert_checkpoint(x);
    convert_checkpoint(y);
    auto ox = read_out(dir / ("x" + to)), oy = read_out(dir / ("y" + to));
    REQUIRE(ox.t.size() == oy.t.size());
    for (const auto& [name, v] : ox.t) {
      INFO(name);
      REQUIRE(oy.t.count(name));
      CHECK(bytes_of(oy.t.at(name)) == bytes_of(v));
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("convert: FP8 input quantises exactly its scaled weights; checks the index and dtypes", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  write_moe_fixture(dir / "in", "F32", 1);
  convert_checkpoint(opts(dir / "in", dir / "fp8", "fp8-block"));
  // Make a DeepSeek-like FP8 checkpoint with a BF16 weight that has no scale (an MTP eh_proj)
  // and DeepSeek's MTP output head: neither is quantised by any target.
  auto fp8 = read_out(dir / "fp8");
  std::vector<float> extra(130 * 200, 0.25f);
  extra[7] = -1.5f;
  fx::FixtureTensor eh{"model.layers.61.eh_proj.weight", {130, 200}, extra, "", {}};
  fx::FixtureTensor hd{"model.layers.61.shared_head.head.weight", {130, 200}, extra, "", {}};
  fx::write_safetensors(dir / "fp8" / "extra.safetensors", {&eh, &hd}, "BF16");
  auto idx = nlohmann::json::parse(read_file(dir / "fp8" / "model.safetensors.index.json"));
  idx["weight_map"][eh.name] = "extra.safetensors";
  idx["weight_map"][hd.name] = "extra.safetensors";
  write_file_atomic(dir / "fp8" / "model.safetensors.index.json", idx.dump());
  for (std::string to : {"int8-block", "int8-channel", "fp8-block"}) {
    INFO(to);
    convert_checkpoint(opts(dir / "fp8", dir / to, to));
    auto out = read_out(dir / to);
    for (const auto* t : {&eh, &hd}) {
      CHECK(out.t.at(t->name).dtype == DType::BF16);
      CHECK(!out.t.count(t->name.substr(0, t->name.size() - 7) + ".weight_scale_inv"));
      CHECK(!out.t.count(t->name.substr(0, t->name.size() - 7) + ".weight_scale"));
    }
    CHECK(out.t.at("model.layers.0.self_attn.q_proj.weight").dtype ==
          (to == "fp8-block" ? DType::F8_E4M3 : DType::I8));
  }
  CHECK(!is_quantizable_weight("model.layers.61.shared_head.head.weight", 2));
  // A tensor of a shard that the index does not list is an error, not silently dropped.
  idx["weight_map"].erase(hd.name);
  write_file_atomic(dir / "fp8" / "model.safetensors.index.json", idx.dump());
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "fp8", dir / "o1", "bf16")),
                    Catch::Contains("shared_head.head.weight is not in the index"));
  CHECK(!fs::exists(dir / "o1"));
  // An integer weight in an unquantised checkpoint is an error, not copied without a scale.
  fx::FixtureTensor iw{"model.layers.0.mlp.up_proj.weight", {4, 8}, {}, "I8", std::vector<uint8_t>(32, 1)};
  fs::create_directories(dir / "i8");
  fx::write_safetensors(dir / "i8" / "model.safetensors", {&iw}, "F32");
  write_file_atomic(dir / "i8" / "config.json", "{}");
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "i8", dir / "o2", "int8-block")), Catch::Contains("dtype I8"));
  fs::remove_all(dir);
}

TEST_CASE("convert: other files, subfolders included, are copied; a failed first run leaves no output", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  write_moe_fixture(dir / "in", "BF16", 2);
  write_file_atomic(dir / "in" / "inference" / "model.py", "print(1)\n");
  write_file_atomic(dir / "in" / ".qeval_convert", "0123456789abcdef\n");  // an earlier conversion's marker
  write_file_atomic(dir / "in" / "vocab.json.tmp.1.2", "junk");
  convert_checkpoint(opts(dir / "in", dir / "out", "int8-block"));
  CHECK(read_file(dir / "out" / "inference" / "model.py") == "print(1)\n");
  CHECK(!fs::exists(dir / "out" / "vocab.json.tmp.1.2"));
  CHECK(read_file(dir / "out" / ".qeval_convert") != "0123456789abcdef\n");
  // The same command again (say with --verify) resumes its own output; `--in` spelled another
  // way is the same conversion.
  auto again = opts(dir / "in" / "." , dir / "out", "int8-block");
  again.verify = true;
  ConvertStats st = convert_checkpoint(again);
  CHECK(st.n_shards_skipped == st.n_shards);
  for (const auto& e : fs::recursive_directory_iterator(dir / "out"))
    CHECK(e.path().filename().string().find("qeval-tmp") == std::string::npos);
  // A NaN in a weight: the first run fails before any shard is complete and removes its output.
  fx::FixtureTensor bad{"model.layers.0.mlp.up_proj.weight", {4, 8}, std::vector<float>(32, 1.0f), "", {}};
  bad.values[5] = std::numeric_limits<float>::quiet_NaN();
  fs::create_directories(dir / "nan");
  fx::write_safetensors(dir / "nan" / "model.safetensors", {&bad}, "F32");
  write_file_atomic(dir / "nan" / "config.json", "{}");
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "nan", dir / "o3", "int8-channel")), Catch::Contains("not finite"));
  CHECK(!fs::exists(dir / "o3"));
  // An empty --out the user made is emptied again, not removed.
  fs::create_directories(dir / "o4");
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "nan", dir / "o4", "int8-channel")), Catch::Contains("not finite"));
  CHECK(fs::is_directory(dir / "o4"));
  CHECK(fs::is_empty(dir / "o4"));
  fs::remove_all(dir);
}

TEST_CASE("quantisers give scale 1, not 0, when amax / Q underflows", "[convert][unit]") {
  // amax = 2^-149 (the least subnormal): amax / 127 rounds to 0 in f32.
  std::vector<float> w(40, 0.0f);
  w[3] = std::ldexp(1.0f, -149);
  for (QuantScheme sc : {QuantScheme::Fp8Block, QuantScheme::Int8Block, QuantScheme::Int8Channel}) {
    INFO(quant_scheme_name(sc));
    QuantizedWeight ref = quantize_weight(w.data(), 1, 40, sc);
    CHECK(ref.scale[0] == 1.0f);
    for (uint8_t q : ref.q) CHECK(q == 0);
    std::vector<uint8_t> q(40);
    std::vector<float> s(1);
    CHECK(quantize_rows(w.data(), 1, 40, static_cast<int>(sc), q.data(), s.data()));
    CHECK(q == ref.q);
    CHECK(s[0] == 1.0f);
  }
}

TEST_CASE("convert: resumes per shard and --verify catches a corrupted shard", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  write_moe_fixture(dir / "in", "BF16", 1);
  auto o = opts(dir / "in", dir / "out", "int8-block");
  ConvertStats a = convert_checkpoint(o);
  REQUIRE(a.n_shards >= 3);
  CHECK(a.n_shards_skipped == 0);
  CHECK(a.bytes_converted == a.bytes_in);
  ConvertStats b = convert_checkpoint(o);
  CHECK(b.n_shards_skipped == a.n_shards);
  CHECK(b.bytes_converted == 0);  // the rates divide only what this run converted
  // A missing shard (and a leftover partial file) is rewritten; the others are reused.
  auto idx = read_safetensors_index(dir / "out" / "model.safetensors.index.json");
  auto files = idx.files();
  fs::remove(dir / "out" / files[1]);
  write_file_atomic(dir / "out" / (files[1] + ".partial"), "junk");
  ConvertStats c = convert_checkpoint(o);
  CHECK(c.n_shards_skipped == a.n_shards - 1);
  CHECK(c.bytes_converted > 0);
  CHECK(c.bytes_converted < a.bytes_in);
  CHECK(fs::exists(dir / "out" / files[1]));
  CHECK(!fs::exists(dir / "out" / (files[1] + ".partial")));
  // Another target, another shard size or changed inputs into the same directory are refused,
  // and leave it as it was.
  const auto index = dir / "out" / "model.safetensors.index.json";
  auto o2 = opts(dir / "in", dir / "out", "int8-channel");
  CHECK_THROWS_WITH(convert_checkpoint(o2), Catch::Contains(".qeval_convert") && Catch::Contains("new --out"));
  auto o3 = o;
  o3.shard_bytes = 1 << 20;
  CHECK_THROWS_WITH(convert_checkpoint(o3), Catch::Contains("another shard size"));
  const auto input = dir / "in" / "model.safetensors";
  const auto mtime = fs::last_write_time(input);
  fs::last_write_time(input, mtime + std::chrono::seconds(1));
  CHECK_THROWS_WITH(convert_checkpoint(o), Catch::Contains("other inputs"));
  fs::last_write_time(input, mtime);
  CHECK(fs::exists(index));
  CHECK(convert_checkpoint(o).n_shards_skipped == a.n_shards);
  // A non-empty directory that holds no conversion is refused too.
  fs::create_directories(dir / "other");
  write_file_atomic(dir / "other" / "notes.txt", "mine");
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir / "other", "int8-block")), Catch::Contains("not empty"));
  CHECK(!fs::exists(dir / "other" / "model.safetensors.index.json"));
  // Flip one data byte of a finished shard: the header still matches (so it is reused), and
  // the verify pass must notice, remove that shard and leave no index; the next run remakes it.
  auto path = dir / "out" / files[0];
  std::string bytes = read_file(path);
  bytes[bytes.size() - 3] ^= 0x55;
  write_file_atomic(path, bytes);
  o.verify = true;
  CHECK_THROWS_WITH(convert_checkpoint(o), Catch::Contains("verify") && Catch::Contains(files[0]));
  CHECK(!fs::exists(path));
  CHECK(!fs::exists(index));
  ConvertStats e = convert_checkpoint(o);
  CHECK(e.n_shards_skipped == a.n_shards - 1);
  CHECK(e.n_quantized == a.n_quantized);  // counted over reused shards too
  CHECK(fs::exists(index));
  fs::remove_all(dir);
}

TEST_CASE("convert: a weight to quantise that holds inf or NaN is an error naming it", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  fs::create_directories(dir / "in");
  fx::FixtureTensor w{"model.layers.0.mlp.up_proj.weight", {140, 300}, std::vector<float>(140 * 300, 0.25f), "", {}};
  fx::FixtureTensor norm{"model.norm.weight", {300}, std::vector<float>(300, 1.0f), "", {}};
  write_file_atomic(dir / "in" / "config.json", "{}");
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    w.values[133 * 300 + 257] = bad;
    fx::write_safetensors(dir / "in" / "model.safetensors", {&w, &norm}, "F32");
    for (std::string to : {"int8-block", "int8-channel", "fp8-block"}) {
      INFO(to << " " << bad);
      fs::remove_all(dir / "out");
      CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir / "out", to)),
                        Catch::Contains("model.layers.0.mlp.up_proj.weight row 133 col 257") &&
                            Catch::Contains("not finite"));
      CHECK(!fs::exists(dir / "out" / "model.safetensors.index.json"));
    }
    fs::remove_all(dir / "out");
    CHECK_NOTHROW(convert_checkpoint(opts(dir / "in", dir / "out", "bf16")));  // a plain cast keeps it
    fs::remove_all(dir / "out");
  }
  fs::remove_all(dir);
}

TEST_CASE("convert: outputs load back through Checkpoint with their quantization_config", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  auto m = fx::write_hf_model(dir / "in", {.arch = "qwen2", .layers = 2, .hidden = 160, .heads = 5, .kv_heads = 1,
                                           .ffn = 200, .vocab = 300, .dtype = "BF16"});
  for (std::string to : {"fp8-block", "int8-block", "int8-channel"}) {
    INFO(to);
    auto o = opts(dir / "in", dir / to, to);
    o.verify = true;
    convert_checkpoint(o);
    auto ck = Checkpoint::open(dir / to);
    CHECK(ck->config().quantization_config["quant_method"] ==
          (to == "fp8-block" ? "fp8" : to == "int8-block" ? "blockwise_int8" : "w8a8_int8"));
    CHECK(ck->get("model.layers.1.mlp.down_proj.weight").dtype == (to == "fp8-block" ? DType::F8_E4M3 : DType::I8));
    CHECK(ck->get("model.embed_tokens.weight").dtype == DType::BF16);
    CHECK(ck->get("model.layers.0.self_attn.q_proj.bias").dtype == DType::BF16);
    CHECK(ck->find(to == "int8-channel" ? "model.layers.0.self_attn.k_proj.weight_scale"
                                        : "model.layers.0.self_attn.k_proj.weight_scale_inv"));
    CHECK(ck->fingerprint() != Checkpoint::open(dir / "in")->fingerprint());
    CHECK(fs::exists(dir / to / "tokenizer.json"));
  }
  fs::remove_all(dir);
}

TEST_CASE("engine: a pre-quantised checkpoint quantises exactly its scaled weights, of config.json's scheme", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  fx::write_hf_model(dir / "in", {.arch = "qwen2", .layers = 2, .hidden = 160, .heads = 5, .kv_heads = 1,
                                  .ffn = 200, .vocab = 300, .dtype = "BF16"});
  convert_checkpoint(opts(dir / "in", dir / "i8", "int8-channel"));
  auto in = SafetensorsFile::open(dir / "in" / "model.safetensors");
  auto i8 = read_out(dir / "i8");
  // Rewrites the int8 checkpoint into `to` as one file: `drop` left out, `take_bf16` from the input.
  auto rewrite = [&](const fs::path& to, const std::string& quant_method, std::vector<std::string> drop,
                     std::vector<std::string> take_bf16, std::vector<std::pair<std::string, TensorView>> add = {}) {
    fs::create_directories(to);
    std::vector<TensorSpec> specs;
    std::vector<const TensorView*> views;
    for (const auto& [name, v] : i8.t) {
      if (std::find(drop.begin(), drop.end(), name) != drop.end()) continue;
      const bool bf = std::find(take_bf16.begin(), take_bf16.end(), name) != take_bf16.end();
      const TensorView* src = bf ? in->find(name) : &v;
      specs.push_back({name, src->dtype, src->shape});
      views.push_back(src);
    }
    for (const auto& [name, v] : add) {
      specs.push_back({name, v.dtype, v.shape});
      views.push_back(&v);
    }
    SafetensorsWriter w(to / "model.safetensors", specs);
    for (const TensorView* v : views) w.append(v->data, v->nbytes);
    w.finish();
    for (const auto& e : fs::directory_iterator(dir / "i8")) {
      const std::string n = e.path().filename().string();
      if (n.find("safetensors") == std::string::npos && n != "config.json" && n[0] != '.') fs::copy_file(e.path(), to / n);
    }
    auto cfg = i8.config;
    cfg["quantization_config"] = {{"quant_method", quant_method}};
    write_file_atomic(to / "config.json", cfg.dump());
  };
  auto load = [](const fs::path& p) {
    EngineOptions o;
    o.model = p.string();
    o.threads = 1;
    return Engine::load(o);
  };
  const size_t all_int8 = load(dir / "i8")->model().weight_bytes_per_step();
  // One projection put back to BF16 without its scale stays BF16: 2 bytes a weight, not 1
  // (plus the int8 layout's padding and scales, so about 160 x 160 bytes more).
  const std::string q0 = "model.layers.0.self_attn.q_proj.weight";
  rewrite(dir / "mixed", "w8a8_int8", {"model.layers.0.self_attn.q_proj.weight_scale"}, {q0});
  const size_t mixed = load(dir / "mixed")->model().weight_bytes_per_step();
  CHECK(mixed > all_int8 + 160 * 160 / 2);
  CHECK(mixed < all_int8 + 160 * 160 * 2);
  // Tensors of one scheme under a config that names another: an error, not a silent requantisation.
  rewrite(dir / "wrong", "blockwise_int8", {}, {});
  CHECK_THROWS_WITH(load(dir / "wrong"), Catch::Contains("holds int8-channel") && Catch::Contains("int8-block"));
  // A scale on a tensor that is never quantised.
  std::vector<float> one = {1.0f};
  TensorView es{"model.embed_tokens.weight_scale", DType::F32, {1, 1}, one.data(), 4};
  rewrite(dir / "embed", "w8a8_int8", {}, {}, {{es.name, es}});
  CHECK_THROWS_WITH(load(dir / "embed"), Catch::Contains("model.embed_tokens.weight_scale"));
  fs::remove_all(dir);
}

TEST_CASE("convert: bad inputs and options are clear errors", "[convert][unit]") {
  auto dir = fx::temp_dir("conv");
  write_moe_fixture(dir / "in", "BF16", 1);
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir / "o", "int4")), Catch::Contains("--to"));
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir / "in", "bf16")), Catch::Contains("--out"));
  // --out inside --in would copy its own output into itself (the walk over --in's other files
  // finds it); --in inside --out is refused the same way. Nothing is written either time.
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir / "in" / "sub", "int8-block")),
                    Catch::Contains("is inside --in"));
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in" / "." / "x" / "..", dir / "in" / "sub" / "deeper", "bf16")),
                    Catch::Contains("is inside --in"));
  CHECK(!fs::exists(dir / "in" / "sub"));
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir / "in" / "." , "bf16")), Catch::Contains("must differ"));
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "in", dir, "bf16")), Catch::Contains("is inside --out"));
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "nowhere", dir / "o", "bf16")), Catch::Contains("nowhere"));
  convert_checkpoint(opts(dir / "in", dir / "i8", "int8-channel"));
  CHECK_THROWS_WITH(convert_checkpoint(opts(dir / "i8", dir / "o", "bf16")), Catch::Contains("w8a8_int8"));
  CHECK(is_quantizable_weight("model.layers.3.mlp.experts.7.gate_proj.weight", 2));
  CHECK(!is_quantizable_weight("model.layers.3.mlp.gate.weight", 2));
  CHECK(!is_quantizable_weight("model.layers.3.block_sparse_moe.gate.weight", 2));  // Mixtral's router
  CHECK(!is_quantizable_weight("model.layers.3.mlp.router.weight", 2));
  CHECK(!is_quantizable_weight("model.layers.3.mlp.shared_expert_gate.weight", 2));
  CHECK(is_quantizable_weight("model.layers.3.mlp.gate_proj.weight", 2));
  CHECK(is_quantizable_weight("model.layers.3.block_sparse_moe.experts.0.w1.weight", 2));
  CHECK(!is_quantizable_weight("model.embed_tokens.weight", 2));
  CHECK(!is_quantizable_weight("lm_head.weight", 2));
  CHECK(!is_quantizable_weight("model.layers.0.self_attn.kv_a_layernorm.weight", 1));
  fs::remove_all(dir);
}

TEST_CASE("convert throughput and peak RSS", "[convert][.bench]") {
  // Hidden benchmark: ./test_ckpt "[.bench]" (writes ~1 GB to $TMPDIR).
  auto dir = fx::temp_dir("convbench");
  const int64_t N = 4096, K = 4096;
  std::vector<uint16_t> row(K);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<TensorSpec> specs;
  for (int l = 0; l < 32; ++l) specs.push_back({fmt::format("model.layers.{}.mlp.up_proj.weight", l), DType::BF16, {N, K}});
  {
    SafetensorsWriter w(dir / "in" / "model.safetensors", specs);
    for (int l = 0; l < 32; ++l)
      for (int64_t n = 0; n < N; ++n) {
        for (auto& v : row) v = fx::fx_bf16_bits(nd(rng));
        w.append(row.data(), row.size() * 2);
      }
    w.finish();
  }
  write_file_atomic(dir / "in" / "config.json", "{}");
  for (std::string to : {"int8-block", "int8-channel", "fp8-block"}) {
    ConvertOptions o = opts(dir / "in", dir / to, to);
    o.shard_bytes = 5ull << 30;
    ConvertStats st = convert_checkpoint(o);
    WARN(fmt::format("{}: {:.2f} GB in {:.2f} s = {:.2f} GB/s input ({:.2f} GB per CPU-second); peak RSS {:.0f} MiB",
                     to, st.bytes_converted / 1e9, st.seconds, st.bytes_converted / 1e9 / st.seconds,
                     st.bytes_converted / 1e9 / st.cpu_seconds, st.peak_rss_kb / 1024.0));
    fs::remove_all(dir / to);
  }
  fs::remove_all(dir);
}

TEST_CASE("quantize_rows equals quantize_weight bit for bit on random slabs", "[convert][unit]") {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> ex(-30, 12);
  for (int64_t K : {1, 7, 31, 32, 33, 127, 128, 129, 300, 515}) {
    for (int64_t rows : {1, 5, 128}) {
      std::vector<float> w(rows * K);
      for (auto& v : w) v = std::ldexp(u(rng), ex(rng));  // magnitudes from 2^-30 to 2^12
      for (int64_t k = 0; k < std::min<int64_t>(K, 128); ++k) w[k] = 0.0f;  // a zero row/part block
      if (K > 3) w[3] = -0.0f;
      for (QuantScheme sc : {QuantScheme::Fp8Block, QuantScheme::Int8Block, QuantScheme::Int8Channel}) {
        INFO("K " << K << " rows " << rows << " scheme " << quant_scheme_name(sc));
        QuantizedWeight ref = quantize_weight(w.data(), rows, K, sc);
        std::vector<uint8_t> q(rows * K);
        std::vector<float> s(ref.scale.size());
        CHECK(quantize_rows(w.data(), rows, K, static_cast<int>(sc), q.data(), s.data()));
        CHECK(q == ref.q);
        CHECK(s == ref.scale);
        // One inf or NaN anywhere (vector body or scalar tail) is reported, not quantised.
        for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN()}) {
          std::vector<float> wb = w;
          wb[(rows - 1) * K + (K - 1) / 2] = bad;
          CHECK(!quantize_rows(wb.data(), rows, K, static_cast<int>(sc), q.data(), s.data()));
          wb = w;
          wb[rows * K - 1] = bad;
          CHECK(!quantize_rows(wb.data(), rows, K, static_cast<int>(sc), q.data(), s.data()));
        }
      }
    }
  }
}
