// libFuzzer target: the safetensors reader on arbitrary bytes. Any input must either parse or
// throw qeval::Error; anything else (crash, ASan report, other exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = qeval::SafetensorsFile::parse(std::span<const uint8_t>(data, size), "fuzz.safetensors");
    for (const auto& t : f->tensors()) {
      if (t.dtype == qeval::DType::F32 || t.dtype == qeval::DType::F16 || t.dtype == qeval::DType::BF16 ||
          t.dtype == qeval::DType::F8_E4M3)
        (void)qeval::to_f32(t);  // touches every byte of the view
      (void)f->find(t.name);
    }
  } catch (const qeval::Error&) {
  }
  return 0;
}
