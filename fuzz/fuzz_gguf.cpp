// libFuzzer target: the GGUF reader (header, metadata, tensor infos, config and vocabulary
// extraction) on arbitrary bytes. Any input must either parse or throw qeval::Error.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "engine/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto g = qeval::GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
    for (const auto& ti : g->tensor_infos()) {
      try {
        if (const auto* v = g->find(ti.name)) (void)qeval::to_f32(*v);
      } catch (const qeval::Error&) {
      }
    }
    try {
      (void)g->model_config();
    } catch (const qeval::Error&) {
    }
    (void)g->vocab();
  } catch (const qeval::Error&) {
  }
  return 0;
}
