// Checkpoint converter (`qeval convert`): BF16/F16/F32 or DeepSeek FP8 HF checkpoints to
// bf16, fp8-block, int8-block or int8-channel safetensors, one tensor (and one 128-row slab)
// at a time so peak memory does not grow with the model; shards + index json, config.json with
// the right quantization_config, other files copied, resumable per shard, optional verify pass.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace qeval {

struct ConvertOptions {
  std::filesystem::path in;            // HF directory (config.json + safetensors)
  std::filesystem::path out;           // output directory (created)
  std::string to;                      // "bf16" | "fp8-block" | "int8-block" | "int8-channel"
  bool verify = false;                 // re-read the output and check every tensor
  uint64_t shard_bytes = 5ull << 30;   // target maximum output shard size
  bool progress = true;                // progress line on stderr
  // "" when usable, else a message naming the bad option.
  std::string validate() const;
};

struct ConvertStats {
  uint64_t bytes_in = 0;               // input tensor bytes of the whole checkpoint
  uint64_t bytes_converted = 0;        // of them, in shards converted by this run (not reused): the
                                       // bytes the rates divide
  uint64_t bytes_out = 0;              // output tensor bytes written
  int n_tensors_out = 0;
  int n_quantized = 0;                 // weights quantised (or kept quantised)
  int n_shards = 0;
  int n_shards_skipped = 0;            // already complete from an earlier run (resume)
  double seconds = 0;                  // wall clock of the conversion (without verify)
  double cpu_seconds = 0;              // user + system CPU time of the conversion
  double verify_seconds = 0;
  long peak_rss_kb = 0;                // getrusage maxrss at the end
};

// Runs the conversion into opt.out, which must be new, empty, or an earlier run of the same
// conversion (same inputs, unchanged, same target and shard size: its marker file
// .qeval_convert says so). Throws Error naming the file/tensor on any problem (a weight to
// quantise that holds inf or NaN is one); on failure the shards completed so far stay in place
// and a re-run skips them. The index is written last, after --verify: its presence marks a
// complete output.
ConvertStats convert_checkpoint(const ConvertOptions& opt);

// The CLI entry: runs convert_checkpoint and prints a summary; returns the exit code (0).
int convert_main(const ConvertOptions& opt);

// Quantises `rows` (<= 128) rows of w [rows, K] f32, the rows of one 128-row block row, in
// `scheme` (not None): q [rows, K] (int8 or e4m3 bits), scales [ceil(K/128)] (block schemes)
// or [rows] (Int8Channel). Bit-identical to quantize_weight() of quant.h on the same rows
// (AVX2; the converter's hot loop). Thread-safe. Returns false, q and scales then unspecified,
// when a value is inf or NaN (it has no code).
bool quantize_rows(const float* w, int64_t rows, int64_t K, int scheme, uint8_t* q, float* scales);

// Whether the converter quantises a tensor of this name and rank when the input carries no
// scale for it: 2-D `.weight` tensors except embeddings, lm_head, norms and MoE routers
// (`*.gate.weight` as mlp.gate and block_sparse_moe.gate, `shared_expert_gate.weight`,
// `*.router.weight`).
bool is_quantizable_weight(const std::string& name, size_t rank);

}  // namespace qeval
