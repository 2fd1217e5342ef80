// Tensor views over mapped checkpoint bytes, shared by the readers (safetensors, GGUF), the
// model loader, the quantizers and the converter. A view does not own its bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qeval {

enum class DType { F32, F16, BF16, F8_E4M3, I8, I32, I64, U8 };

// Bytes per element.
size_t dtype_size(DType t);
// "F32", "BF16", "F8_E4M3", ... (safetensors spelling).
const char* dtype_name(DType t);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;     // row-major, outermost first (HF order: [out, in] for weights)
  const void* data = nullptr;     // points into a mapping that outlives the view
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// Converts any float-typed view (F32, F16, BF16, F8_E4M3) to f32, exactly. Throws Error for
// other dtypes.
std::vector<float> to_f32(const TensorView& t);

// Converts `n` elements of float dtype `t` at `src` (any alignment) to f32 in `dst`, exactly.
// Throws Error for non-float dtypes. Used for chunked (bounded-memory) conversion.
void to_f32_into(DType t, const void* src, size_t n, float* dst);

}  // namespace qeval
