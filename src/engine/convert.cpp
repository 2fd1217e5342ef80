// The checkpoint converter. Each output tensor is produced by a streaming "producer" that
// reads its input 128 rows (one block row) or a few MiB at a time and pushes bytes to a sink:
// the shard writer when converting, a comparator when verifying, so --verify checks the
// output bytes against an independent re-computation from the input.
//
// Rounding choices (all in src/engine/quant.h, shared with the engine's kernels):
//   - to bf16: round to nearest even (bf16_from_f32_n).
//   - FP8 input (float8_e4m3fn + weight_scale_inv, DeepSeek format) to anything else: each
//     value is f32(q) * s, rounded to bf16 with RNE, exactly as DeepSeek's fp8_cast_bf16
//     script; INT8 outputs are then quantised from those bf16 values.
//   - quantisation: quantize_weight() on each 128-row slab (= one block row, so block scales
//     are identical to quantising the whole matrix): s = amax / Q in f32, all-zero block/row
//     s = 1, q = RNE(w / s) clamped to +-127 (int8) or clamped to +-448 then e4m3 RNE (fp8).
#include "engine/convert.h"

#include <immintrin.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "engine/linear.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "engine/safetensors_writer.h"

namespace qeval {

namespace {

using Clock = std::chrono::steady_clock;
using Sink = std::function<void(const void*, size_t)>;

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// How an output tensor is made from its input.
enum class Op {
  Copy,        // bytes as they are
  ToBf16,      // float input -> bf16
  Fp8ToBf16,   // e4m3 + block scales -> bf16
  Quantize,    // float (or FP8 via bf16) -> q bytes of the target scheme
  Scales,      // the scale tensor of the preceding Quantize
};

struct OutTensor {
  TensorSpec spec;
  Op op = Op::Copy;
  const TensorView* src = nullptr;        // input tensor
  const TensorView* src_scale = nullptr;  // FP8 input: its weight_scale_inv
  const SafetensorsFile* src_file = nullptr;
  std::shared_ptr<std::vector<float>> scales;  // Quantize writes, Scales reads
  const SafetensorsFile* src_scale_file = nullptr;  // the file of src_scale (may be another shard)
};

struct Shard {
  std::string file;
  std::vector<OutTensor> tensors;
  uint64_t bytes = 0;
};

QuantScheme target_scheme(const std::string& to) {
  if (to == "bf16") return QuantScheme::None;
  return parse_quant_scheme(to);
}

nlohmann::json quant_config_for(QuantScheme s) {
  switch (s) {
    case QuantScheme::Fp8Block:
      return {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
              {"weight_block_size", {128, 128}}};
    case QuantScheme::Int8Block:
      return {{"quant_method", "blockwise_int8"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {128, 128}}};
    case QuantScheme::Int8Channel:
      return {{"quant_method", "w8a8_int8"}};
    case QuantScheme::None:
      break;
  }
  return nullptr;
}

// Decodes `rows` rows of FP8 block-scaled weight bytes `q` ([rows, K], rows <= 128, one block
// row) with that block row's `kb` scales (raw f32 bytes) to f32, rounded to bf16 values.
void fp8_rows_to_bf16_values(const uint8_t* q, const uint8_t* scale_bytes, int64_t rows, int64_t K, int64_t kb,
                             float* out) {
  const float* table = e4m3_table();
  std::vector<float> srow(static_cast<size_t>(kb));
  std::memcpy(srow.data(), scale_bytes, static_cast<size_t>(kb) * 4);
  for (int64_t n = 0; n < rows; ++n) {
    float* o = out + n * K;
    for (int64_t k = 0; k < K; ++k) o[k] = bf16_round(table[q[n * K + k]] * srow[k / 128]);
  }
}

// The bytes [p, p+n) of a tensor of `file`: read with pread into `buf` (see MappedFile::read:
// mapped pages are slow to touch first on VMs and would grow RSS), or the memory itself for a
// file parsed from memory.
const uint8_t* fetch(const SafetensorsFile* file, const void* p, size_t n, std::vector<uint8_t>& buf) {
  const MappedFile* m = file ? file->mapping() : nullptr;
  if (!m) return static_cast<const uint8_t*>(p);
  buf.resize(n);
  m->read(static_cast<size_t>(static_cast<const uint8_t*>(p) - m->data()), buf.data(), n);
  return buf.data();
}

// Streams output tensor `t` into `sink`. Reads (pread, see fetch) at most one 128-row slab,
// 2 Mi elements or 8 MiB of input at a time. `check` runs the formula checks of the verify pass on quantised slabs.
void produce(const OutTensor& t, QuantScheme scheme, const Sink& sink, bool check) {
  const TensorView& src = *t.src;
  switch (t.op) {
    case Op::Copy: {
      const auto* p = static_cast<const uint8_t*>(src.data);
      const size_t chunk = 8u << 20;
      std::vector<uint8_t> buf;
      for (size_t off = 0; off < src.nbytes; off += chunk) {
        const size_t m = std::min(chunk, src.nbytes - off);
        sink(fetch(t.src_file, p + off, m, buf), m);
      }
      return;
    }
    case Op::ToBf16: {
      const size_t n = static_cast<size_t>(src.numel()), chunk = 1u << 21, es = dtype_size(src.dtype);
      std::vector<float> f(std::min(n, chunk));
      std::vector<uint16_t> b(f.size());
      std::vector<uint8_t> buf;
      for (size_t i = 0; i < n; i += chunk) {
        size_t m = std::min(chunk, n - i);
        to_f32_into(src.dtype, fetch(t.src_file, static_cast<const uint8_t*>(src.data) + i * es, m * es, buf), m,
                    f.data());
        bf16_from_f32_n(f.data(), static_cast<int64_t>(m), b.data());
        sink(b.data(), m * 2);
      }
      return;
    }
    case Op::Fp8ToBf16:
    case Op::Quantize: {
      const int64_t N = src.shape[0], K = src.shape[1];
      std::vector<float> slab(static_cast<size_t>(std::min<int64_t>(N, kQuantBlock) * K));
      std::vector<uint16_t> b;
      std::vector<uint8_t> buf, sbuf;
      if (t.op == Op::Fp8ToBf16) b.resize(slab.size());
      if (t.scales) t.scales->clear();
      for (int64_t r0 = 0; r0 < N; r0 += kQuantBlock) {
        const int64_t r1 = std::min(N, r0 + kQuantBlock), rows = r1 - r0;
        const size_t in_bytes = static_cast<size_t>(rows * K) * dtype_size(src.dtype);
        const uint8_t* in = fetch(t.src_file, static_cast<const uint8_t*>(src.data) + r0 * K * dtype_size(src.dtype),
                                  in_bytes, buf);
        if (t.src_scale) {
          const int64_t kb = t.src_scale->shape[1];
          const uint8_t* sc = fetch(t.src_scale_file, static_cast<const uint8_t*>(t.src_scale->data) + (r0 / 128) * kb * 4,
                                    static_cast<size_t>(kb) * 4, sbuf);
          fp8_rows_to_bf16_values(in, sc, rows, K, kb, slab.data());
        } else {
          to_f32_into(src.dtype, in, static_cast<size_t>(rows * K), slab.data());
        }
        if (t.op == Op::Fp8ToBf16) {
          bf16_from_f32_n(slab.data(), rows * K, b.data());  // values are bf16 already: exact
          sink(b.data(), static_cast<size_t>(rows * K) * 2);
          continue;
        }
        QuantizedWeight qw;
        qw.scheme = scheme;
        qw.n = rows;
        qw.k = K;
        qw.q.resize(static_cast<size_t>(rows * K));
        qw.scale.resize(static_cast<size_t>(qw.scale_rows() * qw.scale_cols()));
        if (!quantize_rows(slab.data(), rows, K, static_cast<int>(scheme), qw.q.data(), qw.scale.data())) {
          const auto bad = std::find_if(slab.begin(), slab.begin() + rows * K, [](float v) { return !std::isfinite(v); });
          const int64_t i = bad - slab.begin();
          fail("{}: tensor {} row {} col {}: value {} is not finite, so it has no {} code (hint: the checkpoint "
               "is damaged; check it against its source)",
               t.src_file->source(), t.src->name, r0 + i / K, i % K, *bad, quant_scheme_name(scheme));
        }
        if (check) {
          // Independent checks of the stored values against the formulas: the scale is amax/Q
          // of its block (1 for all-zero), and every value dequantises to within half a step.
          const float qmax = scheme == QuantScheme::Fp8Block ? kE4m3Max : kInt8Max;
          const int64_t kb = qw.scale_cols();
          for (int64_t n = 0; n < rows; ++n)
            for (int64_t k = 0; k < K; ++k) {
              const float s = scheme == QuantScheme::Int8Channel ? qw.scale[n] : qw.scale[(n / 128) * kb + k / 128];
              const float x = slab[n * K + k];
              const uint8_t q = qw.q[n * K + k];
              const float deq = scheme == QuantScheme::Fp8Block ? e4m3_to_f32(q) * s
                                                                : static_cast<float>(static_cast<int8_t>(q)) * s;
              const float tol = scheme == QuantScheme::Fp8Block ? std::max(std::fabs(x) * 0.0625f, s * 0.001f) : s * 0.5f;
              if (!(s > 0) || !std::isfinite(s) || !(std::fabs(deq - x) <= tol * 1.0001f + 1e-30f) ||
                  (scheme != QuantScheme::Fp8Block && static_cast<int8_t>(q) == -128))
                fail("verify: tensor {} row {} col {}: value {} stored as {} x scale {} (dequantised {})", t.spec.name,
                     r0 + n, k, x, static_cast<int>(q), s, deq);
            }
          (void)qmax;
        }
        sink(qw.q.data(), qw.q.size());
        t.scales->insert(t.scales->end(), qw.scale.begin(), qw.scale.end());
      }
      return;
    }
    case Op::Scales:
      sink(t.scales->data(), t.scales->size() * sizeof(float));
      return;
  }
}

struct Plan {
  std::vector<Shard> shards;
  nlohmann::json config;
  uint64_t bytes_in = 0, bytes_out = 0;
  std::string hash;  // identifies this conversion (inputs + target); stored in shard metadata
};

std::string shape_key(const TensorSpec& s) {
  std::string k = s.name + ":" + dtype_name(s.dtype);
  for (auto d : s.shape) k += fmt::format(",{}", d);
  return k;
}

Plan make_plan(const ConvertOptions& opt, const std::vector<std::unique_ptr<SafetensorsFile>>& inputs,
               const std::map<std::string, std::pair<const TensorView*, const SafetensorsFile*>>& by_name) {
  Plan plan;
  const QuantScheme scheme = target_scheme(opt.to);
  const auto cfg_path = opt.in / "config.json";
  try {
    plan.config = nlohmann::json::parse(read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", cfg_path.string(), e.what());
  }
  if (!plan.config.is_object()) fail("{}: not a JSON object", cfg_path.string());
  bool fp8_in = false;
  if (auto q = plan.config.find("quantization_config"); q != plan.config.end() && !q->is_null()) {
    std::string method = q->is_object() ? q->value("quant_method", std::string()) : "";
    if (method != "fp8")
      fail("{}: input is quantised with quant_method '{}'; convert from a BF16/F16/F32 or DeepSeek FP8 checkpoint",
           cfg_path.string(), method);
    if (q->contains("weight_block_size") && (*q)["weight_block_size"] != nlohmann::json({128, 128}))
      fail("{}: quantization_config.weight_block_size {} is not [128, 128]", cfg_path.string(),
           (*q)["weight_block_size"].dump());
    fp8_in = true;
  }

  std::vector<OutTensor> outs;
  for (const auto& file : inputs) {
    for (const auto& t : file->tensors()) {
      auto owner = by_name.find(t.name);
      if (owner == by_name.end())
        fail("{}: tensor {} is not in the index's weight_map, so it would be dropped (hint: the index does not "
             "match its shards; fix or regenerate model.safetensors.index.json)",
             file->source(), t.name);
      if (owner->second.second != file.get()) continue;  // the index takes its copy from another shard
      plan.bytes_in += t.nbytes;
      if (ends_with(t.name, ".weight_scale_inv") && fp8_in) {
        std::string w = t.name.substr(0, t.name.size() - 10);  // "...weight"
        if (by_name.count(w)) continue;  // consumed with its weight
        fail("{}: tensor {} has no weight {} (hint: the checkpoint is incomplete; a scale without its weight "
             "cannot be converted)", file->source(), t.name, w);
      }
      if (ends_with(t.name, ".weight_scale") || ends_with(t.name, ".input_scale"))
        fail("{}: tensor {}: input already carries per-channel/activation scales; not a supported input",
             file->source(), t.name);
      const TensorView* scale = nullptr;
      const SafetensorsFile* scale_file = nullptr;
      if (ends_with(t.name, ".weight")) {
        auto s = by_name.find(t.name + "_scale_inv");
        if (s != by_name.end()) std::tie(scale, scale_file) = s->second;
      }
      if (t.dtype == DType::F8_E4M3 || scale) {
        if (!fp8_in || !scale || t.dtype != DType::F8_E4M3 || t.shape.size() != 2)
          fail("{}: tensor {}: an FP8 weight needs quantization_config quant_method fp8 and an F32 weight_scale_inv",
               file->source(), t.name);
        std::vector<int64_t> es = {(t.shape[0] + 127) / 128, (t.shape[1] + 127) / 128};
        if (scale->dtype != DType::F32 || scale->shape != es)
          fail("{}: tensor {}_scale_inv: expected F32 [{}, {}]", file->source(), t.name, es[0], es[1]);
      }
      const SafetensorsFile* f = file.get();
      if (!fp8_in && !is_float(t.dtype) && is_quantizable_weight(t.name, t.shape.size()))
        fail("{}: tensor {} has dtype {}, but config.json has no quantization_config (hint: an unquantised "
             "checkpoint's weights are BF16, F16 or F32; a quantised one must say how in config.json)",
             file->source(), t.name, dtype_name(t.dtype));
      // What is quantised: in a DeepSeek FP8 checkpoint exactly the weights that have a scale (its
      // BF16 tensors stay as they are); otherwise the float 2-D weights that is_quantizable_weight
      // names (not embeddings, lm_head, norms, routers).
      const bool quantize = scheme != QuantScheme::None &&
                            (fp8_in ? scale != nullptr : is_float(t.dtype) && is_quantizable_weight(t.name, t.shape.size()));
      if (quantize && scale && scheme == QuantScheme::Fp8Block) {  // FP8 -> FP8: keep as it is
        outs.push_back({{t.name, t.dtype, t.shape}, Op::Copy, &t, nullptr, f, nullptr});
        outs.push_back({{t.name + "_scale_inv", DType::F32, scale->shape}, Op::Copy, scale, nullptr, scale_file, nullptr});
      } else if (quantize) {
        auto scales = std::make_shared<std::vector<float>>();
        const std::string base = t.name.substr(0, t.name.size() - 7);  // strip ".weight"
        DType qd = scheme == QuantScheme::Fp8Block ? DType::F8_E4M3 : DType::I8;
        outs.push_back({{t.name, qd, t.shape}, Op::Quantize, &t, scale, f, scales, scale_file});
        if (scheme == QuantScheme::Int8Channel)
          outs.push_back({{base + ".weight_scale", DType::F32, {t.shape[0], 1}}, Op::Scales, &t, nullptr, f, scales});
        else
          outs.push_back({{base + ".weight_scale_inv", DType::F32, {(t.shape[0] + 127) / 128, (t.shape[1] + 127) / 128}},
                          Op::Scales, &t, nullptr, f, scales});
      } else if (scale) {
        outs.push_back({{t.name, DType::BF16, t.shape}, Op::Fp8ToBf16, &t, scale, f, nullptr, scale_file});
      } else if (scheme == QuantScheme::None && !fp8_in && is_float(t.dtype) && t.dtype != DType::BF16) {
        // F32/F16 -> bf16. From FP8 only the FP8 weights change (the F32 router bias stays F32), as
        // DeepSeek's fp8_cast_bf16 does.
        outs.push_back({{t.name, DType::BF16, t.shape}, Op::ToBf16, &t, nullptr, f, nullptr});
      } else {
        outs.push_back({{t.name, t.dtype, t.shape}, Op::Copy, &t, nullptr, f, nullptr});
      }
    }
  }
  if (outs.empty()) fail("{}: no tensors to convert", opt.in.string());

  // Shards: consecutive tensors up to shard_bytes (a weight and its scales stay together).
  std::string hash_src = opt.to;
  for (size_t i = 0; i < outs.size(); ++i) {
    const uint64_t nb = outs[i].spec.nbytes();
    plan.bytes_out += nb;
    hash_src += '\n';
    hash_src += shape_key(outs[i].spec);
    const bool follows = outs[i].op == Op::Scales || (i > 0 && ends_with(outs[i].spec.name, "_scale_inv") &&
                                                      outs[i].op == Op::Copy && outs[i - 1].op == Op::Copy &&
                                                      outs[i - 1].spec.dtype == DType::F8_E4M3);
    if (plan.shards.empty() || (!follows && plan.shards.back().bytes > 0 && plan.shards.back().bytes + nb > opt.shard_bytes))
      plan.shards.emplace_back();
    plan.shards.back().bytes += nb;
    plan.shards.back().tensors.push_back(std::move(outs[i]));
  }
  // The inputs as files (path, size, modification time: a changed input is another conversion)
  // and the shard size (it names the shards).
  for (const auto& file : inputs) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(file->source(), ec);
    const auto mtime = std::filesystem::last_write_time(file->source(), ec).time_since_epoch().count();
    // The absolute path, so `--in m`, `--in ./m/` and `--in /abs/m` resume the same conversion.
    const auto abs = std::filesystem::weakly_canonical(file->source(), ec);
    hash_src += fmt::format("\n{}:{}:{}:{}", ec ? file->source() : abs.string(), file->data_start(), size, mtime);
  }
  hash_src += fmt::format("\nshard_bytes {}", opt.shard_bytes);
  plan.hash = sha256_hex(hash_src).substr(0, 16);
  const size_t n = plan.shards.size();
  for (size_t i = 0; i < n; ++i) plan.shards[i].file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);

  if (scheme == QuantScheme::None) {
    plan.config.erase("quantization_config");
    plan.config["torch_dtype"] = "bfloat16";
  } else {
    plan.config["quantization_config"] = quant_config_for(scheme);
    if (fp8_in) plan.config["torch_dtype"] = "bfloat16";
  }
  return plan;
}

// Whether `path` already holds shard `s` of this plan (complete: it was renamed into place).
bool shard_done(const std::filesystem::path& path, const Shard& s, const std::string& hash) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;
  try {
    auto f = SafetensorsFile::open(path);
    auto it = f->metadata().find("qeval_convert");
    if (it == f->metadata().end() || it->second != hash || f->tensors().size() != s.tensors.size()) return false;
    for (const auto& t : s.tensors) {
      const TensorView* v = f->find(t.spec.name);
      if (!v || v->dtype != t.spec.dtype || v->shape != t.spec.shape) return false;
    }
    return true;
  } catch (const Error&) {
    return false;
  }
}

// The output directory for conversion `hash`: created if missing; an existing one must be empty
// or hold an unfinished (or finished) run of this same conversion, marked by kMarker, which is
// then resumed. Anything else (another conversion, other inputs, other files) is refused, so
// two conversions never mix in one directory.
constexpr const char* kMarker = ".qeval_convert";
// Returns how it found the directory: kResumed (this conversion's), kCreated or kWasEmpty.
enum class Claim { kResumed, kCreated, kWasEmpty };
Claim claim_output_dir(const std::filesystem::path& out, const std::string& hash) {
  std::error_code ec;
  const auto marker = out / kMarker;
  if (std::filesystem::exists(out, ec) && !std::filesystem::is_empty(out, ec)) {
    std::string held;
    if (std::filesystem::exists(marker, ec)) held = read_file(marker);
    while (!held.empty() && (held.back() == '\n' || held.back() == ' ')) held.pop_back();
    if (held == hash) {  // resume; the index (written last) comes back when this run completes
      std::filesystem::remove(out / "model.safetensors.index.json", ec);
      return Claim::kResumed;
    }
    if (!held.empty())
      fail("{}: holds a conversion of other inputs, to another target or with another shard size ({} says {}, "
           "this run is {}) (hint: pass a new --out, or remove that directory)", out.string(), marker.string(), held, hash);
    fail("{}: exists and is not empty (hint: pass a new or empty --out)", out.string());
  }
  const bool existed = std::filesystem::exists(out, ec);
  std::filesystem::create_directories(out, ec);
  if (ec) fail("{}: cannot create output directory: {}", out.string(), ec.message());
  write_file_atomic(marker, hash + "\n");
  return existed ? Claim::kWasEmpty : Claim::kCreated;
}

// Undoes a fresh claim when the conversion fails before any shard of it is complete, so a failed
// first run (a NaN in the input, a full disk) leaves nothing behind and the rerun after the fix
// is not refused: a directory it created is removed, one the user gave empty is emptied again.
// Finished shards are kept: a rerun resumes from them.
class OutputDirGuard {
 public:
  OutputDirGuard(std::filesystem::path out, Claim claim, std::function<bool()> any_complete)
      : out_(std::move(out)), claim_(claim), any_complete_(std::move(any_complete)), n_(std::uncaught_exceptions()) {}
  ~OutputDirGuard() {
    if (claim_ == Claim::kResumed || std::uncaught_exceptions() <= n_) return;
    try {
      if (any_complete_()) return;
    } catch (...) {
      return;
    }
    std::error_code ec;
    if (claim_ == Claim::kCreated) {
      std::filesystem::remove_all(out_, ec);
      return;
    }
    std::vector<std::filesystem::path> made;
    for (const auto& e : std::filesystem::directory_iterator(out_, ec)) made.push_back(e.path());
    for (const auto& p : made) std::filesystem::remove_all(p, ec);
  }
  OutputDirGuard(const OutputDirGuard&) = delete;
  OutputDirGuard& operator=(const OutputDirGuard&) = delete;

 private:
  std::filesystem::path out_;
  Claim claim_;
  std::function<bool()> any_complete_;
  int n_;
};

class Progress {
 public:
  Progress(bool on, uint64_t total) : on_(on && isatty(2)), lines_(on && !isatty(2)), total_(total), t0_(Clock::now()) {}
  // `bytes` converted now, or (reused) taken from an earlier run: those count toward the bar,
  // not the rate.
  void add(uint64_t bytes, const std::string& what, bool reused = false) {
    done_ += bytes;
    if (!reused) converted_ += bytes;
    double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    if (on_) {
      int pct = total_ ? static_cast<int>(100.0 * done_ / total_) : 100;
      int bar = pct * 30 / 100;
      fmt::print(stderr, "\r[{}{}] {:3d}% {:.2f}/{:.2f} GB {:.2f} GB/s {:<40.40}", std::string(bar, '#'),
                 std::string(30 - bar, ' '), pct, done_ / 1e9, total_ / 1e9, s > 0 ? converted_ / 1e9 / s : 0.0, what);
    }
  }
  void line(const std::string& msg) {
    if (on_) fmt::print(stderr, "\r{:<100}\r", "");
    if (on_ || lines_) fmt::print(stderr, "{}\n", msg);
  }
  void end() {
    if (on_) fmt::print(stderr, "\n");
  }
  bool bar() const { return on_; }

 private:
  bool on_, lines_;
  uint64_t total_, done_ = 0, converted_ = 0;
  Clock::time_point t0_;
};

}  // namespace


// ---- vectorised quantisation of one block row (bit-identical to quantize_weight) ---------

namespace {


// 8 lanes of clamp(x / s) -> int32 codes: int8 (RNE, +-127) or e4m3 bits (clamp +-448, then
// the same bit steps as e4m3_from_f32 for |v| < 480: subnormal add trick or rebias + RNE).
inline __m256i codes8(__m256 x, __m256 s, bool fp8) {
  __m256 v = _mm256_div_ps(x, s);
  if (!fp8) {
    __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(r);
  }
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-448.0f)), _mm256_set1_ps(448.0f));
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i sign = _mm256_and_si256(bits, _mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256i f = _mm256_xor_si256(bits, sign);
  const __m256i denorm_mask = _mm256_set1_epi32(141 << 23);
  const __m256i sub = _mm256_sub_epi32(
      _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(f), _mm256_castsi256_ps(denorm_mask))), denorm_mask);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(f, 20), _mm256_set1_epi32(1));
  const __m256i norm = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(f, _mm256_set1_epi32(static_cast<int>((static_cast<uint32_t>(7 - 127) << 23) + 0x7FFFFu))), odd), 20);
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(121 << 23), f);
  const __m256i r = _mm256_and_si256(_mm256_blendv_epi8(norm, sub, is_sub), _mm256_set1_epi32(0xFF));
  return _mm256_or_si256(r, _mm256_srli_epi32(sign, 24));
}

inline uint8_t code1(float x, float s, bool fp8) {
  const float v = x / s;
  if (fp8) return e4m3_from_f32(std::min(std::max(v, -kE4m3Max), kE4m3Max));
  const float r = std::min(std::max(std::nearbyint(v), -kInt8Max), kInt8Max);
  return static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(r)));
}

// q[0..n) = codes of x[0..n) / s.
void quantize_span(const float* x, int64_t n, float s, bool fp8, uint8_t* q) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i a = codes8(_mm256_loadu_ps(x + i), vs, fp8), b = codes8(_mm256_loadu_ps(x + i + 8), vs, fp8);
    __m256i c = codes8(_mm256_loadu_ps(x + i + 16), vs, fp8), d = codes8(_mm256_loadu_ps(x + i + 24), vs, fp8);
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);  // 16-bit, lane-interleaved
    __m256i p = fp8 ? _mm256_packus_epi16(ab, cd) : _mm256_packs_epi16(ab, cd);
    p = _mm256_permutevar8x32_epi32(p, perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), p);
  }
  for (; i < n; ++i) q[i] = code1(x[i], s, fp8);
}

}  // namespace

bool quantize_rows(const float* w, int64_t rows, int64_t K, int scheme_i, uint8_t* q, float* scales) {
  const auto scheme = static_cast<QuantScheme>(scheme_i);
  const bool fp8 = scheme == QuantScheme::Fp8Block;
  const float qmax = fp8 ? kE4m3Max : kInt8Max;
  if (scheme == QuantScheme::Int8Channel) {
    for (int64_t n = 0; n < rows; ++n) {
      const uint32_t amax = amax_bits(w + n * K, K);
      if (amax >= kInfBits) return false;
      const float s = weight_scale(std::bit_cast<float>(amax), qmax);  // all-zero row: s = 1
      scales[n] = s;
      quantize_span(w + n * K, K, s, false, q + n * K);
    }
    return true;
  }
  for (int64_t k0 = 0; k0 < K; k0 += kQuantBlock) {
    const int64_t kw = std::min(kQuantBlock, K - k0);  // partial edge block
    uint32_t amax = 0;
    for (int64_t n = 0; n < rows; ++n) amax = std::max(amax, amax_bits(w + n * K + k0, kw));
    if (amax >= kInfBits) return false;
    const float s = weight_scale(std::bit_cast<float>(amax), qmax);  // all-zero block: s = 1
    scales[k0 / kQuantBlock] = s;
    for (int64_t n = 0; n < rows; ++n) quantize_span(w + n * K + k0, kw, s, fp8, q + n * K + k0);
  }
  return true;
}

bool is_quantizable_weight(const std::string& name, size_t rank) {
  if (rank != 2 || !ends_with(name, ".weight")) return false;
  if (name.find("embed_tokens") != std::string::npos || name.find("lm_head") != std::string::npos) return false;
  if (name.find("shared_head.head") != std::string::npos) return false;  // DeepSeek's MTP output head
  if (name.find("norm") != std::string::npos) return false;
  // MoE routers: mlp.gate (DeepSeek, Qwen-MoE), block_sparse_moe.gate (Mixtral), shared_expert_gate,
  // and any *.router.weight.
  if (ends_with(name, ".gate.weight") || ends_with(name, "shared_expert_gate.weight") || ends_with(name, ".router.weight"))
    return false;
  return true;
}

std::string ConvertOptions::validate() const {
  if (in.empty()) return "--in is required";
  if (out.empty()) return "--out is required";
  if (to != "bf16" && to != "fp8-block" && to != "int8-block" && to != "int8-channel")
    return fmt::format("--to '{}' must be bf16, fp8-block, int8-block or int8-channel", to);
  std::error_code ec;
  if (std::filesystem::equivalent(in, out, ec) || same_path(in, out)) return "--out must differ from --in";
  // Every file under --in that is not a weight is copied to --out: an --out inside it would be
  // copied into itself (the shards just written among them), and an --in inside --out would have
  // the output written around the input.
  if (path_inside(out, in))
    return fmt::format("--out {} is inside --in {} (hint: write the conversion beside the input, not into it)",
                       out.string(), in.string());
  if (path_inside(in, out))
    return fmt::format("--in {} is inside --out {} (hint: write the conversion beside the input)", in.string(),
                       out.string());
  if (shard_bytes == 0) return "shard size must be positive";
  return "";
}

namespace {

// Copies every file of `in` that the conversion does not rewrite into `out`, subfolders
// included (DeepSeek ships inference/ and figures/), streaming (copy_file: no file is read into
// memory) to a fixed temp name and renamed, so a killed run leaves nothing that a resumed one
// does not overwrite. Skipped: the top-level weights, index and config.json (rewritten), a
// converter marker and leftover temp files of an earlier conversion, and .git / .cache.
void copy_other_files(const std::filesystem::path& in, const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(in); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path rel = fs::relative(it->path(), in);
    const std::string name = it->path().filename().string();
    if (it->is_directory()) {
      if (name == ".git" || name == ".cache") it.disable_recursion_pending();
      continue;
    }
    const bool top = rel == rel.filename();
    if (!it->is_regular_file() || name == kMarker || ends_with(name, ".partial") || ends_with(name, ".qeval-tmp") ||
        name.find(".tmp.") != std::string::npos ||
        (top && (ends_with(name, ".safetensors") || name == "model.safetensors.index.json" || name == "config.json")))
      continue;
    const fs::path dst = out / rel, tmp = fs::path(dst) += ".qeval-tmp";
    fs::create_directories(dst.parent_path(), ec);
    fs::copy_file(it->path(), tmp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(tmp, dst, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove(tmp, ec);
      fail("{}: cannot copy to {}: {} (hint: is the output disk full or read-only?)", it->path().string(),
           dst.string(), why);
    }
  }
}

}  // namespace

ConvertStats convert_checkpoint(const ConvertOptions& opt) {
  if (std::string e = opt.validate(); !e.empty()) fail("convert: {}", e);
  const auto t0 = Clock::now();
  auto cpu_now = [] {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  };
  const double cpu0 = cpu_now();
  ConvertStats st;
  // Inputs: the index's shards, or model.safetensors.
  std::vector<std::unique_ptr<SafetensorsFile>> inputs;
  std::map<std::string, std::pair<const TensorView*, const SafetensorsFile*>> by_name;
  std::error_code ec;
  const auto index_path = opt.in / "model.safetensors.index.json";
  if (std::filesystem::exists(index_path, ec)) {
    SafetensorsIndex idx = read_safetensors_index(index_path);
    std::map<std::string, const SafetensorsFile*> file_of;
    for (const auto& f : idx.files()) {
      inputs.push_back(SafetensorsFile::open(opt.in / f));
      file_of[f] = inputs.back().get();
    }
    for (const auto& [name, f] : idx.weight_map) {
      const TensorView* v = file_of.at(f)->find(name);
      if (!v) fail("{}: weight_map puts {} in {}, which has no such tensor", index_path.string(), name, f);
      by_name[name] = {v, file_of.at(f)};
    }
  } else if (std::filesystem::exists(opt.in / "model.safetensors", ec)) {
    inputs.push_back(SafetensorsFile::open(opt.in / "model.safetensors"));
    for (const auto& t : inputs.back()->tensors()) by_name[t.name] = {&t, inputs.back().get()};
  } else {
    fail("{}: no model.safetensors or model.safetensors.index.json (hint: --in is an HF model directory)", opt.in.string());
  }

  Plan plan = make_plan(opt, inputs, by_name);
  const QuantScheme scheme = target_scheme(opt.to);
  const Claim claim = claim_output_dir(opt.out, plan.hash);
  OutputDirGuard guard(opt.out, claim, [&] {
    for (const auto& shard : plan.shards)
      if (shard_done(opt.out / shard.file, shard, plan.hash)) return true;
    return false;
  });
  Progress progress(opt.progress, plan.bytes_in);
  st.n_shards = static_cast<int>(plan.shards.size());
  for (const auto& shard : plan.shards) {
    const auto path = opt.out / shard.file;
    uint64_t shard_in = 0;
    for (const auto& t : shard.tensors) shard_in += t.op == Op::Scales ? 0 : t.src->nbytes + (t.src_scale ? t.src_scale->nbytes : 0);
    if (shard_done(path, shard, plan.hash)) {
      ++st.n_shards_skipped;
      progress.add(shard_in, shard.file, true);
      progress.line(fmt::format("{}: complete from an earlier run, skipped", shard.file));
      continue;
    }
    std::vector<TensorSpec> specs;
    for (const auto& t : shard.tensors) specs.push_back(t.spec);
    SafetensorsWriter w(path, specs, {{"format", "pt"}, {"qeval_convert", plan.hash}});
    for (const auto& t : shard.tensors) {
      produce(t, scheme, [&](const void* p, size_t n) { w.append(p, n); }, false);
      if (t.op != Op::Scales) progress.add(t.src->nbytes + (t.src_scale ? t.src_scale->nbytes : 0), t.spec.name);
    }
    w.finish();
    st.bytes_converted += shard_in;
    if (!progress.bar()) progress.line(fmt::format("{}: written ({} tensors)", shard.file, shard.tensors.size()));
  }
  progress.end();
  for (const auto& shard : plan.shards)
    for (const auto& t : shard.tensors)
      if (t.op == Op::Quantize || (t.op == Op::Copy && t.spec.dtype == DType::F8_E4M3)) ++st.n_quantized;
  st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  st.cpu_seconds = cpu_now() - cpu0;

  // The verify pass, before the index: a shard that fails it is removed (a re-run makes it
  // again), and the output never looks complete.
  if (opt.verify) {
    const auto v0 = Clock::now();
    for (const auto& shard : plan.shards) {
      const auto path = opt.out / shard.file;
      try {
        auto f = SafetensorsFile::open(path);
        if (f->tensors().size() != shard.tensors.size())
          fail("verify: {}: {} tensors, expected {}", f->source(), f->tensors().size(), shard.tensors.size());
        for (const auto& t : shard.tensors) {
          const TensorView* v = f->find(t.spec.name);
          if (!v || v->dtype != t.spec.dtype || v->shape != t.spec.shape)
            fail("verify: {}: tensor {} missing or with the wrong dtype/shape", f->source(), t.spec.name);
          size_t off = 0;
          std::vector<uint8_t> buf;
          produce(t, scheme, [&](const void* p, size_t n) {
            if (off + n > v->nbytes ||
                std::memcmp(fetch(f.get(), static_cast<const uint8_t*>(v->data) + off, n, buf), p, n) != 0)
              fail("verify: {}: tensor {} differs from the re-computed value near byte {}", f->source(), t.spec.name, off);
            off += n;
          }, true);
          if (off != v->nbytes) fail("verify: {}: tensor {} has extra bytes", f->source(), t.spec.name);
        }
      } catch (const Error& e) {
        std::filesystem::remove(path, ec);
        const std::string what = e.what();
        if (what.find(path.string()) != std::string::npos) throw;
        fail("{}: {} (the shard is removed; run the same command again to rewrite it)", path.string(), what);
      }
    }
    st.verify_seconds = std::chrono::duration<double>(Clock::now() - v0).count();
  }

  // Index, config, other files; the index goes last: its presence marks a complete output.
  nlohmann::json wm = nlohmann::json::object();
  for (const auto& shard : plan.shards)
    for (const auto& t : shard.tensors) wm[t.spec.name] = shard.file;
  copy_other_files(opt.in, opt.out);
  write_file_atomic(opt.out / "config.json", plan.config.dump(2) + "\n");
  write_file_atomic(opt.out / "model.safetensors.index.json",
                    nlohmann::json{{"metadata", {{"total_size", plan.bytes_out}}}, {"weight_map", wm}}.dump(2) + "\n");
  st.bytes_in = plan.bytes_in;
  st.bytes_out = plan.bytes_out;
  for (const auto& s : plan.shards) st.n_tensors_out += static_cast<int>(s.tensors.size());
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  st.peak_rss_kb = ru.ru_maxrss;
  return st;
}

int convert_main(const ConvertOptions& opt) {
  ConvertStats st = convert_checkpoint(opt);
  fmt::print(stderr,
             "converted {} -> {} ({}): {} tensors ({} quantised) in {} shards ({} reused), {:.2f} GB in -> {:.2f} GB "
             "out, {:.2f} GB converted in {:.1f} s ({:.2f} GB/s; {:.2f} GB per CPU-second){}, peak RSS {:.0f} MiB\n",
             opt.in.string(), opt.out.string(), opt.to, st.n_tensors_out, st.n_quantized, st.n_shards,
             st.n_shards_skipped, st.bytes_in / 1e9, st.bytes_out / 1e9, st.bytes_converted / 1e9, st.seconds,
             st.seconds > 0 ? st.bytes_converted / 1e9 / st.seconds : 0.0,
             st.cpu_seconds > 0 ? st.bytes_converted / 1e9 / st.cpu_seconds : 0.0,
             opt.verify ? fmt::format(", verified in {:.1f} s", st.verify_seconds) : std::string(),
             st.peak_rss_kb / 1024.0);
  return 0;
}

}  // namespace qeval
