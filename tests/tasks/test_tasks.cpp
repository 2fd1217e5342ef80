// Task YAML parsing, templates, prompt building (lm-eval's exact strings) and scoring, on
// small fixtures made here.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "tasks/task.h"

using namespace qeval;
using nlohmann::json;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::vector<json> gsm_docs(const std::string& prefix, int n) {
  std::vector<json> v;
  for (int i = 0; i < n; i++) {
    v.push_back({{"question", prefix + "q" + std::to_string(i)},
                 {"answer", prefix + "step " + std::to_string(i) + "\n#### " + std::to_string(i)}});
  }
  return v;
}

json mmlu_doc(const std::string& q, int answer) {
  return {{"question", q},
          {"choices", {q + "-a", q + "-b", q + "-c", q + "-d"}},
          {"answer", answer},
          {"subject", "high_school_biology"},
          {"subject_name", "high school biology"}};
}

const char* kMinimal = R"(
version: "1.0"
dataset: gsm8k
output_type: generate_until
doc_to_text: "Q: {{question}}"
doc_to_target: "{{answer}}"
filters: [{name: f, steps: [{kind: take_first}]}]
metric: {kind: exact_match}
)";

}  // namespace

TEST_CASE("templates render fields, indices and strip; reject unknown fields", "[tasks]") {
  std::vector<std::string> fields = {"question", "choices", "answer"};
  auto t = Template::parse("{{ question.strip() }}|{{choices[1]}}|{{answer}}|\\boxed{}|{x}", fields, "t.yaml: doc_to_text");
  json doc = {{"question", "  \xc2\xa0hi\n"}, {"choices", {"a", "b"}}, {"answer", 2}};
  CHECK(t.render(doc) == "hi|b|2|\\boxed{}|{x}");
  CHECK(Template::parse("{{answer}}", fields, "t").render_value(doc) == json(2));
  CHECK(Template::parse("", fields, "t").render(doc).empty());
  CHECK_THAT(error_of([&] { Template::parse("{{questoin}}", fields, "t.yaml: doc_to_text"); }),
             Catch::Contains("t.yaml: doc_to_text") && Catch::Contains("questoin"));
  CHECK_THAT(error_of([&] { Template::parse("{{question", fields, "t"); }), Catch::Contains("unclosed"));
  CHECK_THAT(error_of([&] { Template::parse("{{question|upper}}", fields, "t"); }), Catch::Contains("unexpected"));
  CHECK_THAT(error_of([&] { Template::parse("{{choices[x]}}", fields, "t"); }), Catch::Contains("index"));
  CHECK_THAT(error_of([&] { Template::parse("{{choices[5]}}", fields, "t.yaml").render(doc); }),
             Catch::Contains("t.yaml") && Catch::Contains("out of range"));
  CHECK_THAT(error_of([&] { Template::parse("{{choices}}", fields, "t").render(doc); }), Catch::Contains("array"));
}

TEST_CASE("every built-in task loads, with its version and metric keys", "[tasks]") {
  auto names = builtin_task_names();
  CHECK(names == std::vector<std::string>{"gsm8k", "gsm8k_chat", "gsm8k_sglang", "mmlu", "mmlu_chat",
                                          "mmlu_generative"});
  for (const auto& n : names) {
    INFO(n);
    auto t = load_task(n);
    CHECK(t.name == n);
    CHECK_FALSE(t.version.empty());
  }
  CHECK(load_task("gsm8k").version == "3.0");
  CHECK(metric_keys(load_task("gsm8k")) ==
        std::vector<std::string>{"exact_match,strict-match", "exact_match,flexible-extract"});
  CHECK(metric_keys(load_task("mmlu")) == std::vector<std::string>{"acc,none"});
  CHECK(metric_keys(load_task("gsm8k_sglang")) == std::vector<std::string>{"exact_match,last-integer"});
  CHECK(metric_keys(load_task("gsm8k_chat")) == std::vector<std::string>{"exact_match,boxed"});
  CHECK(metric_keys(load_task("mmlu_chat")) == std::vector<std::string>{"exact_match,answer-line"});
  CHECK(metric_keys(load_task("mmlu_generative")) == std::vector<std::string>{"exact_match,first-letter"});
  CHECK_THAT(error_of([] { load_task("gsm9k"); }), Catch::Contains("gsm8k_chat"));
  CHECK_THAT(error_of([] { load_task("/nonexistent/x.yaml"); }), Catch::Contains("not found"));
}

TEST_CASE("task YAML errors name the file and key", "[tasks]") {
  auto err = [](const std::string& yaml) { return error_of([&] { parse_task_yaml(yaml, "my.yaml", "my"); }); };
  CHECK(parse_task_yaml(kMinimal, "my.yaml", "my").name == "my");
  CHECK_THAT(err(std::string(kMinimal) + "shots: 3\n"), Catch::Contains("my.yaml") && Catch::Contains("'shots'"));
  CHECK_THAT(err(std::string(kMinimal) + "generation: {max_token: 3}\n"),
             Catch::Contains("my.yaml: generation") && Catch::Contains("'max_token'"));
  CHECK_THAT(err(std::string(kMinimal) + "fewshot_sampler: {kind: first_n, seed: 1}\n"), Catch::Contains("'seed'"));
  std::string no_version = kMinimal;
  no_version.replace(no_version.find("version"), 15, "");
  CHECK_THAT(err(no_version), Catch::Contains("missing key 'version'"));
  // Present with the wrong type: said so, not "missing".
  std::string with_version = no_version + "version: ";
  CHECK_THAT(err(with_version + "[1]\n"), Catch::Contains("my.yaml: version: expected a string or number, got a list"));
  CHECK_THAT(err(with_version + "{a: 1}\n"), Catch::Contains("version: expected a string or number, got a mapping"));
  CHECK_THAT(err(with_version + "\"\"\n"), Catch::Contains("version: is empty"));
  CHECK_THAT(err(with_version + "\n"), Catch::Contains("missing key 'version'"));
  CHECK_THAT(err(std::string(kMinimal) + "num_fewshot: 2\n"), Catch::Contains("fewshot_split"));
  CHECK_THAT(err(std::string(kMinimal) + "generation: {temperature: nan}\n"), Catch::Contains("temperature"));
  CHECK_THAT(err(std::string(kMinimal) + "task: ../../escaped\n"), Catch::Contains("task: '../../escaped' must be a name"));
  CHECK_THAT(err(std::string(kMinimal) + "chat_user: \"{{question}}\"\n"), Catch::Contains("chat_user applies to output_type chat only"));
  std::string chat;
  for (const auto& [n, text] : builtin_task_yamls())
    if (n == "mmlu_chat") chat = std::string(text);
  REQUIRE_FALSE(chat.empty());
  CHECK_THAT(err(chat + "description: \"x\"\n"), Catch::Contains("description does not apply to output_type chat"));
  CHECK_THAT(err(std::string(kMinimal) + "description: '{{subject}}'\n"),
             Catch::Contains("my.yaml: description") && Catch::Contains("'subject'"));
  CHECK_THAT(err("version: 1\ndataset: squad\n"), Catch::Contains("squad"));
  CHECK_THAT(err("[1, 2]"), Catch::Contains("mapping"));
  CHECK_THAT(err("a: [b"), Catch::Contains("my.yaml:1:1: invalid YAML"));
  CHECK_THAT(err(std::string(kMinimal) + "version: 2\n"), Catch::Contains("duplicate key 'version'"));
  std::string mc = R"(
version: 1
dataset: mmlu
output_type: multiple_choice_loglikelihood
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
metric: {kind: acc}
)";
  CHECK_THAT(err(mc), Catch::Contains("doc_to_choice"));
  CHECK_THAT(err(std::string(kMinimal).replace(std::string(kMinimal).find("{kind: exact_match}"), 19,
                                               "{kind: exact_match, ignore_cas: true}")),
             Catch::Contains("my.yaml: metric") && Catch::Contains("ignore_cas"));
}

TEST_CASE("gsm8k prompts: lm-eval's format with one Random(1234) stream across docs", "[tasks]") {
  auto spec = load_task("gsm8k");
  SubTask sub{"gsm8k", "", gsm_docs("test ", 4), gsm_docs("train ", 12)};
  auto inst = build_instances(spec, sub, -1);
  REQUIRE(inst.size() == 4);
  // python3 -c "import random; r=random.Random(1234); print([r.sample(range(12),5) for _ in range(4)])"
  //   -> [[7, 1, 0, 10, 9], [10, 1, 11, 5, 3], [0, 11, 10, 5, 7], [9, 7, 2, 1, 11]]
  std::vector<std::vector<int>> shots = {{7, 1, 0, 10, 9}, {10, 1, 11, 5, 3}, {0, 11, 10, 5, 7}, {9, 7, 2, 1, 11}};
  for (size_t d = 0; d < 4; d++) {
    std::string expect;
    for (int s : shots[d]) {
      expect += "Question: train q" + std::to_string(s) + "\nAnswer: train step " + std::to_string(s) +
                "\n#### " + std::to_string(s) + "\n\n";
    }
    expect += "Question: test q" + std::to_string(d) + "\nAnswer:";
    REQUIRE(inst[d].gen);
    CHECK(inst[d].gen->prompt == expect);
    CHECK_FALSE(inst[d].gen->chat);
    CHECK(inst[d].gen->stop == std::vector<std::string>{"Question:", "</s>", "<|im_end|>"});
    CHECK(inst[d].gen->max_tokens == 256);
    CHECK(inst[d].doc_id == int(d));
    CHECK(inst[d].task == "gsm8k");
    CHECK(inst[d].target == sub.test_docs[d]["answer"].get<std::string>());
  }
  // --limit takes the first docs with the same shots as the full run.
  auto limited = build_instances(spec, sub, 2);
  REQUIRE(limited.size() == 2);
  CHECK(limited[1].gen->prompt == inst[1].gen->prompt);
  CHECK(build_instances(spec, sub, 0).empty());
  CHECK(prompt_record(inst[0]) == json{{"task", "gsm8k"}, {"doc_id", 0}, {"prompt", inst[0].gen->prompt}});
  SubTask tiny{"gsm8k", "", gsm_docs("t", 1), gsm_docs("s", 4)};
  CHECK_THAT(error_of([&] { build_instances(spec, tiny, -1); }), Catch::Contains("few-shot docs"));
}

TEST_CASE("few-shot from the test split excludes the doc itself", "[tasks]") {
  auto spec = parse_task_yaml(std::string(kMinimal) +
                                  "test_split: train\nfewshot_split: train\nnum_fewshot: 2\n"
                                  "fewshot_sampler: {kind: python_random, seed: 1234}\n",
                              "same.yaml", "same");
  auto docs = gsm_docs("", 4);
  SubTask sub{"same", "", docs, docs};
  auto inst = build_instances(spec, sub, -1);
  // python3 -c "import random; r=random.Random(1234); print([r.sample(range(4),3) for _ in range(3)])"
  //   -> [[3, 0, 2], [0, 2, 3], [0, 3, 1]]: doc 0 keeps 3,2; doc 1 keeps 0,2; doc 2 keeps 0,3
  auto shot = [](int i) { return "Q: q" + std::to_string(i) + " step " + std::to_string(i) + "\n#### " + std::to_string(i) + "\n\n"; };
  CHECK(inst[0].gen->prompt == shot(3) + shot(2) + "Q: q0");
  CHECK(inst[1].gen->prompt == shot(0) + shot(2) + "Q: q1");
  CHECK(inst[2].gen->prompt == shot(0) + shot(3) + "Q: q2");

  // Other splits: no extra shot is drawn, and a shot equal to the doc is still dropped (lm-eval's
  // ContextSampler), leaving the prompt one shot short rather than leaking the answer.
  auto diff = parse_task_yaml(std::string(kMinimal) +
                                  "test_split: test\nfewshot_split: train\nnum_fewshot: 2\n"
                                  "fewshot_sampler: {kind: first_n}\n",
                              "diff.yaml", "diff");
  SubTask other{"diff", "", docs, docs};
  auto di = build_instances(diff, other, -1);
  CHECK(di[0].gen->prompt == shot(1) + "Q: q0");
  CHECK(di[1].gen->prompt == shot(0) + "Q: q1");
  CHECK(di[2].gen->prompt == shot(0) + shot(1) + "Q: q2");
}

// A sampling task seeds each request by its doc, so a request asked again (--resume) draws the
// same sample; a greedy one sends no seed.
TEST_CASE("sampled generation carries a seed per doc; greedy none", "[tasks]") {
  auto docs = gsm_docs("", 3);
  SubTask sub{"t", "", docs, docs};
  auto greedy = build_instances(parse_task_yaml(kMinimal, "g.yaml", "g"), sub, -1);
  for (const auto& in : greedy) CHECK_FALSE(in.gen->seed.has_value());
  auto sampled = build_instances(
      parse_task_yaml(std::string(kMinimal) + "generation: {temperature: 0.7}\n", "s.yaml", "s"), sub, -1);
  for (size_t i = 0; i < sampled.size(); ++i) CHECK(sampled[i].gen->seed == std::optional<uint64_t>(i));
  CHECK(build_instances(parse_task_yaml(std::string(kMinimal) + "generation: {temperature: 0.7}\n", "s.yaml", "s"),
                        sub, 2)[1].gen->seed == sampled[1].gen->seed);
}

TEST_CASE("mmlu prompts: lm-eval's description, first 5 dev shots, ' A'..' D'", "[tasks]") {
  auto spec = load_task("mmlu");
  std::vector<json> dev, test = {mmlu_doc("  What is life?\n", 2)};
  for (int i = 0; i < 6; i++) dev.push_back(mmlu_doc("d" + std::to_string(i), i % 4));
  SubTask sub{"mmlu_high_school_biology", "mmlu", test, dev};
  auto inst = build_instances(spec, sub, -1);
  REQUIRE(inst.size() == 1);
  REQUIRE(inst[0].loglik);
  std::string expect = "The following are multiple choice questions (with answers) about high school biology.\n\n";
  const char* letters = "ABCD";
  for (int i = 0; i < 5; i++) {
    std::string q = "d" + std::to_string(i);
    expect += q + "\nA. " + q + "-a\nB. " + q + "-b\nC. " + q + "-c\nD. " + q + "-d\nAnswer: " +
              std::string(1, letters[i % 4]) + "\n\n";
  }
  expect += "What is life?\nA.   What is life?\n-a\nB.   What is life?\n-b\nC.   What is life?\n-c\nD.   What is life?\n-d\nAnswer:";
  CHECK(inst[0].loglik->context == expect);
  CHECK(inst[0].loglik->continuations == std::vector<std::string>{" A", " B", " C", " D"});
  CHECK(inst[0].gold == 2);
  CHECK(inst[0].target == "C");
  CHECK(inst[0].task == "mmlu_high_school_biology");

  LoglikResult r;
  r.logprob = {-4.0, -2.0, -1.5, -1.5};
  auto s = score_loglikelihood(spec, inst[0], r);
  CHECK(s.scores == json{{"acc,none", 1.0}});
  CHECK(s.extracted == json{{"none", "C"}});
  r.logprob = {-1.0, -1.0, -1.0, -1.0};
  CHECK(score_loglikelihood(spec, inst[0], r).scores["acc,none"] == 0.0);  // tie -> A
  r.logprob = {-1.0};
  CHECK_THAT(error_of([&] { score_loglikelihood(spec, inst[0], r); }), Catch::Contains("expected 4 logprobs"));
  r.error = "timeout";
  CHECK_THROWS_AS(score_loglikelihood(spec, inst[0], r), Error);

  auto gen = load_task("mmlu_generative");
  auto ginst = build_instances(gen, SubTask{"mmlu_generative_high_school_biology", "mmlu_generative", test, dev}, -1);
  CHECK(ginst[0].gen->prompt == expect);
  CHECK(ginst[0].gen->max_tokens == 1);
  GenResult g;
  g.text = " C";
  g.finish_reason = "length";  // normal for completion tasks
  auto gs = score_generation(gen, ginst[0], g);
  CHECK(gs.scores == json{{"exact_match,first-letter", 1.0}});
  CHECK_FALSE(gs.truncated);
  g.text = " The";
  gs = score_generation(gen, ginst[0], g);
  CHECK(gs.invalid);
  CHECK(gs.extracted["first-letter"] == "[invalid]");
}

TEST_CASE("gsm8k scoring: strict and flexible filters, normalisation", "[tasks]") {
  auto spec = load_task("gsm8k");
  Instance inst;
  inst.target = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 1,018";
  GenResult r;
  r.text = " She makes $1,018.\n#### 1018\n\nQuestion";
  auto s = score_generation(spec, inst, r);
  CHECK(s.extracted == json{{"strict-match", "1018"}, {"flexible-extract", "1018"}});
  CHECK(s.scores == json{{"exact_match,strict-match", 1.0}, {"exact_match,flexible-extract", 1.0}});
  CHECK_FALSE(s.invalid);
  r.text = " The answer is $1,018.";
  s = score_generation(spec, inst, r);
  CHECK(s.invalid);
  CHECK(s.scores == json{{"exact_match,strict-match", 0.0}, {"exact_match,flexible-extract", 1.0}});
  r.error = "HTTP 500";
  CHECK_THROWS_AS(score_generation(spec, inst, r), Error);
}

TEST_CASE("gsm8k_sglang: first k train shots, last integer", "[tasks]") {
  auto spec = load_task("gsm8k_sglang");
  SubTask sub{"gsm8k_sglang", "", gsm_docs("test ", 2), gsm_docs("train ", 7)};
  auto inst = build_instances(spec, sub, -1);
  std::string shots;
  for (int i = 0; i < 5; i++) {
    shots += "Question: train q" + std::to_string(i) + "\nAnswer: train step " + std::to_string(i) + "\n#### " +
             std::to_string(i) + "\n\n";
  }
  CHECK(inst[1].gen->prompt == shots + "Question: test q1\nAnswer:");
  CHECK(inst[1].target == "1");
  CHECK(inst[1].gen->max_tokens == 512);
  CHECK(inst[1].gen->stop == std::vector<std::string>{"Question", "Assistant:", "<|separator|>"});
  GenResult r;
  r.text = " 3 apples and 1 pear, so 1";
  CHECK(score_generation(spec, inst[1], r).scores["exact_match,last-integer"] == 1.0);
  r.text = " it is 11";
  CHECK(score_generation(spec, inst[1], r).scores["exact_match,last-integer"] == 0.0);
}

TEST_CASE("chat tasks: messages, reasoning never searched, truncation", "[tasks]") {
  auto spec = load_task("gsm8k_chat");
  SubTask sub{"gsm8k_chat", "", {json{{"question", "How many?"}, {"answer", "x\n#### 1,200"}}}, {}};
  auto inst = build_instances(spec, sub, -1);
  REQUIRE(inst[0].gen);
  CHECK(inst[0].gen->chat);
  REQUIRE(inst[0].gen->messages.size() == 1);
  CHECK(inst[0].gen->messages[0].role == "user");
  CHECK(inst[0].gen->messages[0].content ==
        "How many?\nPlease reason step by step, and put your final answer within \\boxed{}.");
  CHECK(prompt_record(inst[0]) ==
        json{{"task", "gsm8k_chat"}, {"doc_id", 0},
             {"messages", {{{"role", "user"}, {"content", inst[0].gen->messages[0].content}}}}});
  GenResult r;
  r.text = "<think>maybe \\boxed{7}</think>So \\boxed{\\$1,200}.";
  r.reasoning = "\\boxed{9}";
  r.finish_reason = "stop";
  auto s = score_generation(spec, inst[0], r);
  CHECK(s.extracted["boxed"] == "\\$1,200");
  CHECK(s.scores["exact_match,boxed"] == 1.0);
  CHECK_FALSE(s.truncated);
  r.text = "\\boxed{1200}";  // the answer with the reasoning in its own field
  CHECK(score_generation(spec, inst[0], r).scores["exact_match,boxed"] == 1.0);
  r.text = "";  // only the reasoning field has a box: never searched
  s = score_generation(spec, inst[0], r);
  CHECK(s.invalid);
  CHECK(s.scores["exact_match,boxed"] == 0.0);
  r.text = "\\boxed{1200} and more";
  r.finish_reason = "length";
  s = score_generation(spec, inst[0], r);
  CHECK(s.truncated);
  CHECK(s.scores["exact_match,boxed"] == 0.0);
  r.text = "\\boxed{1200} <think>still going";
  r.finish_reason = "stop";
  CHECK(score_generation(spec, inst[0], r).truncated);

  auto mc = load_task("mmlu_chat");
  auto minst = build_instances(mc, SubTask{"mmlu_chat_high_school_biology", "mmlu_chat", {mmlu_doc("Q?", 3)}, {}}, -1);
  CHECK(minst[0].gen->messages[0].content ==
        "Answer the following multiple choice question. The last line of your response should be of the "
        "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by "
        "step before answering.\n\nQ?\n\nA) Q?-a\nB) Q?-b\nC) Q?-c\nD) Q?-d");
  CHECK(minst[0].target == "D");
  GenResult m;
  m.text = "<think>Answer: A</think>Reasoning...\nAnswer: D";
  m.finish_reason = "stop";
  CHECK(score_generation(mc, minst[0], m).scores["exact_match,answer-line"] == 1.0);
  m.text = "Answer: d";  // simple-evals compares the letter as written
  CHECK(score_generation(mc, minst[0], m).scores["exact_match,answer-line"] == 0.0);
  m.text = "**Answer:** D\n\nAnswer: A";  // normalised, then the first match
  CHECK(score_generation(mc, minst[0], m).scores["exact_match,answer-line"] == 1.0);
}
