// The decoder-only transformer of the embedded engine (Llama, Qwen2, Mistral): token
// embedding, n_layers × [RMSNorm → GQA attention with rotate-half RoPE (theta, linear / llama3
// scaling) → residual → RMSNorm → SwiGLU MLP → residual], final RMSNorm, tied or untied lm_head.
// Every projection is a `Linear` (engine/linear.h), so the weight precision and quantization
// scheme live behind that seam; embeddings, norms and lm_head are never quantised.
//
// Shapes below: T tokens in a forward batch (all sequences together), D hidden, H query heads,
// G kv heads, E head_dim, F intermediate, V vocab.
//
// Precision: `ComputeType::BF16` keeps weights (and embeddings) in bf16 and feeds matmuls
// bf16-rounded inputs (done by Linear) with f32 accumulation; norms, RoPE, attention, softmax
// and the residual stream are f32 in both modes; the KV cache is f32.
//
// Batch invariance: every row (token) is computed by the same code in the same reduction order
// whatever else is in the batch (Linear guarantees it for matmuls; norms, RoPE and attention
// are per row/per head with fixed-order loops), so results do not depend on batching.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/huge_pages.h"
#include "engine/kv_cache.h"
#include "engine/linear.h"
#include "engine/model_config.h"
#include "engine/tensor.h"

namespace qeval {

// Returns the tensor stored under an HF name, or nullptr when absent. Views must outlive the
// Model only during construction (weights are packed/copied by make_linear or into the model),
// except the embedding table, which must outlive the Model.
using TensorLookup = std::function<const TensorView*(const std::string&)>;

struct ModelOptions {
  ComputeType compute = ComputeType::F32;
  QuantScheme quant = QuantScheme::None;  // scheme of the q/k/v/o and MLP projections
  // The scheme is the checkpoint's own (its quantization_config): a projection is quantised
  // exactly when it has a scale tensor, and that scale must be of `quant`'s layout.
  bool quant_from_checkpoint = false;
  bool fuse = true;  // q/k/v and gate/up as one layer each where the weights allow (same outputs)
  bool f32_kv = false;  // keep an f32 KV cache under bf16 compute too (not with AMX attention)
};

// One sequence's part of a forward batch.
struct SeqChunk {
  int seq = 0;                      // KvCache handle, capacity >= pos0 + tokens.size()
  int64_t pos0 = 0;                 // position of tokens[0]; positions < pos0 are cached
  std::span<const int32_t> tokens;
  int64_t logits_from = 0;          // logits wanted for tokens[logits_from, size); size = none
};

// Receives one row of logits: chunk index, token index inside the chunk, logits [V].
// The span is valid only during the call.
using LogitsFn = std::function<void(size_t chunk, int64_t token, std::span<const float> logits)>;

class Model {
 public:
  // Builds the layers from HF-named tensors. A weight's scale tensor ("<name>_scale_inv" or
  // "<name>_scale" beside "<name>") is passed to make_linear when present. Throws Error naming
  // the tensor on a missing tensor or a wrong shape.
  Model(const ModelConfig& cfg, const TensorLookup& find, const ModelOptions& opt);
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const ModelOptions& options() const { return opt_; }

  // Bytes of weights read by one forward step (all Linear layers incl. lm_head): the decode
  // cost per step whatever the batch.
  size_t weight_bytes_per_step() const;

  // A KV cache shaped for this model, with `budget_bytes` of blocks.
  std::unique_ptr<KvCache> make_kv_cache(size_t budget_bytes) const;

  // Runs the chunks (at most one per sequence) as one batch: writes their K/V at positions
  // pos0.. into `kv` and calls on_logits for every requested row, chunks in order, tokens in
  // order. Not thread-safe (uses internal scratch); uses `pool` for all parallel work.
  void forward(std::span<const SeqChunk> chunks, KvCache& kv, ThreadPool& pool,
               const LogitsFn& on_logits);

 private:
  struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // [D]
    std::unique_ptr<Linear> wq, wk, wv, wo, w_gate, w_up, w_down;
    // When the weights allow it (same dtype, no checkpoint scales, quant blocks aligned), q/k/v
    // and gate/up are packed as one layer each (one matmul and one thread-pool barrier instead of
    // three / two; every output row's arithmetic is unchanged) and wq/wk/wv, w_gate/w_up are null.
    // gate/up rows alternate in runs of 128 so that its output comes in pieces of matching gate
    // and up columns, which forward() turns into silu(gate) * up while they are in cache.
    std::unique_ptr<Linear> wqkv, w_gate_up;
  };
  void embed(int32_t token, float* out) const;
  // att_ [T, H*E] from q_ and the cached K/V of layer `layer` (causal, per token and head).
  void attention(int64_t layer, std::span<const SeqChunk> chunks, ThreadPool& pool);

  ModelConfig cfg_;
  ModelOptions opt_;
  bool use_avx512_ = false;            // attention kernel (bit-identical to the AVX2 one)
  // bf16 compute at kernel level Amx (head_dim a multiple of 32): a bf16 KV cache in tile
  // layout and the AMX-BF16 attention (kernels/cpu/attention_amx.h); else the vector kernels
  bool amx_attention_ = false;
  KvType kv_type_ = KvType::F32;       // Bf16Tiles (AMX), Bf16 (other bf16 compute) or F32
  TensorView embed_;                   // [V, D], borrowed
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;      // [D]
  std::unique_ptr<Linear> lm_head_;    // V x D
  std::vector<double> inv_freq_;       // [E/2] after rope scaling

  // Per-forward scratch.
  // Activations of the current step (huge pages: the kernels stream through them).
  using ActVec = std::vector<float, HugePageAllocator<float>>;
  ActVec x_, xn_, q_, k_, v_, att_, o_, gate_, up_, fused_;
  // [T, F / 128] group maxima of gate_, found by the SwiGLU epilogue; or, where it quantises for
  // an int8-block down projection, the scales of its codes in down_q_ [rows, ld]
  std::vector<float> gate_amax_;
  std::vector<int8_t, HugePageAllocator<int8_t>> down_q_;
  std::vector<float> rope_cos_, rope_sin_;  // [T, E/2]
  std::vector<int32_t> tok_seq_;            // [T] kv handle of each token
  std::vector<int64_t> tok_pos_;            // [T]
  std::vector<std::vector<float>> scores_;  // per thread
  std::vector<int64_t> tiles_;              // first token of each attention tile, then T
  ActVec head_in_, logits_;
  KvCache* kv_ = nullptr;                   // cache of the forward in progress
};

// Rounds f32 to the nearest bf16 (ties to even), returned as f32.
float round_bf16(float x);

}  // namespace qeval
