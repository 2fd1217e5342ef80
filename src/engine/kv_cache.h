// Paged key/value cache of the engine's transformer: a fixed arena of blocks (kBlockTokens
// positions each) sized by a memory budget, handed out to sequences on demand. A sequence may be
// forked from another (loglikelihood: four continuations of one context) and then shares the
// parent's full blocks by reference count; a partial block is copied on fork, so writes never
// touch shared blocks. Not thread-safe for allocation; concurrent reads/writes of distinct
// positions (attention on a thread pool) are fine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace qeval {

class KvCache {
 public:
  static constexpr int kBlockTokens = 32;

  // Cache for a model with n_layers layers of n_kv_heads heads of head_dim floats (K and V,
  // f32). budget_bytes is rounded down to whole blocks; at least one block is always allocated.
  KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, size_t budget_bytes);

  // Bytes one block holds (all layers, K and V) and one token needs.
  size_t block_bytes() const { return block_floats_ * sizeof(float); }
  size_t bytes_per_token() const { return block_bytes() / kBlockTokens; }
  int64_t n_blocks_total() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t n_blocks_free() const { return static_cast<int64_t>(free_.size()); }
  // Blocks a fresh sequence of n_tokens positions needs.
  static int64_t blocks_for(int64_t n_tokens) { return (n_tokens + kBlockTokens - 1) / kBlockTokens; }

  // A new empty sequence; returns its handle.
  int create();
  // A new sequence whose first n_tokens positions are those of `parent` (which must have
  // capacity for them). Full blocks are shared; the trailing partial block is copied.
  // Returns -1 when no block is free for that copy.
  int fork(int parent, int64_t n_tokens);
  // Ensures `seq` can hold n_tokens positions. Returns false (allocating nothing) when the free
  // blocks do not suffice.
  bool reserve(int seq, int64_t n_tokens);
  // Extra blocks reserve(seq, n_tokens) would take.
  int64_t blocks_needed(int seq, int64_t n_tokens) const;
  // Returns the sequence's blocks to the pool (shared ones when their last user leaves).
  void release(int seq);

  int64_t capacity(int seq) const {
    return static_cast<int64_t>(seqs_[seq].blocks.size()) * kBlockTokens;
  }

  // Element 0 of the K (or V) vector of kv head `head` at layer `layer`, position `pos`.
  // K: element e is at [e * kBlockTokens] (a block stores each head's keys transposed,
  // [head_dim, kBlockTokens], so scores take 16 or 32 consecutive keys of one element as a
  // vector). V: element e is at [e] (row-major, [kBlockTokens, head_dim], so the weighted sum
  // takes 16 consecutive elements of one value as a vector). `pos` must be < capacity(seq).
  float* k_at(int seq, int64_t layer, int64_t head, int64_t pos) {
    return slot(seq, layer, 0, head, pos);
  }
  float* v_at(int seq, int64_t layer, int64_t head, int64_t pos) {
    return slot(seq, layer, 1, head, pos);
  }
  const float* k_at(int seq, int64_t layer, int64_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->slot(seq, layer, 0, head, pos);
  }
  const float* v_at(int seq, int64_t layer, int64_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->slot(seq, layer, 1, head, pos);
  }

 private:
  struct Seq {
    std::vector<int32_t> blocks;
    bool live = false;
  };
  // Block layout: [layer][kv (0=K,1=V)][head] of [head_dim][kBlockTokens] (K) or
  // [kBlockTokens][head_dim] (V).
  float* slot(int seq, int64_t layer, int kv, int64_t head, int64_t pos) {
    int32_t b = seqs_[seq].blocks[pos / kBlockTokens];
    return arena_.get() + static_cast<size_t>(b) * block_floats_ +
           ((layer * 2 + kv) * n_kv_heads_ + head) * kBlockTokens * head_dim_ +
           (pos % kBlockTokens) * (kv == 0 ? 1 : head_dim_);
  }
  int32_t take_block();
  void drop_block(int32_t b);

  int64_t n_layers_, n_kv_heads_, head_dim_;
  size_t block_floats_;
  struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
  };
  // Uninitialised: pages are touched only when used. Huge pages: attention reads a kv head's
  // 8 KiB slice of every block of a sequence, one block (~0.8 MiB for a 0.5B model) apart.
  std::unique_ptr<float[], FreeDeleter> arena_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;
  std::vector<Seq> seqs_;
  std::vector<int> free_seqs_;
};

}  // namespace qeval
