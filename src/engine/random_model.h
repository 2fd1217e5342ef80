// Random-weight models held in memory, for benchmarks and tests without downloads: real
// architectures' shapes (Qwen2.5-0.5B, DeepSeek-R1-Distill-Qwen-1.5B) or any ModelConfig, with
// HF tensor names, so they load through the same Model constructor as a checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/tensor.h"

namespace qeval {

// Named shapes: "qwen2.5-0.5b" (hidden 896, 24 layers, 14/2 heads, FFN 4864, vocab 151936,
// tied, qkv bias), "r1-distill-qwen-1.5b" (1536, 28 layers, 12/2 heads, FFN 8960, vocab
// 151936, untied, qkv bias), "tiny" (64, 2 layers, 4/2 heads, FFN 96, vocab 256, untied, bias).
// Throws Error listing the names for an unknown one.
ModelConfig random_model_config(std::string_view name);

// Tensors of a random model. Weights are uniform in ±sqrt(3/K) (unit-variance outputs for unit
// inputs), biases ±0.1, norm weights in [0.5, 1.5]; the same seed gives the same weights.
// `dtype` is F32 or BF16 (all tensors stored in it).
class RandomModel {
 public:
  RandomModel(const ModelConfig& cfg, DType dtype, uint64_t seed);

  const ModelConfig& config() const { return cfg_; }
  // Lookup for Model's constructor; valid while this object lives.
  TensorLookup lookup() const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }

 private:
  void add(const std::string& name, std::vector<int64_t> shape, float lo, float hi);

  ModelConfig cfg_;
  DType dtype_;
  uint64_t state_;
  std::map<std::string, TensorView> tensors_;
  std::vector<std::unique_ptr<uint8_t[]>> storage_;
};

}  // namespace qeval
