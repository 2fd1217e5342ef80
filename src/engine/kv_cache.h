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

#include "engine/huge_pages.h"

namespace qeval {

// How a block stores K and V (see k_at / k_tiles).
enum class KvType {
  F32,       // f32, K transposed and V row-major: the vector attention kernels' layout
  Bf16,      // the same layout in bf16 (rounded to nearest even): half the bytes
  Bf16Tiles  // bf16 (rounded to nearest even), laid out as AMX-BF16 B tiles
};

class KvCache {
 public:
  static constexpr int kBlockTokens = 32;

  // Cache for a model with n_layers layers of n_kv_heads heads of head_dim values (K and V).
  // budget_bytes is rounded down to whole blocks; at least one block is always allocated.
  KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, size_t budget_bytes,
          KvType type = KvType::F32);

  KvType type() const { return type_; }
  // Bytes one block holds (all layers, K and V) and one token needs.
  size_t block_bytes() const { return block_elems_ * elem_bytes(); }
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

  // KvType::F32 (T = float) and KvType::Bf16 (T = uint16_t, bf16 bits). Element 0 of the K (or
  // V) vector of kv head `head` at layer `layer`, position `pos`.
  // K: element e is at [e * kBlockTokens] (a block stores each head's keys transposed,
  // [head_dim, kBlockTokens], so scores take 16 or 32 consecutive keys of one element as a
  // vector). V: element e is at [e] (row-major, [kBlockTokens, head_dim], so the weighted sum
  // takes 16 consecutive elements of one value as a vector). `pos` must be < capacity(seq).
  template <class T = float>
  T* k_at(int seq, int64_t layer, int64_t head, int64_t pos) {
    return static_cast<T*>(slot(seq, layer, 0, head, pos)) + pos % kBlockTokens;
  }
  template <class T = float>
  T* v_at(int seq, int64_t layer, int64_t head, int64_t pos) {
    return static_cast<T*>(slot(seq, layer, 1, head, pos)) + pos % kBlockTokens * head_dim_;
  }
  template <class T = float>
  const T* k_at(int seq, int64_t layer, int64_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->k_at<T>(seq, layer, head, pos);
  }
  template <class T = float>
  const T* v_at(int seq, int64_t layer, int64_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->v_at<T>(seq, layer, head, pos);
  }

  // KvType::Bf16Tiles. The K (or V) of kv head `head` at layer `layer` for the block holding
  // position `pos` (positions pos / 32 * 32 + j, j < 32): 32 * head_dim bf16 values, the element
  // e of key j at k_tile_index(e, j) / v_tile_index(e, j, head_dim). K is [head_dim / 2][32
  // keys][2]: a 16-row B tile of 16 keys per 32 elements of q (row stride 128 bytes) for q · K^T.
  // V is [16 key pairs][head_dim][2]: a 16-row B tile of 16 output elements per block for p · V.
  static int64_t k_tile_index(int64_t e, int64_t j) { return ((e / 2) * kBlockTokens + j) * 2 + e % 2; }
  static int64_t v_tile_index(int64_t e, int64_t j, int64_t head_dim) { return ((j / 2) * head_dim + e) * 2 + j % 2; }
  uint16_t* k_tiles(int seq, int64_t layer, int64_t head, int64_t pos) {
    return static_cast<uint16_t*>(slot(seq, layer, 0, head, pos));
  }
  uint16_t* v_tiles(int seq, int64_t layer, int64_t head, int64_t pos) {
    return static_cast<uint16_t*>(slot(seq, layer, 1, head, pos));
  }
  const uint16_t* k_tiles(int seq, int64_t layer, int64_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->k_tiles(seq, layer, head, pos);
  }
  const uint16_t* v_tiles(int seq, int64_t layer, int64_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->v_tiles(seq, layer, head, pos);
  }

 private:
  struct Seq {
    std::vector<int32_t> blocks;
    bool live = false;
  };
  size_t elem_bytes() const { return type_ == KvType::F32 ? 4 : 2; }
  // Block layout: [layer][kv (0=K,1=V)][head] of kBlockTokens * head_dim values; see k_at
  // (F32) and k_tiles (Bf16Tiles) for the order inside. Returns the start of that part.
  void* slot(int seq, int64_t layer, int kv, int64_t head, int64_t pos) {
    int32_t b = seqs_[seq].blocks[pos / kBlockTokens];
    return arena_.get() + (static_cast<size_t>(b) * block_elems_ +
                           static_cast<size_t>(((layer * 2 + kv) * n_kv_heads_ + head) * kBlockTokens * head_dim_)) *
                              elem_bytes();
  }
  int32_t take_block();
  void drop_block(int32_t b);

  int64_t n_layers_, n_kv_heads_, head_dim_;
  KvType type_;
  size_t block_elems_;
  struct FreeDeleter {  // no default member initialiser: unique_ptr needs it default-constructible here
    size_t bytes;
    void operator()(unsigned char* p) const { free_hugepage_aligned(p, bytes); }
  };
  // Uninitialised: pages are touched only when used. Huge pages: attention reads a kv head's
  // 8 KiB slice of every block of a sequence, one block (~0.8 MiB for a 0.5B model) apart.
  std::unique_ptr<unsigned char[], FreeDeleter> arena_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;
  std::vector<Seq> seqs_;
  std::vector<int> free_seqs_;
};

}  // namespace qeval
