// Scalar twins of every linear-layer kernel: plain loops that define the numerics the fast
// kernels (kernels/cpu) are tested against. All compute y[M, N] = x[M, K] · W[N, K]^T with
// row-major operands of leading dimension K (x, W) and N (y); no bias.
//
// Accumulation order (the definition of each result, independent of M):
//   f32 / bf16   acc = fma(x[m,k], w[n,k], acc) for k = 0..K-1, from acc = 0.
//   fp8 block    per 128-group g: gsum = fma-chain over the group's k (decoded e4m3, exact
//                products), then acc = fma(gsum, sa[m,g] * sw[n/128,g], acc) for g = 0..G-1.
//   int8 block   per group: exact int32 sum, then acc = fma(f32(isum), sa[m,g] * sw[n/128,g], acc).
//   int8 channel exact int32 sum over all K, y = f32(isum) * (sa[m] * sw[n]).
// The AVX2/AVX-512 kernels reproduce these bit for bit; the AMX-BF16 kernels reorder the float
// sums inside a group (tile dot products) and are compared with a tolerance.
#pragma once

#include <cstdint>

namespace qeval::ref {

// x [M, K] f32, w [N, K] f32 -> y [M, N].
void gemm_f32(const float* x, const float* w, int64_t M, int64_t N, int64_t K, float* y);

// x [M, K] bf16 bits, w [N, K] bf16 bits -> y [M, N] f32 (f32 accumulation).
void gemm_bf16(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K, float* y);

// qa [M, K] e4m3, sa [M, G]; qw [N, K] e4m3, sw [ceil(N/128), G]; G = ceil(K/128).
void gemm_fp8_block(const uint8_t* qa, const float* sa, const uint8_t* qw, const float* sw,
                    int64_t M, int64_t N, int64_t K, float* y);

// qa [M, K] int8, sa [M, G]; qw [N, K] int8, sw [ceil(N/128), G].
void gemm_int8_block(const int8_t* qa, const float* sa, const int8_t* qw, const float* sw,
                     int64_t M, int64_t N, int64_t K, float* y);

// qa [M, K] int8, sa [M]; qw [N, K] int8, sw [N].
void gemm_int8_channel(const int8_t* qa, const float* sa, const int8_t* qw, const float* sw,
                       int64_t M, int64_t N, int64_t K, float* y);

}  // namespace qeval::ref
