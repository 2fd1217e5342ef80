// Paged KV cache: block arena, reference-counted sharing on fork, budgeted allocation.
#include "engine/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "engine/huge_pages.h"

namespace qeval {

KvCache::KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, size_t budget_bytes, KvType type)
    : n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim), type_(type) {
  block_elems_ = static_cast<size_t>(n_layers * 2 * n_kv_heads * kBlockTokens * head_dim);
  size_t n_blocks = std::max<size_t>(1, budget_bytes / block_bytes());
  const size_t arena_bytes = n_blocks * block_bytes();
  arena_ = std::unique_ptr<unsigned char[], FreeDeleter>(
      static_cast<unsigned char*>(allocate_hugepage_aligned(arena_bytes)), FreeDeleter{arena_bytes});
  refcount_.assign(n_blocks, 0);
  free_.reserve(n_blocks);
  for (size_t i = n_blocks; i-- > 0;) free_.push_back(static_cast<int32_t>(i));
}

int KvCache::create() {
  int id;
  if (!free_seqs_.empty()) {
    id = free_seqs_.back();
    free_seqs_.pop_back();
  } else {
    id = static_cast<int>(seqs_.size());
    seqs_.emplace_back();
  }
  seqs_[id].blocks.clear();
  seqs_[id].live = true;
  return id;
}

int32_t KvCache::take_block() {
  int32_t b = free_.back();
  free_.pop_back();
  refcount_[b] = 1;
  return b;
}

void KvCache::drop_block(int32_t b) {
  if (--refcount_[b] == 0) free_.push_back(b);
}

int KvCache::fork(int parent, int64_t n_tokens) {
  const Seq& p = seqs_[parent];
  if (n_tokens > static_cast<int64_t>(p.blocks.size()) * kBlockTokens)
    fail("kv cache: fork of {} positions from a sequence holding {}", n_tokens,
         p.blocks.size() * kBlockTokens);
  int64_t n_full = n_tokens / kBlockTokens;
  bool partial = n_tokens % kBlockTokens != 0;
  if (partial && free_.empty()) return -1;
  int child = create();
  Seq& c = seqs_[child];
  const Seq& pp = seqs_[parent];  // create() may have reallocated seqs_
  for (int64_t i = 0; i < n_full; ++i) {
    c.blocks.push_back(pp.blocks[i]);
    ++refcount_[pp.blocks[i]];
  }
  if (partial) {
    int32_t src = pp.blocks[n_full];
    int32_t dst = take_block();
    std::memcpy(arena_.get() + static_cast<size_t>(dst) * block_bytes(),
                arena_.get() + static_cast<size_t>(src) * block_bytes(), block_bytes());
    c.blocks.push_back(dst);
  }
  return child;
}

int64_t KvCache::blocks_needed(int seq, int64_t n_tokens) const {
  return std::max<int64_t>(0, blocks_for(n_tokens) - static_cast<int64_t>(seqs_[seq].blocks.size()));
}

bool KvCache::reserve(int seq, int64_t n_tokens) {
  int64_t need = blocks_needed(seq, n_tokens);
  if (need > n_blocks_free()) return false;
  for (int64_t i = 0; i < need; ++i) seqs_[seq].blocks.push_back(take_block());
  return true;
}

void KvCache::release(int seq) {
  Seq& s = seqs_[seq];
  if (!s.live) return;
  for (int32_t b : s.blocks) drop_block(b);
  s.blocks.clear();
  s.live = false;
  free_seqs_.push_back(seq);
}

}  // namespace qeval
