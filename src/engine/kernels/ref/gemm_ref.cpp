// Scalar reference kernels; see gemm_ref.h for the accumulation order each one defines.
// std::fma is used explicitly so the result does not depend on the compiler's contraction.
#include "engine/kernels/ref/gemm_ref.h"

#include <algorithm>
#include <cmath>

#include "engine/quant.h"

namespace qeval::ref {

void gemm_f32(const float* x, const float* w, int64_t M, int64_t N, int64_t K, float* y) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc = std::fma(x[m * K + k], w[n * K + k], acc);
      y[m * N + n] = acc;
    }
}

void gemm_bf16(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K, float* y) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k)
        acc = std::fma(bf16_to_f32(x[m * K + k]), bf16_to_f32(w[n * K + k]), acc);
      y[m * N + n] = acc;
    }
}

void gemm_fp8_block(const uint8_t* qa, const float* sa, const uint8_t* qw, const float* sw,
                    int64_t M, int64_t N, int64_t K, float* y) {
  const int64_t G = n_groups(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
        float gsum = 0.0f;
        for (int64_t k = k0; k < k1; ++k)
          gsum = std::fma(e4m3_to_f32(qa[m * K + k]), e4m3_to_f32(qw[n * K + k]), gsum);
        acc = std::fma(gsum, sa[m * G + g] * sw[(n / kQuantBlock) * G + g], acc);
      }
      y[m * N + n] = acc;
    }
}

void gemm_int8_block(const int8_t* qa, const float* sa, const int8_t* qw, const float* sw,
                     int64_t M, int64_t N, int64_t K, float* y) {
  const int64_t G = n_groups(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
        int32_t isum = 0;
        for (int64_t k = k0; k < k1; ++k) isum += int32_t{qa[m * K + k]} * int32_t{qw[n * K + k]};
        acc = std::fma(static_cast<float>(isum), sa[m * G + g] * sw[(n / kQuantBlock) * G + g], acc);
      }
      y[m * N + n] = acc;
    }
}

void gemm_int8_channel(const int8_t* qa, const float* sa, const int8_t* qw, const float* sw,
                       int64_t M, int64_t N, int64_t K, float* y) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int32_t isum = 0;
      for (int64_t k = 0; k < K; ++k) isum += int32_t{qa[m * K + k]} * int32_t{qw[n * K + k]};
      y[m * N + n] = static_cast<float>(isum) * (sa[m] * sw[n]);
    }
}

}  // namespace qeval::ref
