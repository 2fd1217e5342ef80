// make_linear: turns a checkpoint weight (float, or already quantised with its scale tensor) into
// a packed layer for the active kernel level (cpu_features.h), and runs its forward pass:
// dynamic activation quantisation (quant.h) followed by the kernel (kernels/cpu, or the scalar
// twins of kernels/ref at level "ref").
#include "engine/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "engine/cpu_features.h"
#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/kernels/ref/gemm_ref.h"
#include "engine/quant.h"

namespace qeval {

int64_t Linear::int8_groups_rows(int64_t M) { return cpu::act_rows(M); }

QuantScheme parse_quant_scheme(const std::string& s) {
  if (s == "none") return QuantScheme::None;
  if (s == "fp8-block") return QuantScheme::Fp8Block;
  if (s == "int8-block") return QuantScheme::Int8Block;
  if (s == "int8-channel") return QuantScheme::Int8Channel;
  fail("quantization: unknown scheme '{}' (hint: none, fp8-block, int8-block or int8-channel)", s);
}

const char* quant_scheme_name(QuantScheme q) {
  switch (q) {
    case QuantScheme::None: return "none";
    case QuantScheme::Fp8Block: return "fp8-block";
    case QuantScheme::Int8Block: return "int8-block";
    case QuantScheme::Int8Channel: return "int8-channel";
  }
  return "?";
}

namespace {

using cpu::AlignedBuffer;

// Per-thread scratch for activations (grows, never shrinks); forward() may run concurrently on
// different threads because each has its own.
template <class T>
T* scratch(AlignedBuffer<T>& buf, size_t n) {
  if (buf.size() < n) buf = AlignedBuffer<T>(n * 5 / 4 + 64);
  return buf.data();
}
thread_local AlignedBuffer<int8_t> t_q8;
thread_local AlignedBuffer<uint8_t> t_qf8;
thread_local AlignedBuffer<uint16_t> t_xb;
thread_local AlignedBuffer<float> t_xf, t_sa;

// Runs fn(m0, m1) over row ranges on the pool (activation preparation is O(M K)).
template <class Fn>
void rows_parallel(ThreadPool& pool, int64_t M, Fn fn) {
  if (M < 8) {
    fn(int64_t{0}, M);
    return;
  }
  pool.parallel_for_dynamic(M, std::max<int64_t>(1, M / (8 * pool.size())), [&](int, int64_t b, int64_t e) { fn(b, e); });
}

// Zeroes columns [K, ld) of rows [0, M) and all of rows [M, rows).
template <class T>
void zero_padding(T* a, int64_t M, int64_t rows, int64_t K, int64_t ld) {
  if (ld > K)
    for (int64_t m = 0; m < M; ++m) std::memset(a + m * ld + K, 0, sizeof(T) * (ld - K));
  if (rows > M) std::memset(a + M * ld, 0, sizeof(T) * (rows - M) * ld);
}

void add_bias(const std::vector<float>& bias, int64_t M, int64_t N, float* y) {
  if (bias.empty()) return;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] += bias[n];
}

class LinearImpl : public Linear {
 public:
  LinearImpl(QuantScheme scheme, ComputeType compute, KernelLevel level, int64_t N, int64_t K,
             std::vector<float> bias)
      : scheme_(scheme), compute_(compute), level_(level), n_(N), k_(K), bias_(std::move(bias)) {}

  int64_t int8_groups_ld() const override {
    if (scheme_ != QuantScheme::Int8Block) return 0;
    return level_ == KernelLevel::Ref ? k_ : int8_.kp;
  }
  void forward_int8_groups(int8_t* q, const float* s, int64_t M, float* y, ThreadPool& pool) const override {
    if (scheme_ != QuantScheme::Int8Block)
      fail("linear: forward_int8_groups on a {} layer (hint: only int8-block layers take quantised input)",
           quant_scheme_name(scheme_));
    if (M <= 0) return;
    if (level_ == KernelLevel::Ref) {
      ref::gemm_int8_block(q, s, reinterpret_cast<const int8_t*>(ref_w8_.data()), ref_sw_.data(), M, n_, k_, y);
      add_bias(bias_, M, n_, y);
      return;
    }
    gemm_int8_codes(q, s, M, y, nullptr, pool);
  }

  int64_t n_out() const override { return n_; }
  int64_t n_in() const override { return k_; }
  size_t weight_bytes() const override {
    if (level_ == KernelLevel::Ref)
      return ref_w8_.size() + ref_wb_.size() * 2 + ref_wf_.size() * 4 + ref_sw_.size() * 4 + bias_.size() * 4;
    return (is_int8() ? int8_.bytes() : float_.bytes()) + bias_.size() * 4;
  }

  using Linear::forward;
  void forward(const float* x, const float* amax, int64_t M, float* y, ThreadPool& pool) const override {
    if (M <= 0) return;
    if (level_ == KernelLevel::Ref)
      forward_ref(x, M, y);  // the scalar twin finds its own maxima
    else if (is_int8())
      forward_int8(x, amax, M, y, nullptr, pool);
    else
      forward_float(x, amax, M, y, nullptr, pool);
  }

  void forward_columns(const float* x, int64_t M, int64_t unit, const ColumnsFn& fn,
                       ThreadPool& pool) const override {
    if (M <= 0) return;
    if (unit <= 0 || unit % 32 != 0) fail("linear: column pieces of {} (not a positive multiple of 32)", unit);
    const Pieces pieces{unit / 32, [&](int64_t nb0, int64_t nb1, const float* ys, int64_t ld) {
                          fn(nb0 * 32, std::min(n_, nb1 * 32), ys, ld);
                        }};
    if (level_ != KernelLevel::Ref) {
      if (is_int8())
        forward_int8(x, nullptr, M, nullptr, &pieces, pool);
      else
        forward_float(x, nullptr, M, nullptr, &pieces, pool);
      return;
    }
    std::vector<float> y(static_cast<size_t>(M * n_));  // scalar twin: the whole product, then the pieces
    forward_ref(x, M, y.data());
    for (int64_t c0 = 0; c0 < n_; c0 += unit) fn(c0, std::min(n_, c0 + unit), y.data() + c0, n_);
  }

  // Weights in row-major [N, K] for the scalar path: int8/e4m3 bytes, bf16 bits or f32.
  std::vector<uint8_t> ref_w8_;
  std::vector<uint16_t> ref_wb_;
  std::vector<float> ref_wf_;
  std::vector<float> ref_sw_;
  cpu::Int8Packed int8_;
  cpu::FloatPacked float_;

 private:
  bool is_int8() const { return scheme_ == QuantScheme::Int8Block || scheme_ == QuantScheme::Int8Channel; }

  void forward_ref(const float* x, int64_t M, float* y) const {
    const int64_t K = k_, N = n_, G = n_groups(K);
    switch (scheme_) {
      case QuantScheme::Int8Block:
      case QuantScheme::Int8Channel: {
        std::vector<int8_t> qa(static_cast<size_t>(M * K));
        std::vector<float> sa(static_cast<size_t>(M * G));
        const auto* qw = reinterpret_cast<const int8_t*>(ref_w8_.data());
        if (scheme_ == QuantScheme::Int8Block) {
          quantize_act_int8_group_ref(x, M, K, qa.data(), K, sa.data());
          ref::gemm_int8_block(qa.data(), sa.data(), qw, ref_sw_.data(), M, N, K, y);
        } else {
          quantize_act_int8_token_ref(x, M, K, qa.data(), K, sa.data());
          ref::gemm_int8_channel(qa.data(), sa.data(), qw, ref_sw_.data(), M, N, K, y);
        }
        break;
      }
      case QuantScheme::Fp8Block: {
        std::vector<uint8_t> qa(static_cast<size_t>(M * K));
        std::vector<float> sa(static_cast<size_t>(M * G));
        quantize_act_fp8_group_ref(x, M, K, qa.data(), K, sa.data());
        ref::gemm_fp8_block(qa.data(), sa.data(), ref_w8_.data(), ref_sw_.data(), M, N, K, y);
        break;
      }
      case QuantScheme::None:
        if (compute_ == ComputeType::F32) {
          ref::gemm_f32(x, ref_wf_.data(), M, N, K, y);
        } else {
          std::vector<uint16_t> xb(static_cast<size_t>(M * K));
          for (size_t i = 0; i < xb.size(); ++i) xb[i] = bf16_from_f32(x[i]);
          ref::gemm_bf16(xb.data(), ref_wb_.data(), M, N, K, y);
        }
        break;
    }
    add_bias(bias_, M, N, y);
  }

  // Output pieces of forward_columns: grain blocks of 32 columns each.
  struct Pieces {
    int64_t grain;
    cpu::PieceFn done;
  };

  // To y, or (y null) in pieces.
  void forward_int8(const float* x, const float* amax, int64_t M, float* y, const Pieces* pieces,
                    ThreadPool& pool) const {
    const int64_t K = k_, kp = int8_.kp, rows = cpu::act_rows(M), G = n_groups(K);
    int8_t* qa = scratch(t_q8, static_cast<size_t>(rows * kp));
    float* sa = scratch(t_sa, static_cast<size_t>(M * int8_.groups));
    rows_parallel(pool, M, [&](int64_t m0, int64_t m1) {
      const float* am = amax ? amax + m0 * G : nullptr;
      if (int8_.channel)
        quantize_act_int8_token(x + m0 * K, m1 - m0, K, qa + m0 * kp, kp, sa + m0, am, level_);
      else
        quantize_act_int8_group(x + m0 * K, m1 - m0, K, qa + m0 * kp, kp, sa + m0 * int8_.groups, am, level_);
    });
    gemm_int8_codes(qa, sa, M, y, pieces, pool);
  }

  // The fast int8 product from activation codes qa [act_rows(M), kp] and their scales sa: pads qa
  // with zeros (rows from M, columns from K), then to y or (y null) in pieces.
  void gemm_int8_codes(int8_t* qa, const float* sa, int64_t M, float* y, const Pieces* pieces,
                       ThreadPool& pool) const {
    zero_padding(qa, M, cpu::act_rows(M), k_, int8_.kp);
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    if (pieces)
      cpu::gemm_int8_pieces(level_, int8_, qa, sa, M, bias, pieces->grain, pieces->done, pool);
    else
      cpu::gemm_int8(level_, int8_, qa, sa, M, bias, y, pool);
  }

  void forward_float(const float* x, const float* amax, int64_t M, float* y, const Pieces* pieces,
                     ThreadPool& pool) const {
    const int64_t K = k_, kp = float_.kp, G = float_.groups;
    const bool fp8 = float_.kind == cpu::FloatKind::Fp8Block;
    float* sa = fp8 ? scratch(t_sa, static_cast<size_t>(M * G)) : nullptr;
    uint8_t* q = fp8 ? scratch(t_qf8, static_cast<size_t>(M * kp)) : nullptr;
    const float* bias = bias_.empty() ? nullptr : bias_.data();
    if (float_.amx) {
      const int64_t rows = cpu::act_rows(M);
      uint16_t* xb = scratch(t_xb, static_cast<size_t>(rows * kp));
      rows_parallel(pool, M, [&](int64_t m0, int64_t m1) {
        if (fp8) {
          quantize_act_fp8_group(x + m0 * K, m1 - m0, K, q + m0 * kp, kp, sa + m0 * G,
                                 amax ? amax + m0 * G : nullptr);
          // Vector decode: the bf16 of e4m3_to_f32 for every code.
          for (int64_t m = m0; m < m1; ++m) cpu::decode_e4m3_to_bf16_vbmi(q + m * kp, xb + m * kp, K);
        } else {
          for (int64_t m = m0; m < m1; ++m) bf16_from_f32_n(x + m * K, K, xb + m * kp);
        }
      });
      zero_padding(xb, M, rows, K, kp);
      gemm_float(xb, nullptr, sa, M, bias, y, pieces, pool);
      return;
    }
    float* xf = scratch(t_xf, static_cast<size_t>(M * kp));
    rows_parallel(pool, M, [&](int64_t m0, int64_t m1) {
      if (fp8) {
        quantize_act_fp8_group(x + m0 * K, m1 - m0, K, q + m0 * kp, kp, sa + m0 * G,
                               amax ? amax + m0 * G : nullptr);
        const float* e4m3 = e4m3_table();  // e4m3_to_f32 as a table, read inline
        for (int64_t m = m0; m < m1; ++m)
          for (int64_t k = 0; k < K; ++k) xf[m * kp + k] = e4m3[q[m * kp + k]];
      } else if (float_.kind == cpu::FloatKind::Bf16) {
        for (int64_t m = m0; m < m1; ++m)
          for (int64_t k = 0; k < K; ++k) xf[m * kp + k] = bf16_round(x[m * K + k]);
      } else {
        for (int64_t m = m0; m < m1; ++m) std::memcpy(xf + m * kp, x + m * K, sizeof(float) * K);
      }
    });
    zero_padding(xf, M, M, K, kp);
    gemm_float(nullptr, xf, sa, M, bias, y, pieces, pool);
  }

  // The float product to y, or (y null) in pieces.
  void gemm_float(const uint16_t* xb, const float* xf, const float* sa, int64_t M, const float* bias, float* y,
                  const Pieces* pieces, ThreadPool& pool) const {
    if (pieces)
      cpu::gemm_float_pieces(level_, float_, xb, xf, sa, M, bias, pieces->grain, pieces->done, pool);
    else
      cpu::gemm_float(level_, float_, xb, xf, sa, M, bias, y, pool);
  }

  QuantScheme scheme_;
  ComputeType compute_;
  KernelLevel level_;
  int64_t n_, k_;
  std::vector<float> bias_;
};

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3;
}

void check_bytes(const TensorView& t) {
  if (static_cast<size_t>(t.numel()) * dtype_size(t.dtype) != t.nbytes || (t.nbytes && !t.data))
    fail("tensor {}: {} elements of {} do not match its {} bytes (hint: truncated or corrupt checkpoint)",
         t.name, t.numel(), dtype_name(t.dtype), t.nbytes);
}

}  // namespace

QuantScheme stored_scheme(const TensorView& weight, const TensorView& scale) {
  if (!is_float_dtype(scale.dtype))
    fail("tensor {}: scale dtype {} is not a float type", scale.name, dtype_name(scale.dtype));
  const int64_t N = weight.shape.size() == 2 ? weight.shape[0] : 0, K = weight.shape.size() == 2 ? weight.shape[1] : 0;
  const bool channel_shape = scale.numel() == N && (scale.shape.size() == 1 ||
                                                    (scale.shape.size() == 2 && scale.shape[1] == 1));
  const bool block_shape = scale.shape.size() == 2 && scale.shape[0] == n_groups(N) && scale.shape[1] == n_groups(K);
  if (weight.dtype == DType::F8_E4M3 && block_shape) return QuantScheme::Fp8Block;
  if (weight.dtype == DType::I8 && block_shape) return QuantScheme::Int8Block;
  if (weight.dtype == DType::I8 && channel_shape) return QuantScheme::Int8Channel;
  fail("tensor {}: {} weight [{}, {}] with scale {} of {} elements: not a known layout (hint: "
       "weight_scale_inv [ceil(N/128), ceil(K/128)] for F8_E4M3/I8, weight_scale [N, 1] for I8)",
       weight.name, dtype_name(weight.dtype), N, K, scale.name, scale.numel());
}

std::unique_ptr<Linear> make_linear(const TensorView& weight, const TensorView* bias,
                                    const TensorView* scale, QuantScheme scheme,
                                    ComputeType compute) {
  if (weight.shape.size() != 2 || weight.shape[0] <= 0 || weight.shape[1] <= 0)
    fail("tensor {}: a linear weight must be 2-D [out, in] with positive sizes", weight.name);
  check_bytes(weight);
  const int64_t N = weight.shape[0], K = weight.shape[1];

  // What the checkpoint holds: a float weight, or a quantised one identified by its scale.
  QuantScheme stored = QuantScheme::None;
  std::vector<float> stored_scale;
  if (scale) {
    check_bytes(*scale);
    stored = stored_scheme(weight, *scale);
    stored_scale = to_f32(*scale);
    // A damaged scale would turn its whole block or row into inf/NaN outputs, silently.
    for (size_t i = 0; i < stored_scale.size(); ++i)
      if (!std::isfinite(stored_scale[i]))
        fail("tensor {}: element {} is {}, not a finite scale (hint: the checkpoint is damaged; check it against "
             "its source)", scale->name, i, stored_scale[i]);
  } else if (!is_float_dtype(weight.dtype)) {
    fail("tensor {}: dtype {} needs a scale tensor (hint: an I8 weight comes with weight_scale or "
         "weight_scale_inv)", weight.name, dtype_name(weight.dtype));
  }

  std::vector<float> bias_f;
  if (bias) {
    check_bytes(*bias);
    if (bias->numel() != N) fail("tensor {}: bias has {} elements, expected {}", bias->name, bias->numel(), N);
    bias_f = to_f32(*bias);
  }

  QuantizedWeight qw;
  std::vector<float> wf;  // float weight when we (re)quantise or keep it unquantised
  if (stored != QuantScheme::None && stored == scheme) {
    qw.scheme = stored;
    qw.n = N;
    qw.k = K;
    qw.q.assign(static_cast<const uint8_t*>(weight.data), static_cast<const uint8_t*>(weight.data) + N * K);
    qw.scale = std::move(stored_scale);
  } else {
    if (stored != QuantScheme::None) {
      QuantizedWeight src;
      src.scheme = stored;
      src.n = N;
      src.k = K;
      src.q.assign(static_cast<const uint8_t*>(weight.data), static_cast<const uint8_t*>(weight.data) + N * K);
      src.scale = std::move(stored_scale);
      wf = dequantize_weight(src);
      // Re-quantising a quantised checkpoint goes through BF16, RNE, as DeepSeek's FP8 -> BF16
      // cast script does (f32(q) * s rounded to bf16), so engine and converter agree.
      if (scheme != QuantScheme::None)
        for (float& v : wf) v = bf16_round(v);
    } else {
      wf = to_f32(weight);
    }
    if (scheme != QuantScheme::None) {
      try {
        qw = quantize_weight(wf.data(), N, K, scheme);
      } catch (const Error& e) {
        fail("tensor {}: {}", weight.name, e.what());
      }
      wf.clear();
      wf.shrink_to_fit();
    }
  }

  const KernelLevel level = active_kernel_level();
  auto layer = std::make_unique<LinearImpl>(scheme, compute, level, N, K, std::move(bias_f));
  const bool amx = level == KernelLevel::Amx;
  if (level == KernelLevel::Ref) {
    if (scheme != QuantScheme::None) {
      layer->ref_w8_ = std::move(qw.q);
      layer->ref_sw_ = std::move(qw.scale);
    } else if (compute == ComputeType::F32) {
      layer->ref_wf_ = std::move(wf);
    } else {
      layer->ref_wb_.resize(wf.size());
      bf16_from_f32_n(wf.data(), static_cast<int64_t>(wf.size()), layer->ref_wb_.data());
    }
    return layer;
  }
  switch (scheme) {
    case QuantScheme::Int8Block:
    case QuantScheme::Int8Channel:
      layer->int8_ = cpu::pack_int8(reinterpret_cast<const int8_t*>(qw.q.data()), qw.scale.data(), N, K,
                                    scheme == QuantScheme::Int8Channel);
      break;
    case QuantScheme::Fp8Block:
      layer->float_ = cpu::pack_fp8(qw.q.data(), qw.scale.data(), N, K, level);
      break;
    case QuantScheme::None:
      if (compute == ComputeType::F32) {
        layer->float_ = cpu::pack_f32(wf.data(), N, K);
      } else {
        std::vector<uint16_t> wb(wf.size());
        bf16_from_f32_n(wf.data(), static_cast<int64_t>(wf.size()), wb.data());
        layer->float_ = cpu::pack_bf16(wb.data(), N, K, amx);
      }
      break;
  }
  return layer;
}

}  // namespace qeval
