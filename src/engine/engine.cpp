// Engine: model loading, continuous-batching generation, loglikelihood scoring, next-token
// distributions and the speed benchmark.
#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <thread>
#include <unordered_set>

#include "core/error.h"
#include "core/text.h"
#include "engine/checkpoint.h"
#include "engine/random_model.h"

namespace qeval {

ComputeType parse_compute_type(const std::string& s, const std::string& where) {
  if (s == "bf16" || s == "bfloat16") return ComputeType::BF16;
  if (s == "f32" || s == "float32") return ComputeType::F32;
  fail("{}: dtype: unknown value '{}' (hint: bf16 or f32)", where, s);
}

const char* compute_type_name(ComputeType t) { return t == ComputeType::BF16 ? "bf16" : "f32"; }

std::string EngineOptions::validate() const {
  if (model.empty()) return "model: missing (hint: a HF directory, a .gguf file or random:<shape>)";
  if (threads > kMaxEngineThreads)
    return fmt::format("threads must be at most {}, got {} (hint: 0 uses every core)", kMaxEngineThreads, threads);
  if (max_batch < 1) return "max_batch must be >= 1";
  if (max_step_tokens < max_batch + 1) return "max_step_tokens must exceed max_batch";
  return "";
}

namespace {

QuantScheme checkpoint_scheme(const ModelConfig& c) {
  if (c.quantization_config.is_null() || !c.quantization_config.is_object()) return QuantScheme::None;
  // parse_hf_config checked that quant_method is a string or null (absent).
  const auto it = c.quantization_config.find("quant_method");
  const std::string m = it != c.quantization_config.end() && it->is_string() ? it->get<std::string>() : "";
  if (m == "fp8") return QuantScheme::Fp8Block;
  if (m == "blockwise_int8") return QuantScheme::Int8Block;
  if (m == "w8a8_int8") return QuantScheme::Int8Channel;
  fail("config.json: quantization_config.quant_method '{}' is not supported (hint: fp8, "
       "blockwise_int8 or w8a8_int8)", m);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const EngineOptions& opt) {
  if (std::string e = opt.validate(); !e.empty()) fail("engine: {}", e);
  std::unique_ptr<Engine> eng(new Engine());
  eng->opt_ = opt;
  ModelOptions mo;
  const TensorView* embed = nullptr;
  TensorLookup lookup;
  ModelConfig cfg;
  if (opt.model.rfind("random:", 0) == 0) {
    std::string shape = opt.model.substr(7);
    cfg = random_model_config(shape);
    ComputeType ct = opt.dtype.value_or(cfg.torch_dtype == "float32" ? ComputeType::F32
                                                                     : ComputeType::BF16);
    eng->random_ = std::make_unique<RandomModel>(
        cfg, ct == ComputeType::F32 ? DType::F32 : DType::BF16, opt.seed);
    lookup = eng->random_->lookup();
    mo.compute = ct;
    mo.quant = opt.quantization.value_or(QuantScheme::None);
    eng->fingerprint_ = fmt::format("{}:{}", opt.model, opt.seed);
  } else {
    eng->checkpoint_ = Checkpoint::open(opt.model);
    const Checkpoint& ck = *eng->checkpoint_;
    cfg = ck.config();
    lookup = [&ck](const std::string& n) { return ck.find(n); };
    embed = ck.find("model.embed_tokens.weight");
    ComputeType def = ComputeType::BF16;
    if (cfg.torch_dtype == "float32" || (cfg.torch_dtype.empty() && embed && embed->dtype == DType::F32))
      def = ComputeType::F32;
    mo.compute = opt.dtype.value_or(def);
    const QuantScheme held = checkpoint_scheme(cfg);
    mo.quant = opt.quantization ? *opt.quantization : held;
    // Naming the checkpoint's own scheme is the same as leaving it out.
    mo.quant_from_checkpoint = held != QuantScheme::None && (!opt.quantization || *opt.quantization == held);
    if (opt.quantization && held != QuantScheme::None && *opt.quantization != held &&
        *opt.quantization != QuantScheme::None)
      fmt::print(stderr, "note: {} is quantised as {}; quantization: {} dequantises its weights (to bf16, RNE) "
                 "and quantises them again as {}\n", opt.model, quant_scheme_name(held),
                 quant_scheme_name(*opt.quantization), quant_scheme_name(*opt.quantization));
    eng->tokenizer_ = ck.tokenizer();
    eng->fingerprint_ = ck.fingerprint();
  }
  eng->model_ = std::make_unique<Model>(cfg, lookup, mo);
  if (unsigned hw = std::thread::hardware_concurrency(); hw > 0 && opt.threads > static_cast<int>(hw))
    fmt::print(stderr, "warning: {} threads on {} hardware threads: the engine's threads wait for each other, "
               "so this runs slower than threads: 0 (all cores)\n", opt.threads, hw);
  eng->pool_ = std::make_unique<ThreadPool>(opt.threads);
  // ModelConfig::validate bounds layers, kv heads * head_dim and positions, so this fits in
  // size_t; the product of the three below may not, and saturates.
  const size_t per_token = static_cast<size_t>(cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim) * 4;
  auto saturating_mul = [](size_t a, size_t b) {
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
  };
  // Default: max_batch full contexts, and at least two: a loglikelihood request forks its
  // continuations from its context's sequence, so even max_batch 1 holds a context and the
  // continuations' blocks past its full ones.
  size_t budget = opt.kv_cache_mb > 0
                      ? static_cast<size_t>(opt.kv_cache_mb) << 20
                      : std::min<size_t>(saturating_mul(saturating_mul(static_cast<size_t>(std::max(opt.max_batch, 2)),
                                                                       static_cast<size_t>(cfg.max_position_embeddings) +
                                                                           KvCache::kBlockTokens),
                                                        per_token),
                                         size_t{2048} << 20);
  eng->kv_ = eng->model_->make_kv_cache(budget);
  return eng;
}

void Engine::run_feeds(std::vector<Feed>& feeds,
                       const std::function<void(size_t, int64_t, std::span<const float>)>& on_logits) {
  std::vector<int64_t> done(feeds.size(), 0);
  std::vector<SeqChunk> chunks;
  std::vector<size_t> chunk_feed;
  std::vector<int64_t> chunk_off;
  size_t first = 0;
  while (first < feeds.size()) {
    chunks.clear();
    chunk_feed.clear();
    chunk_off.clear();
    int64_t budget = opt_.max_step_tokens;
    for (size_t f = first; f < feeds.size() && budget > 0; ++f) {
      const Feed& fd = feeds[f];
      const int64_t n = static_cast<int64_t>(fd.tokens.size());
      if (done[f] >= n) continue;
      const int64_t take = std::min(budget, n - done[f]);
      SeqChunk c;
      c.seq = fd.seq;
      c.pos0 = fd.pos0 + done[f];
      c.tokens = fd.tokens.subspan(done[f], take);
      c.logits_from = std::max<int64_t>(0, fd.logits_from - done[f]);
      chunks.push_back(c);
      chunk_feed.push_back(f);
      chunk_off.push_back(done[f]);
      done[f] += take;
      budget -= take;
    }
    model_->forward(chunks, *kv_, *pool_, [&](size_t ci, int64_t t, std::span<const float> lg) {
      on_logits(feeds[chunk_feed[ci]].id, chunk_off[ci] + t, lg);
    });
    while (first < feeds.size() && done[first] >= static_cast<int64_t>(feeds[first].tokens.size()))
      ++first;
  }
}

std::string Engine::completion_piece(std::span<const int32_t> prompt, int32_t token,
                                     bool first) const {
  const Tokenizer& tk = *tokenizer_;
  if (first) {
    // Decode with a short prompt tail as context so tokenizer rules that depend on position
    // (SentencePiece's leading space after BOS) apply as they would to the full text.
    size_t k = std::min<size_t>(prompt.size(), 4);
    std::vector<int32_t> ids(prompt.end() - k, prompt.end());
    std::string before = tk.decode(ids, true);
    ids.push_back(token);
    std::string after = tk.decode(ids, true);
    if (after.compare(0, before.size(), before) == 0) return after.substr(before.size());
  }
  return tk.is_special(token) ? std::string() : tk.token_bytes(token);
}

void Engine::generate(std::span<const GenerationRequest> requests,
                      const std::function<void(size_t, GenerationOutput&&)>& on_done) {
  const int64_t ctx = context_length();
  struct Active {
    size_t index = 0;
    int seq = -1;
    std::vector<int32_t> tokens;   // prompt then generated
    int64_t n_prompt = 0, n_cached = 0, max_new = 0;
    std::unique_ptr<Sampler> sampler;
    GenerationOutput out;
    size_t max_stop = 0;
    bool has_logits = false;
    int32_t next = -1;
  };
  std::unordered_set<int32_t> stop_ids;
  if (tokenizer_) stop_ids.insert(tokenizer_->stop_ids.begin(), tokenizer_->stop_ids.end());

  std::deque<size_t> pending;
  for (size_t i = 0; i < requests.size(); ++i) pending.push_back(i);
  std::vector<std::unique_ptr<Active>> active;

  auto finish = [&](Active& a) {
    kv_->release(a.seq);
    a.out.tokens.assign(a.tokens.begin() + a.n_prompt, a.tokens.end());
    on_done(a.index, std::move(a.out));
  };

  while (!pending.empty() || !active.empty()) {
    // Admit queued requests while there is room in the batch and in the KV cache.
    while (!pending.empty() && static_cast<int>(active.size()) < opt_.max_batch) {
      const size_t idx = pending.front();
      const GenerationRequest& r = requests[idx];
      GenerationOutput err;
      if (r.prompt.empty()) {
        err.error = "empty prompt (hint: the tokenizer adds no BOS; give some text)";
      } else if (r.max_tokens < 1) {
        err.error = "max_tokens must be >= 1";
      }
      if (!err.error.empty()) {
        pending.pop_front();
        on_done(idx, std::move(err));
        continue;
      }
      auto a = std::make_unique<Active>();
      a->index = idx;
      const int64_t keep = std::max<int64_t>(1, ctx - r.max_tokens);
      const int64_t n = static_cast<int64_t>(r.prompt.size());
      a->out.prompt_truncated = n > keep;
      a->tokens.assign(r.prompt.end() - std::min(n, keep), r.prompt.end());
      a->n_prompt = static_cast<int64_t>(a->tokens.size());
      a->max_new = std::min<int64_t>(r.max_tokens, ctx - a->n_prompt);
      a->out.n_tokens_prompt = static_cast<int>(a->n_prompt);
      const int64_t need = KvCache::blocks_for(a->n_prompt + a->max_new);
      if (need > kv_->n_blocks_total()) {
        pending.pop_front();
        err.error = fmt::format(
            "request needs {} MiB of KV cache, the budget is {} MiB (hint: raise kv_cache_mb)",
            (need * kv_->block_bytes()) >> 20, (kv_->n_blocks_total() * kv_->block_bytes()) >> 20);
        on_done(idx, std::move(err));
        continue;
      }
      if (need > kv_->n_blocks_free()) break;  // wait for running sequences to finish
      pending.pop_front();
      a->seq = kv_->create();
      kv_->reserve(a->seq, a->n_prompt + a->max_new);
      a->sampler = std::make_unique<Sampler>(r.sampling);
      for (const auto& s : r.stop) a->max_stop = std::max(a->max_stop, s.size());
      active.push_back(std::move(a));
    }
    if (active.empty()) continue;

    // One step: every decoding sequence's next token, then prefill chunks in admission order.
    std::vector<SeqChunk> chunks;
    std::vector<Active*> owner;
    int64_t budget = opt_.max_step_tokens;
    for (auto& a : active) {
      if (static_cast<int64_t>(a->tokens.size()) - a->n_cached == 1) {
        chunks.push_back({a->seq, a->n_cached, std::span<const int32_t>(&a->tokens.back(), 1), 0});
        owner.push_back(a.get());
        --budget;
      }
    }
    for (auto& a : active) {
      const int64_t left = static_cast<int64_t>(a->tokens.size()) - a->n_cached;
      if (left <= 1 || budget <= 0) continue;
      const int64_t take = std::min(left, budget);
      chunks.push_back({a->seq, a->n_cached,
                        std::span<const int32_t>(a->tokens.data() + a->n_cached, take),
                        take == left ? take - 1 : take});
      owner.push_back(a.get());
      budget -= take;
    }
    model_->forward(chunks, *kv_, *pool_, [&](size_t ci, int64_t, std::span<const float> lg) {
      Active& a = *owner[ci];
      a.next = a.sampler->sample(lg);
      a.has_logits = true;
    });
    for (size_t ci = 0; ci < chunks.size(); ++ci)
      owner[ci]->n_cached += static_cast<int64_t>(chunks[ci].tokens.size());

    // Append sampled tokens; retire finished sequences.
    for (size_t i = 0; i < active.size();) {
      Active& a = *active[i];
      bool done = false;
      if (a.has_logits) {
        a.has_logits = false;
        const GenerationRequest& r = requests[a.index];
        const int32_t tok = a.next;
        if (r.stop_at_stop_ids && stop_ids.count(tok)) {
          a.out.finish_reason = "stop";
          done = true;
        } else {
          const bool first = static_cast<int64_t>(a.tokens.size()) == a.n_prompt;
          a.tokens.push_back(tok);
          if (tokenizer_) {
            const size_t old = a.out.text.size();
            a.out.text += completion_piece(
                std::span<const int32_t>(a.tokens.data(), static_cast<size_t>(a.n_prompt)), tok, first);
            if (a.max_stop > 0) {
              const size_t from = old >= a.max_stop ? old - a.max_stop + 1 : 0;
              size_t cut = std::string::npos;
              for (const auto& s : r.stop) {
                if (s.empty()) continue;
                size_t p = a.out.text.find(s, from);
                if (p != std::string::npos) cut = std::min(cut, p);
              }
              if (cut != std::string::npos) {
                a.out.text.resize(cut);
                a.out.finish_reason = "stop";
                done = true;
              }
            }
          }
          if (!done && static_cast<int64_t>(a.tokens.size()) - a.n_prompt >= a.max_new) {
            a.out.finish_reason = "length";
            done = true;
          }
        }
      }
      if (done) {
        finish(a);
        active.erase(active.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }
}

ScoreRequest Engine::make_score_request(const std::string& context,
                                        std::span<const std::string> continuations) const {
  if (!tokenizer_) fail("engine: loglikelihood needs a tokenizer (random-weight models have none)");
  const Tokenizer& tk = *tokenizer_;
  ScoreRequest req;
  for (const std::string& cont0 : continuations) {
    // lm-eval's _encode_pair: the context's trailing whitespace (Python's rstrip(): newlines
    // and Unicode spaces too) moves to the continuation; the continuation's tokens are those of
    // encode(context + continuation) past len(encode(context)), and they follow the context's
    // own tokens (which may differ from the whole's where a token spans the boundary).
    std::string ctx = context, cont = cont0;
    const size_t keep = py_rstrip_size(ctx);
    if (keep < ctx.size()) {
      cont = ctx.substr(keep) + cont;
      ctx.resize(keep);
    }
    std::vector<int32_t> whole = tk.encode(ctx + cont, true, true);
    std::vector<int32_t> seq = tk.encode(ctx, true, true);
    const size_t n_ctx_ids = seq.size();
    if (whole.size() > n_ctx_ids) seq.insert(seq.end(), whole.begin() + static_cast<std::ptrdiff_t>(n_ctx_ids), whole.end());
    int64_t n_ctx = static_cast<int64_t>(n_ctx_ids);
    if (n_ctx == 0) {
      std::optional<int32_t> b = tk.bos_id ? tk.bos_id : tk.eos_id;
      if (!b) fail("engine: empty loglikelihood context and the tokenizer has no BOS/EOS");
      seq.insert(seq.begin(), *b);
      n_ctx = 1;
    }
    req.sequences.push_back(std::move(seq));
    req.n_context.push_back(n_ctx);
  }
  return req;
}

void Engine::score(std::span<const ScoreRequest> requests,
                   const std::function<void(size_t, ScoreOutput&&)>& on_done) {
  const int64_t ctx = context_length();
  struct Job {
    size_t index;
    std::vector<std::vector<int32_t>> seqs;  // after truncation
    std::vector<int64_t> n_ctx;
    std::vector<int64_t> cut;                // tokens dropped on the left (truncation)
    // Continuations truncated by the same amount share their common prefix (fed once, then
    // forked); differently truncated ones hold their tokens at other positions and cannot.
    struct Prefix {
      int64_t cut = 0, shared = 0;           // shared: prefix tokens fed once
      int seq = -1;
    };
    std::vector<Prefix> prefixes;
    std::vector<size_t> prefix_of;           // continuation -> prefixes index
    ScoreOutput out;
    std::vector<int> cont_seq;
    int64_t blocks = 0;
  };
  size_t next = 0;
  while (next < requests.size()) {
    // Gather a group that fits the batch and the KV cache.
    std::vector<Job> group;
    int64_t blocks = 0, n_seqs = 0;
    while (next < requests.size()) {
      const ScoreRequest& r = requests[next];
      Job j;
      j.index = next;
      std::string err;
      if (r.sequences.size() != r.n_context.size() || r.sequences.empty())
        err = "loglikelihood request has no continuations";
      for (size_t c = 0; c < r.sequences.size() && err.empty(); ++c) {
        std::vector<int32_t> s = r.sequences[c];
        int64_t nc = r.n_context[c];
        if (nc < 1 || nc > static_cast<int64_t>(s.size())) {
          err = "loglikelihood context must have at least one token";
          break;
        }
        // Input is s[:-1]; keep its last ctx tokens (lm-eval: [-(max_length+1):]).
        const int64_t over = static_cast<int64_t>(s.size()) - (ctx + 1);
        if (over > 0) {
          if (over >= nc) {
            err = fmt::format("continuation of {} tokens does not fit the context of {}",
                              static_cast<int64_t>(s.size()) - nc, ctx);
            break;
          }
          s.erase(s.begin(), s.begin() + over);
          nc -= over;
          j.out.prompt_truncated = true;
        }
        j.seqs.push_back(std::move(s));
        j.n_ctx.push_back(nc);
        j.cut.push_back(std::max<int64_t>(0, over));
      }
      if (!err.empty()) {
        ScoreOutput o;
        o.error = err;
        on_done(next++, std::move(o));
        continue;
      }
      // Shared prefix of each truncation class: common to its sequences and strictly inside
      // every context of the class.
      for (size_t c = 0; c < j.seqs.size(); ++c) {
        size_t p = 0;
        while (p < j.prefixes.size() && j.prefixes[p].cut != j.cut[c]) ++p;
        if (p == j.prefixes.size()) j.prefixes.push_back({j.cut[c], j.n_ctx[c] - 1, -1});
        j.prefix_of.push_back(p);
      }
      for (size_t c = 0; c < j.seqs.size(); ++c) {
        Job::Prefix& px = j.prefixes[j.prefix_of[c]];
        const auto& first = j.seqs[std::find(j.prefix_of.begin(), j.prefix_of.end(), j.prefix_of[c]) -
                                   j.prefix_of.begin()];
        px.shared = std::min(px.shared, j.n_ctx[c] - 1);
        for (int64_t q = 0; q < px.shared; ++q)
          if (j.seqs[c][q] != first[q]) {
            px.shared = q;
            break;
          }
      }
      // Blocks this job takes: each prefix's, and each continuation's beyond the full blocks of
      // its prefix, which a fork shares (its partial last block is copied).
      j.blocks = 0;
      for (const auto& px : j.prefixes) j.blocks += KvCache::blocks_for(px.shared);
      for (size_t c = 0; c < j.seqs.size(); ++c)
        j.blocks += KvCache::blocks_for(static_cast<int64_t>(j.seqs[c].size())) -
                    j.prefixes[j.prefix_of[c]].shared / KvCache::kBlockTokens;
      if (j.blocks > kv_->n_blocks_total()) {
        ScoreOutput o;
        o.error = "loglikelihood request does not fit the KV cache (hint: raise kv_cache_mb)";
        on_done(next++, std::move(o));
        continue;
      }
      if (!group.empty() && (blocks + j.blocks > kv_->n_blocks_free() ||
                             n_seqs + static_cast<int64_t>(j.seqs.size()) > opt_.max_batch))
        break;
      blocks += j.blocks;
      n_seqs += static_cast<int64_t>(j.seqs.size());
      j.out.n_tokens_prompt = static_cast<int>(j.n_ctx[0]);
      j.out.logprob.assign(j.seqs.size(), 0.0);
      j.out.is_greedy.assign(j.seqs.size(), true);
      group.push_back(std::move(j));
      ++next;
    }
    if (group.empty()) continue;

    // Phase 1: shared prefixes.
    std::vector<Feed> feeds;
    for (size_t g = 0; g < group.size(); ++g) {
      Job& j = group[g];
      for (size_t p = 0; p < j.prefixes.size(); ++p) {
        Job::Prefix& px = j.prefixes[p];
        px.seq = kv_->create();
        kv_->reserve(px.seq, px.shared);
        const size_t first = static_cast<size_t>(
            std::find(j.prefix_of.begin(), j.prefix_of.end(), p) - j.prefix_of.begin());
        if (px.shared > 0)
          feeds.push_back({px.seq, std::span<const int32_t>(j.seqs[first].data(), px.shared), 0,
                           px.shared, g});
      }
    }
    run_feeds(feeds, [](size_t, int64_t, std::span<const float>) {});
    // Phase 2: continuations forked from the prefix, logits for every continuation token.
    feeds.clear();
    std::vector<std::pair<size_t, size_t>> who;  // feed id -> (group job, continuation)
    for (size_t g = 0; g < group.size(); ++g) {
      Job& j = group[g];
      for (size_t c = 0; c < j.seqs.size(); ++c) {
        const Job::Prefix& px = j.prefixes[j.prefix_of[c]];
        int s = kv_->fork(px.seq, px.shared);
        if (s < 0 || !kv_->reserve(s, static_cast<int64_t>(j.seqs[c].size())))
          fail("engine: KV cache accounting error while scoring");
        j.cont_seq.push_back(s);
        const auto& seq = j.seqs[c];
        feeds.push_back({s,
                         std::span<const int32_t>(seq.data() + px.shared,
                                                  seq.size() - 1 - static_cast<size_t>(px.shared)),
                         px.shared, j.n_ctx[c] - 1 - px.shared, who.size()});
        who.emplace_back(g, c);
      }
    }
    run_feeds(feeds, [&](size_t id, int64_t t, std::span<const float> lg) {
      auto [g, c] = who[id];
      Job& j = group[g];
      const int32_t target = j.seqs[c][j.prefixes[j.prefix_of[c]].shared + t + 1];
      j.out.logprob[c] += token_logprob(lg, target);
      if (argmax(lg) != target) j.out.is_greedy[c] = false;
    });
    for (Job& j : group) {
      for (int s : j.cont_seq) kv_->release(s);
      for (const auto& px : j.prefixes) kv_->release(px.seq);
      on_done(j.index, std::move(j.out));
    }
  }
}

int64_t Engine::kv_capacity_tokens() const { return kv_->n_blocks_total() * KvCache::kBlockTokens; }

size_t Engine::kv_bytes_per_token() const { return kv_->bytes_per_token(); }

void Engine::next_token_logprobs(
    std::span<const std::vector<int32_t>> seqs,
    const std::function<void(size_t, int64_t, std::span<const float>)>& on_row) {
  std::vector<float> lp(config().vocab_size);
  size_t next = 0;
  while (next < seqs.size()) {
    std::vector<Feed> feeds;
    std::vector<int> handles;
    while (next < seqs.size() && static_cast<int>(feeds.size()) < opt_.max_batch) {
      const auto& s = seqs[next];
      if (static_cast<int64_t>(s.size()) > context_length())
        fail("engine: sequence {} has {} tokens, the context is {}", next, s.size(), context_length());
      const int64_t need = KvCache::blocks_for(static_cast<int64_t>(s.size()));
      if (need > kv_->n_blocks_total())
        fail("engine: sequence {} needs more KV cache than kv_cache_mb allows", next);
      if (need > kv_->n_blocks_free()) break;
      int h = kv_->create();
      kv_->reserve(h, static_cast<int64_t>(s.size()));
      handles.push_back(h);
      feeds.push_back({h, std::span<const int32_t>(s), 0, 0, next});
      ++next;
    }
    run_feeds(feeds, [&](size_t id, int64_t t, std::span<const float> lg) {
      log_softmax(lg, lp);
      on_row(id, t, lp);
    });
    for (int h : handles) kv_->release(h);
  }
}

std::vector<std::vector<float>> Engine::logprobs_all_positions(std::span<const int32_t> tokens) {
  std::vector<std::vector<int32_t>> one{std::vector<int32_t>(tokens.begin(), tokens.end())};
  std::vector<std::vector<float>> rows(tokens.size());
  next_token_logprobs(one, [&](size_t, int64_t t, std::span<const float> lp) {
    rows[t].assign(lp.begin(), lp.end());
  });
  return rows;
}

int64_t physical_memory_mib() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>((static_cast<unsigned long long>(pages) * page) >> 20) : 0;
}

BenchResult Engine::bench(const BenchOptions& o) {
  if (o.batch < 1 || o.prompt_tokens < 1 || o.gen_tokens < 0)
    fail("bench: batch and prompt tokens must be >= 1, gen tokens >= 0");
  const int64_t V = config().vocab_size;
  // Written so that huge counts cannot overflow the sum (both are >= 0 here).
  if (o.prompt_tokens > context_length() || o.gen_tokens > context_length() - o.prompt_tokens)
    fail("bench: prompt + gen tokens ({} + {}) exceed the context ({})", o.prompt_tokens, o.gen_tokens,
         context_length());
  std::vector<std::vector<int32_t>> prompts(o.batch);
  uint64_t st = 0x9E3779B97F4A7C15ull;
  for (auto& p : prompts)
    for (int64_t i = 0; i < o.prompt_tokens; ++i) {
      st ^= st >> 12;
      st ^= st << 25;
      st ^= st >> 27;
      p.push_back(static_cast<int32_t>((st * 0x2545F4914F6CDD1Dull >> 33) % static_cast<uint64_t>(V)));
    }
  std::vector<int> h(o.batch);
  for (int b = 0; b < o.batch; ++b) {
    h[b] = kv_->create();
    if (!kv_->reserve(h[b], o.prompt_tokens + o.gen_tokens))
      fail("bench: the KV cache budget is too small for batch {} x {} tokens (hint: raise kv_cache_mb)",
           o.batch, o.prompt_tokens + o.gen_tokens);
  }
  std::vector<int32_t> next(o.batch);
  std::vector<Feed> feeds;
  for (int b = 0; b < o.batch; ++b)
    feeds.push_back({h[b], prompts[b], 0, o.prompt_tokens - 1, static_cast<size_t>(b)});
  auto t0 = std::chrono::steady_clock::now();
  run_feeds(feeds, [&](size_t id, int64_t, std::span<const float> lg) { next[id] = argmax(lg); });
  BenchResult r;
  r.prefill_s = seconds_since(t0);
  std::vector<SeqChunk> chunks(o.batch);
  for (int64_t step = 0; step < o.gen_tokens; ++step) {
    if (o.between_steps) o.between_steps();
    for (int b = 0; b < o.batch; ++b)
      chunks[b] = {h[b], o.prompt_tokens + step, std::span<const int32_t>(&next[b], 1), 0};
    t0 = std::chrono::steady_clock::now();
    model_->forward(chunks, *kv_, *pool_, [&](size_t ci, int64_t, std::span<const float> lg) {
      next[ci] = argmax(lg);
    });
    r.decode_step_s.push_back(seconds_since(t0));
    r.decode_s += r.decode_step_s.back();
  }
  if (o.between_steps && o.gen_tokens > 0) o.between_steps();
  for (int b = 0; b < o.batch; ++b) kv_->release(h[b]);
  r.threads = threads();
  r.batch = o.batch;
  r.prompt_tokens = o.prompt_tokens;
  r.gen_tokens = o.gen_tokens;
  r.prefill_tokens_per_s = static_cast<double>(o.batch * o.prompt_tokens) / r.prefill_s;
  r.decode_tokens_per_s = r.decode_s > 0 ? static_cast<double>(o.batch * o.gen_tokens) / r.decode_s : 0;
  r.weight_bytes_per_token = model_->weight_bytes_per_step();
  r.decode_weight_gb_per_s =
      r.decode_s > 0 ? static_cast<double>(r.weight_bytes_per_token) * o.gen_tokens / r.decode_s / 1e9 : 0;
  return r;
}

}  // namespace qeval
