// Engine-level tests: stories260K greedy reference (GGUF and HF copies; needs $QEVAL_MODELS),
// batch invariance of greedy generation across batch sizes, compositions and prefill chunking,
// loglikelihood vs step-by-step decoding, lm-eval tokenisation of (context, continuation),
// prompt truncation, stop strings, and next-token log-probabilities.
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/checkpoint.h"
#include "engine/cpu_features.h"
#include "engine/engine_commands.h"
#include "engine/fixtures_model.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "engine/random_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

namespace {

const char* models_dir() {
  const char* m = std::getenv("QEVAL_MODELS");
  return m && *m ? m : nullptr;
}

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<int32_t> random_ids(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    t.push_back(static_cast<int32_t>((seed >> 8) % vocab));
  }
  return t;
}

std::map<size_t, GenerationOutput> run_generate(Engine& e, const std::vector<GenerationRequest>& reqs) {
  std::map<size_t, GenerationOutput> out;
  e.generate(reqs, [&](size_t i, GenerationOutput&& o) {
    REQUIRE(out.count(i) == 0);
    out[i] = std::move(o);
  });
  REQUIRE(out.size() == reqs.size());
  return out;
}

std::unique_ptr<Engine> tiny_engine(int max_batch, int64_t step_tokens, int64_t kv_mb = 0,
                                    ComputeType ct = ComputeType::F32) {
  EngineOptions o;
  o.model = "random:tiny";
  o.dtype = ct;
  o.threads = 2;
  o.max_batch = max_batch;
  o.max_step_tokens = step_tokens;
  o.kv_cache_mb = kv_mb;
  o.seed = 7;
  return Engine::load(o);
}

// A BF16 qwen2 fixture wide enough for the AMX/AVX-512 kernel paths (K = 256 and ffn) and the
// AMX attention (head_dim 64).
fx::ModelSpec wide_bf16_spec(int64_t ffn) {
  fx::ModelSpec spec;
  spec.arch = "qwen2";
  spec.hidden = 256;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.ffn = ffn;
  spec.vocab = 300;
  spec.dtype = "BF16";
  return spec;
}

}  // namespace

TEST_CASE("engine: stories260K greedy from BOS matches the reference (GGUF and HF)", "[engine-model][model]") {
  const char* m = models_dir();
  if (!m) {
    WARN("QEVAL_MODELS is unset: skipping stories260K reference test");
    return;
  }
  std::string ref_dir = std::string(m) + "/stories260K/reference/";
  std::vector<int32_t> want_ids;
  {
    std::ifstream f(ref_dir + "greedy_ids_from_bos_n200.txt");
    int32_t v;
    while (f >> v) want_ids.push_back(v);
  }
  REQUIRE(want_ids.size() == 200);
  const std::string want_text = read_file(ref_dir + "expected_greedy_runc_n200.txt");
  for (std::string path : {std::string(m) + "/stories260K/stories260K.gguf", std::string(m) + "/stories260K-hf"}) {
    INFO(path);
    EngineOptions o;
    o.model = path;
    o.threads = 2;
    auto e = Engine::load(o);
    CHECK(e->dtype() == ComputeType::F32);
    GenerationRequest r;
    r.prompt = e->tokenizer()->encode("", true);
    REQUIRE(r.prompt == std::vector<int32_t>{1});
    r.max_tokens = 200;
    auto out = run_generate(*e, {r});
    CHECK(out[0].tokens == want_ids);
    CHECK(out[0].text == want_text);
    CHECK(out[0].finish_reason == "length");
  }
}

TEST_CASE("engine: stories260K seeded sample (t=1.0, top-p 0.9, seed 133742) matches run.c", "[engine-model][model]") {
  const char* m = models_dir();
  if (!m) {
    WARN("QEVAL_MODELS is unset: skipping stories260K sampling test");
    return;
  }
  const std::string want =
      read_file(std::string(m) + "/stories260K/reference/expected_sample_t1.0_p0.9_s133742.txt");
  EngineOptions o;
  o.model = std::string(m) + "/stories260K/stories260K.gguf";
  o.threads = 1;
  auto e = Engine::load(o);
  GenerationRequest r;
  r.prompt = {1};
  r.max_tokens = 256;
  r.sampling.temperature = 1.0;
  r.sampling.top_p = 0.9;
  r.sampling.seed = 133742;
  auto out = run_generate(*e, {r});
  // run.c prints until BOS is sampled or 256 steps; its file has no trailing newline.
  std::string got = out[0].text;
  while (!got.empty() && got.back() == '\n') got.pop_back();
  std::string w = want;
  while (!w.empty() && w.back() == '\n') w.pop_back();
  INFO("got " << got.size() << " bytes, finish " << out[0].finish_reason);
  CHECK(got == w);
}

TEST_CASE("engine: greedy tokens do not depend on batching (F32)", "[engine-model]") {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 7; ++i) {
    GenerationRequest r;
    r.prompt = random_ids(3 + 17 * i, 256, 100 + i);
    r.max_tokens = 12 + 3 * i;
    reqs.push_back(r);
  }
  auto solo = tiny_engine(1, 512);
  std::map<size_t, GenerationOutput> want;
  for (size_t i = 0; i < reqs.size(); ++i)
    want[i] = std::move(run_generate(*solo, {reqs[i]})[0]);
  struct Setup {
    int batch;
    int64_t step;
    int64_t kv_mb;
  };
  for (Setup s : {Setup{7, 512, 0}, Setup{3, 16, 0}, Setup{4, 5, 0}, Setup{16, 64, 1}}) {
    INFO("max_batch " << s.batch << " step tokens " << s.step);
    auto e = tiny_engine(s.batch, s.step, s.kv_mb);
    auto got = run_generate(*e, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) {
      INFO("request " << i);
      CHECK(got[i].tokens == want[i].tokens);
      CHECK(got[i].tokens.size() == static_cast<size_t>(reqs[i].max_tokens));
      CHECK(got[i].finish_reason == "length");
    }
  }
  // A different composition: the same requests mixed with others, reversed.
  std::vector<GenerationRequest> mixed;
  for (size_t i = reqs.size(); i-- > 0;) {
    mixed.push_back(reqs[i]);
    GenerationRequest other;
    other.prompt = random_ids(9, 256, 999 + static_cast<uint32_t>(i));
    other.max_tokens = 5;
    mixed.push_back(other);
  }
  auto e = tiny_engine(5, 32);
  auto got = run_generate(*e, mixed);
  for (size_t i = 0; i < reqs.size(); ++i) CHECK(got[2 * (reqs.size() - 1 - i)].tokens == want[i].tokens);
}

TEST_CASE("engine: loglikelihood equals the sum of step-by-step logprobs", "[engine-model]") {
  auto e = tiny_engine(16, 512);
  // Step-by-step twin: the same random model, one token per forward.
  RandomModel rm(random_model_config("tiny"), DType::F32, 7);
  Model model(rm.config(), rm.lookup(), {});
  ThreadPool pool(2);
  auto stepwise = [&](const std::vector<int32_t>& seq, int64_t n_ctx, bool& greedy) {
    auto kv = model.make_kv_cache(1 << 20);
    int s = kv->create();
    REQUIRE(kv->reserve(s, static_cast<int64_t>(seq.size())));
    double sum = 0;
    greedy = true;
    for (size_t p = 0; p + 1 < seq.size(); ++p) {
      SeqChunk c{s, static_cast<int64_t>(p), std::span<const int32_t>(&seq[p], 1), 0};
      model.forward(std::span<const SeqChunk>(&c, 1), *kv, pool, [&](size_t, int64_t, std::span<const float> lg) {
        if (static_cast<int64_t>(p) + 1 >= n_ctx) {
          sum += token_logprob(lg, seq[p + 1]);
          if (argmax(lg) != seq[p + 1]) greedy = false;
        }
      });
    }
    return sum;
  };
  auto ctx = random_ids(45, 256, 5);
  // A greedy continuation, to check is_greedy.
  GenerationRequest g;
  g.prompt = ctx;
  g.max_tokens = 3;
  auto greedy_cont = run_generate(*e, {g})[0].tokens;
  std::vector<ScoreRequest> reqs(3);
  for (int c = 0; c < 4; ++c) {
    auto seq = ctx;
    auto cont = c == 0 ? greedy_cont : random_ids(1 + c, 256, 50 + c);
    seq.insert(seq.end(), cont.begin(), cont.end());
    reqs[0].sequences.push_back(seq);
    reqs[0].n_context.push_back(static_cast<int64_t>(ctx.size()));
  }
  // Continuations whose context tokens differ at the boundary (shared prefix shorter).
  reqs[1].sequences = {random_ids(30, 256, 8), random_ids(30, 256, 8)};
  reqs[1].sequences[1][28] = (reqs[1].sequences[1][28] + 1) % 256;
  reqs[1].n_context = {29, 28};
  reqs[2].sequences = {random_ids(2, 256, 9)};
  reqs[2].n_context = {1};
  std::map<size_t, ScoreOutput> got;
  e->score(reqs, [&](size_t i, ScoreOutput&& o) { got[i] = std::move(o); });
  REQUIRE(got.size() == reqs.size());
  for (size_t r = 0; r < reqs.size(); ++r)
    for (size_t c = 0; c < reqs[r].sequences.size(); ++c) {
      INFO("request " << r << " continuation " << c);
      REQUIRE(got[r].error.empty());
      bool greedy;
      double want = stepwise(reqs[r].sequences[c], reqs[r].n_context[c], greedy);
      CHECK(got[r].logprob[c] == Approx(want).epsilon(1e-9).margin(1e-9));
      CHECK(got[r].is_greedy[c] == greedy);
      CHECK(got[r].logprob[c] < 0);
    }
  CHECK(got[0].is_greedy[0]);
  CHECK(got[0].n_tokens_prompt == 45);

  // next_token_logprobs: rows are log-softmax of the same logits.
  auto rows = e->logprobs_all_positions(ctx);
  REQUIRE(rows.size() == ctx.size());
  double s = 0;
  for (float v : rows[10]) s += std::exp(static_cast<double>(v));
  CHECK(s == Approx(1.0).epsilon(1e-5));
  bool gr;
  std::vector<int32_t> two(ctx.begin(), ctx.begin() + 12);
  CHECK(rows[10][ctx[11]] == Approx(stepwise(two, 11, gr)).margin(1e-5));
}

TEST_CASE("engine: bf16 loglikelihood over forked KV caches equals step-by-step (AMX attention)", "[engine-model]") {
  // head_dim 64 and bf16: a bf16 KV cache in tile layout and the AMX attention where the CPU has
  // AMX. Continuations fork the context's cache (shared full blocks, a copied partial one); every
  // logprob must equal the one-token-at-a-time forward of the same weights, to the bit.
  auto dir = fx::temp_dir("engine-bf16-ll");
  fx::write_hf_model(dir, wide_bf16_spec(256));
  EngineOptions o;
  o.model = dir.string();
  o.threads = 2;
  o.max_batch = 8;
  auto e = Engine::load(o);
  REQUIRE(e->dtype() == ComputeType::BF16);
  auto ck = Checkpoint::open(dir);
  ModelOptions mo;
  mo.compute = ComputeType::BF16;
  Model model(ck->config(), [&](const std::string& n) { return ck->find(n); }, mo);
  ThreadPool pool(2);
  auto stepwise = [&](const std::vector<int32_t>& seq, int64_t n_ctx) {
    auto kv = model.make_kv_cache(1 << 22);
    int s = kv->create();
    REQUIRE(kv->reserve(s, static_cast<int64_t>(seq.size())));
    double sum = 0;
    for (size_t p = 0; p + 1 < seq.size(); ++p) {
      SeqChunk c{s, static_cast<int64_t>(p), std::span<const int32_t>(&seq[p], 1), 0};
      model.forward(std::span<const SeqChunk>(&c, 1), *kv, pool, [&](size_t, int64_t, std::span<const float> lg) {
        if (static_cast<int64_t>(p) + 1 >= n_ctx) sum += token_logprob(lg, seq[p + 1]);
      });
    }
    return sum;
  };
  std::vector<ScoreRequest> reqs(1);
  const auto ctx = random_ids(45, 300, 15);  // a full KV block and a partial one
  for (int c = 0; c < 4; ++c) {
    auto seq = ctx;
    auto cont = random_ids(1 + 3 * c, 300, 60 + c);
    seq.insert(seq.end(), cont.begin(), cont.end());
    reqs[0].sequences.push_back(seq);
    reqs[0].n_context.push_back(static_cast<int64_t>(ctx.size()));
  }
  std::map<size_t, ScoreOutput> got;
  e->score(reqs, [&](size_t i, ScoreOutput&& out) { got[i] = std::move(out); });
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].error.empty());
  for (size_t c = 0; c < reqs[0].sequences.size(); ++c) {
    INFO("continuation " << c);
    CHECK(got[0].logprob[c] == stepwise(reqs[0].sequences[c], reqs[0].n_context[c]));
  }
}

// A long context with 4 continuations at max_batch 1 and the default KV budget: the forks share
// the context's full blocks, so the request fits, and scores as at max_batch 16.
TEST_CASE("engine: a loglikelihood request with a long context fits the default KV cache at max_batch 1",
          "[engine-model]") {
  std::vector<ScoreRequest> reqs(1);
  const auto ctx = random_ids(200, 256, 21);
  for (int c = 0; c < 4; ++c) {
    auto seq = ctx;
    auto cont = random_ids(1 + c, 256, 80 + c);
    seq.insert(seq.end(), cont.begin(), cont.end());
    reqs[0].sequences.push_back(seq);
    reqs[0].n_context.push_back(static_cast<int64_t>(ctx.size()));
  }
  std::vector<std::vector<double>> lp;
  for (int max_batch : {1, 16}) {
    INFO("max_batch " << max_batch);
    auto e = tiny_engine(max_batch, 512);
    std::map<size_t, ScoreOutput> got;
    e->score(reqs, [&](size_t i, ScoreOutput&& out) { got[i] = std::move(out); });
    REQUIRE(got.size() == 1);
    REQUIRE(got[0].error.empty());
    lp.push_back(got[0].logprob);
  }
  CHECK(lp[0] == lp[1]);
}

TEST_CASE("engine: long prompts are left-truncated to context - max_tokens", "[engine-model]") {
  auto e = tiny_engine(4, 512);
  GenerationRequest r;
  r.prompt = random_ids(300, 256, 3);  // context is 256
  r.max_tokens = 10;
  auto out = run_generate(*e, {r})[0];
  CHECK(out.prompt_truncated);
  CHECK(out.n_tokens_prompt == 246);
  GenerationRequest r2 = r;
  r2.prompt.erase(r2.prompt.begin(), r2.prompt.begin() + 54);
  auto out2 = run_generate(*e, {r2})[0];
  CHECK_FALSE(out2.prompt_truncated);
  CHECK(out2.tokens == out.tokens);
  GenerationRequest empty;
  CHECK_FALSE(run_generate(*e, {empty})[0].error.empty());
}

TEST_CASE("engine: stop strings, lm-eval loglikelihood tokenisation (fixture tokenizer)", "[engine-model]") {
  auto dir = fx::temp_dir("engine-tok");
  fx::ModelSpec spec;
  spec.arch = "qwen2";
  fx::write_hf_model(dir, spec);
  EngineOptions o;
  o.model = dir.string();
  o.threads = 2;
  auto e = Engine::load(o);
  const Tokenizer& tk = *e->tokenizer();

  GenerationRequest r;
  r.prompt = tk.encode("Hello there, the", true);
  r.max_tokens = 40;
  r.stop_at_stop_ids = false;
  auto full = run_generate(*e, {r})[0];
  REQUIRE(full.tokens.size() == 40);
  CHECK(full.text == tk.decode(full.tokens));
  // Stop at a substring starting in the middle of the completion.
  std::string stop = full.text.substr(full.text.size() / 2, 3);
  size_t at = full.text.find(stop);
  r.stop = {"\x01never", stop};
  auto cut = run_generate(*e, {r})[0];
  CHECK(cut.finish_reason == "stop");
  CHECK(cut.text == full.text.substr(0, at));

  // lm-eval split: trailing spaces of the context move to the continuation.
  std::vector<std::string> conts = {"the end", " B"};
  ScoreRequest s = e->make_score_request("Answer: ", conts);
  REQUIRE(s.sequences.size() == 2);
  CHECK(s.sequences[0] == tk.encode("Answer: the end", true));
  CHECK(s.n_context[0] == static_cast<int64_t>(tk.encode("Answer:", true).size()));
  CHECK(s.sequences[1] == tk.encode("Answer:  B", true));
  // All trailing whitespace moves (Python's rstrip(): newlines, U+3000), and the continuation's
  // tokens follow the context's own tokens, as lm-eval's _encode_pair builds them.
  auto lm_eval_pair = [&](const std::string& ctx, const std::string& cont) {
    std::vector<int32_t> c = tk.encode(ctx, true), whole = tk.encode(ctx + cont, true);
    std::vector<int32_t> seq = c;
    if (whole.size() > c.size()) seq.insert(seq.end(), whole.begin() + static_cast<std::ptrdiff_t>(c.size()), whole.end());
    return std::make_pair(seq, static_cast<int64_t>(c.size()));
  };
  for (const auto& [ctx, cont] : std::vector<std::pair<std::string, std::string>>{
           {"Answer:\n", "A"}, {"Answer:\t\xe3\x80\x80 ", "B"}, {"Hello there, the qu", "ick fox"}, {"Hel", "lo"}}) {
    INFO(ctx << "|" << cont);
    std::vector<std::string> one = {cont};
    ScoreRequest r1 = e->make_score_request(ctx, one);
    const size_t keep = ctx.find_last_not_of(" \t\n\xe3\x80") + 1;
    auto [seq, n_ctx] = lm_eval_pair(ctx.substr(0, keep), ctx.substr(keep) + cont);
    CHECK(r1.sequences[0] == seq);
    CHECK(r1.n_context[0] == n_ctx);
  }
  std::map<size_t, ScoreOutput> got;
  e->score(std::span<const ScoreRequest>(&s, 1), [&](size_t i, ScoreOutput&& so) { got[i] = std::move(so); });
  REQUIRE(got[0].error.empty());
  CHECK(got[0].logprob[0] < 0);
}

TEST_CASE("engine: options are validated", "[engine-model]") {
  EngineOptions o;
  o.model = "random:nope";
  CHECK_THROWS_AS(Engine::load(o), Error);
  o.model = "random:tiny";
  o.max_batch = 0;
  CHECK_THROWS_AS(Engine::load(o), Error);
  o.max_batch = 4;
  o.model = "/nonexistent/model";
  CHECK_THROWS_AS(Engine::load(o), Error);
}

TEST_CASE("engine: greedy tokens do not depend on batching (BF16)", "[engine-model]") {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r;
    r.prompt = random_ids(5 + 23 * i, 300, 300 + i);
    r.max_tokens = 16;
    r.stop_at_stop_ids = false;
    reqs.push_back(r);
  }
  auto dir = fx::temp_dir("engine-bf16-inv");
  fx::write_hf_model(dir, wide_bf16_spec(512));
  auto load = [&](int batch, int64_t step) {
    EngineOptions o;
    o.model = dir.string();
    o.threads = 2;
    o.max_batch = batch;
    o.max_step_tokens = step;
    return Engine::load(o);
  };
  auto solo = load(1, 512);
  auto batched = load(6, 24);
  CHECK(solo->dtype() == ComputeType::BF16);
  auto got = run_generate(*batched, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    INFO("request " << i);
    CHECK(run_generate(*solo, {reqs[i]})[0].tokens == got[i].tokens);
  }
}

TEST_CASE("engine commands: generate prints the completion, bench prints JSON", "[engine-model]") {
  BenchCommand b;
  b.model = "random:tiny";
  b.prompt_tokens = 20;
  b.gen_tokens = 4;
  b.batch = 2;
  b.threads = 1;
  b.json = true;
  std::ostringstream os;
  CHECK(run_bench_command(b, os) == 0);
  auto j = nlohmann::json::parse(os.str());
  CHECK(j["prefill_tokens_per_s"].get<double>() > 0);
  CHECK(j["decode_tokens_per_s"].get<double>() > 0);
  CHECK(j["weight_bytes_per_step"].get<size_t>() > 0);
  // Times and rates are one set of figures.
  CHECK(j["prefill_s"].get<double>() * j["prefill_tokens_per_s"].get<double>() == Approx(20.0 * 2));
  CHECK(j["decode_s"].get<double>() * j["decode_tokens_per_s"].get<double>() == Approx(4.0 * 2));
  b.batch = 0;
  CHECK_THROWS_AS(run_bench_command(b, os), Error);

  // --repeat 3 --reference: medians, the best, and decode as a fraction of the bandwidth
  // probed between the decode steps.
  b.batch = 1;
  b.repeat = 3;
  b.reference = true;
  std::ostringstream rep;
  CHECK(run_bench_command(b, rep) == 0);
  auto jr = nlohmann::json::parse(rep.str());
  CHECK(jr["repeat"] == 3);
  CHECK(jr["decode_tokens_per_s_best"].get<double>() >= jr["decode_tokens_per_s"].get<double>());
  CHECK(jr["prefill_tokens_per_s_best"].get<double>() >= jr["prefill_tokens_per_s"].get<double>());
  CHECK(jr["read_gb_per_s"].get<double>() > 0.1);
  CHECK(jr["decode_bw_fraction"].get<double>() > 0);
  CHECK(jr["prefill_s"].get<double>() * jr["prefill_tokens_per_s"].get<double>() == Approx(20.0));
  // No decode steps: no fraction (null, not 0).
  b.gen_tokens = 0;
  std::ostringstream none;
  CHECK(run_bench_command(b, none) == 0);
  CHECK(nlohmann::json::parse(none.str())["decode_bw_fraction"].is_null());
  b.gen_tokens = 4;
  b.repeat = 0;
  CHECK_THROWS_AS(run_bench_command(b, os), Error);

  const char* m = models_dir();
  if (!m) {
    WARN("QEVAL_MODELS is unset: skipping generate command test");
    return;
  }
  GenerateCommand g;
  g.model = std::string(m) + "/stories260K-hf";
  g.prompt = "";
  g.max_tokens = 200;
  std::ostringstream out;
  CHECK(run_generate_command(g, out) == 0);
  CHECK(out.str() == read_file(std::string(m) + "/stories260K/reference/expected_greedy_runc_n200.txt") + "\n");
  g.prompt = "Once upon a time";
  g.max_tokens = 5;
  std::ostringstream out2;
  run_generate_command(g, out2);
  CHECK(out2.str().rfind(", there was a", 0) == 0);
}

TEST_CASE("model: fused q/k/v and interleaved gate/up give the bits of the separate layers", "[engine-model]") {
  // FFN 256: gate/up fuse in runs of 128 rows and the SwiGLU runs on the matmul's column pieces.
  ModelConfig cfg = random_model_config("tiny");
  cfg.hidden_size = 128;
  cfg.intermediate_size = 256;
  cfg.head_dim = 32;
  RandomModel rm(cfg, DType::BF16, 11);
  const std::vector<int32_t> prompt = random_ids(37, 256, 12);
  ThreadPool pool(2);
  for (ComputeType compute : {ComputeType::F32, ComputeType::BF16})
    for (QuantScheme q : {QuantScheme::None, QuantScheme::Int8Channel, QuantScheme::Int8Block, QuantScheme::Fp8Block}) {
      INFO(quant_scheme_name(q) << (compute == ComputeType::BF16 ? " bf16" : " f32"));
      std::vector<std::vector<float>> logits[2];
      for (int fuse = 0; fuse < 2; ++fuse) {
        ModelOptions o;
        o.compute = compute;
        o.quant = q;
        o.fuse = fuse == 1;
        Model model(rm.config(), rm.lookup(), o);
        auto kv = model.make_kv_cache(1 << 20);
        const int s = kv->create();
        REQUIRE(kv->reserve(s, static_cast<int64_t>(prompt.size())));
        SeqChunk c{s, 0, std::span<const int32_t>(prompt), 0};
        model.forward(std::span<const SeqChunk>(&c, 1), *kv, pool, [&](size_t, int64_t, std::span<const float> lg) {
          logits[fuse].emplace_back(lg.begin(), lg.end());
        });
      }
      REQUIRE(logits[0].size() == prompt.size());
      REQUIRE(logits[0] == logits[1]);
    }
}

// Int8 variants too: their matmuls are exact integer sums at every level, and the activation
// quantisers (AVX2, AVX-512, and the SwiGLU epilogue's per-group codes for an int8-block down
// projection) promise the same codes, so the AVX2 level and the best one (AMX here) must agree.
TEST_CASE("model: AVX2 and AVX-512 forward passes give the same bits (attention, SwiGLU)", "[engine-model]") {
  if (max_kernel_level() < KernelLevel::Avx512) return;  // nothing to compare on this CPU
  // head_dim 16 (one vector), 24 (a masked tail) and 80 (whole vectors and a masked one); f32
  // compute (an f32 KV cache) and bf16 compute (a bf16 one: none of these head dims takes AMX).
  for (ComputeType compute : {ComputeType::F32, ComputeType::BF16})
  for (QuantScheme q : {QuantScheme::None, QuantScheme::Int8Block, QuantScheme::Int8Channel})
  for (int64_t head_dim : {16, 24, 80}) {
    ModelConfig cfg = random_model_config("tiny");
    cfg.head_dim = head_dim;
    cfg.hidden_size = 64;
    cfg.intermediate_size = 256;  // gate/up fuse in runs of 128 rows: the SwiGLU epilogue path
    RandomModel rm(cfg, DType::F32, 21);
    const std::vector<int32_t> prompt = random_ids(45, 256, 22);  // two KV blocks and a part
    ThreadPool pool(2);
    std::vector<std::vector<float>> logits[2];
    const KernelLevel best = q == QuantScheme::None ? KernelLevel::Avx512 : max_kernel_level();
    for (int wide = 0; wide < 2; ++wide) {
      set_kernel_level_override(wide ? best : KernelLevel::Avx2);
      ModelOptions o;
      o.quant = q;
      o.compute = compute;
      Model model(rm.config(), rm.lookup(), o);
      auto kv = model.make_kv_cache(1 << 20);
      REQUIRE(kv->type() == (compute == ComputeType::BF16 ? KvType::Bf16 : KvType::F32));
      const int s = kv->create();
      REQUIRE(kv->reserve(s, static_cast<int64_t>(prompt.size()) + 1));
      SeqChunk c{s, 0, std::span<const int32_t>(prompt), 0};
      auto keep = [&](size_t, int64_t, std::span<const float> lg) { logits[wide].emplace_back(lg.begin(), lg.end()); };
      model.forward(std::span<const SeqChunk>(&c, 1), *kv, pool, keep);
      const int32_t next = 7;  // one decode step on the cache
      SeqChunk d{s, static_cast<int64_t>(prompt.size()), std::span<const int32_t>(&next, 1), 0};
      model.forward(std::span<const SeqChunk>(&d, 1), *kv, pool, keep);
    }
    set_kernel_level_override(std::nullopt);
    INFO(quant_scheme_name(q) << ", head_dim " << head_dim << (compute == ComputeType::BF16 ? ", bf16" : ", f32"));
    REQUIRE(logits[0].size() == prompt.size() + 1);
    REQUIRE(logits[0] == logits[1]);
  }
}

TEST_CASE("model: a bf16 KV cache holds the f32 cache's K and V, rounded to nearest even", "[engine-model]") {
  // The same bf16-compute model with an f32 and with a bf16 cache: layer 0's K and V are computed
  // before any attention, so they are the same f32 values in both, and the bf16 cache must hold
  // exactly their roundings (transposed K, row-major V). Later layers differ (attention reads
  // the rounded values), and the logits stay close.
  ModelConfig cfg = random_model_config("tiny");
  cfg.head_dim = 24;
  cfg.hidden_size = 64;
  cfg.intermediate_size = 256;
  RandomModel rm(cfg, DType::BF16, 31);
  const std::vector<int32_t> prompt = random_ids(45, 256, 32);
  ThreadPool pool(2);
  std::unique_ptr<KvCache> caches[2];
  std::vector<float> logits[2];
  int seqs[2];
  for (int i = 0; i < 2; ++i) {
    ModelOptions o;
    o.compute = ComputeType::BF16;
    o.f32_kv = i == 0;
    Model model(rm.config(), rm.lookup(), o);
    caches[i] = model.make_kv_cache(1 << 20);
    seqs[i] = caches[i]->create();
    REQUIRE(caches[i]->reserve(seqs[i], static_cast<int64_t>(prompt.size())));
    SeqChunk c{seqs[i], 0, std::span<const int32_t>(prompt), static_cast<int64_t>(prompt.size()) - 1};
    model.forward(std::span<const SeqChunk>(&c, 1), *caches[i], pool,
                  [&](size_t, int64_t, std::span<const float> lg) { logits[i].assign(lg.begin(), lg.end()); });
  }
  REQUIRE(caches[0]->type() == KvType::F32);
  REQUIRE(caches[1]->type() == KvType::Bf16);
  const KvCache& f = *caches[0];
  const KvCache& b = *caches[1];
  int64_t mismatches = 0, nonzero = 0;
  for (int64_t g = 0; g < cfg.n_kv_heads; ++g)
    for (int64_t p = 0; p < static_cast<int64_t>(prompt.size()); ++p)
      for (int64_t e = 0; e < cfg.head_dim; ++e) {
        const float k = f.k_at(seqs[0], 0, g, p)[e * KvCache::kBlockTokens], v = f.v_at(seqs[0], 0, g, p)[e];
        mismatches += b.k_at<uint16_t>(seqs[1], 0, g, p)[e * KvCache::kBlockTokens] != bf16_from_f32(k);
        mismatches += b.v_at<uint16_t>(seqs[1], 0, g, p)[e] != bf16_from_f32(v);
        nonzero += k != 0 && v != 0;
      }
  CHECK(mismatches == 0);
  CHECK(nonzero > 0);
  REQUIRE(logits[0].size() == static_cast<size_t>(cfg.vocab_size));
  REQUIRE(logits[1].size() == logits[0].size());
  double num = 0, den = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) {
    num += (logits[1][i] - logits[0][i]) * (logits[1][i] - logits[0][i]);
    den += static_cast<double>(logits[0][i]) * logits[0][i];
  }
  INFO("relative logit difference " << std::sqrt(num / den));
  CHECK(std::sqrt(num / den) < 2e-2);
  CHECK(num > 0);  // the rounding is real
}

TEST_CASE("bench: the between-steps hook runs before every decode step and after the last, untimed", "[engine-model]") {
  EngineOptions o;
  o.model = "random:tiny";
  o.threads = 1;
  auto e = Engine::load(o);
  BenchOptions bo;
  bo.prompt_tokens = 8;
  bo.gen_tokens = 5;
  int calls = 0;
  bo.between_steps = [&] {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // must not count as decode time
  };
  BenchResult r = e->bench(bo);
  CHECK(calls == 6);
  REQUIRE(r.decode_step_s.size() == 5);
  double sum = 0;
  for (double s : r.decode_step_s) sum += s;
  CHECK(sum == Approx(r.decode_s));
  CHECK(r.decode_s < 0.15);  // the 6 x 30 ms in the hook are not in it
}

TEST_CASE("bench: token counts past the context are refused, even where their sum overflows", "[engine-model]") {
  EngineOptions o;
  o.model = "random:tiny";
  o.threads = 1;
  auto e = Engine::load(o);
  BenchOptions bo;
  bo.prompt_tokens = std::numeric_limits<int64_t>::max();  // + gen_tokens wraps negative
  bo.gen_tokens = 1;
  CHECK_THROWS_WITH(e->bench(bo), Catch::Contains("exceed the context"));
  bo.prompt_tokens = 1;
  bo.gen_tokens = std::numeric_limits<int64_t>::max();
  CHECK_THROWS_WITH(e->bench(bo), Catch::Contains("exceed the context"));
}
