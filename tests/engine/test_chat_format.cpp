// Chat format tests: exact rendered prompts for ChatML (Qwen2.5), Llama 3 / 3.1 and
// DeepSeek-R1, detection from template excerpts, and (with $QEVAL_MODELS) Meta's reference
// ids for a Llama 3 dialog rendered and tokenized through our tokenizer.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "engine/chat_format.h"
#include "engine/tokenizer.h"

using qeval::ChatFormat;
using qeval::ChatTurn;

namespace {

std::vector<ChatTurn> sys_user() { return {{"system", "Be brief."}, {"user", "What is 2+2?"}}; }
std::vector<ChatTurn> user_only() { return {{"user", " What is 2+2? "}}; }

}  // namespace

TEST_CASE("chatml renders Qwen2.5's template", "[chat][unit]") {
  auto f = *qeval::chat_format_by_name("chatml");
  CHECK(f.name() == "chatml");
  CHECK(qeval::render_chat(f, user_only()) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n What is 2+2? <|im_end|>\n<|im_start|>assistant\n");
  CHECK(qeval::render_chat(f, sys_user()) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n");
  std::vector<ChatTurn> multi = {{"user", "a"}, {"assistant", "b"}, {"system", "c"}, {"user", "d"}};
  CHECK(qeval::render_chat(*qeval::chat_format_by_name("chatml-plain"), multi, false) ==
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>system\nc<|im_end|>\n<|im_start|>user\nd<|im_end|>\n");
  std::vector<ChatTurn> bad = {{"tool", "x"}};
  CHECK_THROWS_WITH(qeval::render_chat(f, bad), Catch::Contains("tool"));
}

TEST_CASE("llama3 and llama3.1 render Meta's templates", "[chat][unit]") {
  auto f = *qeval::chat_format_by_name("llama3");
  CHECK(qeval::render_chat(f, user_only()) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(qeval::render_chat(f, sys_user(), false) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>");
  // Jinja's trim is Python's str.strip(): Unicode spaces go too.
  std::vector<ChatTurn> spaced = {{"user", "\xe3\x80\x80What?\xc2\xa0\n"}};
  CHECK(qeval::render_chat(f, spaced, false) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat?<|eot_id|>");
  auto f31 = *qeval::chat_format_by_name("llama3.1");
  CHECK(qeval::render_chat(f31, sys_user()) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(qeval::render_chat(f31, user_only(), false) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>");
}

TEST_CASE("deepseek-r1 renders R1's template", "[chat][unit]") {
  auto f = *qeval::chat_format_by_name("deepseek-r1");
  CHECK(qeval::render_chat(f, sys_user()) ==
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜><think>\n");
  std::vector<ChatTurn> multi = {{"user", "a"}, {"assistant", "<think>\nhmm\n</think>\n\nb"}, {"user", "c"}};
  CHECK(qeval::render_chat(f, multi) ==
        "<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜>\n\nb<｜end▁of▁sentence｜><｜User｜>c"
        "<｜Assistant｜><think>\n");
}

TEST_CASE("detect_chat_format recognises templates by their markers", "[chat][unit]") {
  // Excerpts of the real templates (facts), enough to carry their markers.
  const char* qwen25 =
      "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
      "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
      "    {%- else %}\n"
      "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
      "    {%- endif %}\n{%- endif %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";
  auto f = qeval::detect_chat_format(qwen25);
  REQUIRE(f);
  CHECK(f->kind == ChatFormat::Kind::kChatml);
  CHECK(f->default_system == qeval::kQwen25DefaultSystem);

  const char* chatml_plain =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  f = qeval::detect_chat_format(chatml_plain);
  REQUIRE(f);
  CHECK(f->default_system.empty());

  const char* llama3 =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
      "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}";
  f = qeval::detect_chat_format(llama3);
  REQUIRE(f);
  CHECK(f->name() == "llama3");
  f = qeval::detect_chat_format(std::string(llama3) + "{{- \"Cutting Knowledge Date: December 2023\\n\" }}");
  REQUIRE(f);
  CHECK(f->name() == "llama3.1");

  const char* r1 =
      "{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
      "{{'<｜User｜>' + message['content']}}{%- endif %}{% if add_generation_prompt and not ns.is_tool %}"
      "{{'<｜Assistant｜><think>\\n'}}{% endif %}";
  f = qeval::detect_chat_format(r1);
  REQUIRE(f);
  CHECK(f->name() == "deepseek-r1");

  CHECK_FALSE(qeval::detect_chat_format("[INST] {{ message['content'] }} [/INST]"));
  CHECK_FALSE(qeval::detect_chat_format(""));
  CHECK_FALSE(qeval::chat_format_by_name("mistral"));
}

TEST_CASE("detect_chat_format reads Qwen2.5-Math's default system message as Jinja does", "[chat][unit]") {
  // The real template's system branch (Qwen2.5-Math-*-Instruct tokenizer_config.json, after JSON
  // decoding: the Jinja source holds "\\boxed{}", which Jinja renders as "\boxed{}").
  const std::string math_tpl =
      R"({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'Please reason step by step, and put your final answer within \\boxed{}.' }}
    {%- endif %}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)";
  auto f = qeval::detect_chat_format(math_tpl);
  REQUIRE(f);
  CHECK(f->name() == "chatml");
  CHECK(f->default_system == "Please reason step by step, and put your final answer within \\boxed{}.");
  // What jinja2 (trim_blocks, lstrip_blocks, as transformers) renders from the whole template.
  const std::vector<ChatTurn> no_system = {{"user", "a"}, {"system", "s2"}, {"user", "b"}};
  CHECK(qeval::render_chat(*f, no_system) ==
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\na<|im_end|>\n<|im_start|>system\ns2<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(qeval::render_chat(*f, sys_user()) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");

  // Jinja string literals: both quote kinds, Python escapes, "{{-"/"-}}" and spaces.
  auto default_of = [](const std::string& tpl) { return qeval::detect_chat_format(tpl)->default_system; };
  CHECK(default_of(R"({{ "<|im_start|>system\nIt's \"x\"\t{y}<|im_end|>\n" }}<|im_end|>)") == "It's \"x\"\t{y}");
  CHECK(default_of(R"({{-'<|im_start|>system\nA\'b \\\\ \q \x41\u00e9<|im_end|>\n'-}}<|im_end|>)") ==
        "A'b \\\\ \\q A\xC3\xA9");
  // A literal joined to an expression, Jinja syntax or an unterminated literal is no default.
  CHECK(default_of(R"({{ '<|im_start|>system\nA<|im_end|>\n' + x }})").empty());
  CHECK(default_of(R"({% set s = '<|im_start|>system\nA<|im_end|>\n' %}{{ s }}<|im_end|>)").empty());
  CHECK(default_of(R"({{ '<|im_start|>system\nA<|im_end|>\n)").empty());
}

TEST_CASE("llama3 chat prompt tokenizes to Meta's reference ids", "[chat][model]") {
  const char* models = std::getenv("QEVAL_MODELS");
  if (!models || !*models) {
    WARN("QEVAL_MODELS is unset: skipping");
    return;
  }
  std::filesystem::path dir = std::filesystem::path(models) / "llama3-tokenizer";
  auto tok = qeval::load_tiktoken(dir / "tokenizer.model", "llama3");
  auto ref = nlohmann::json::parse(qeval::read_file(dir / "meta_test_tokenizer_reference.json"));
  for (auto& e : ref["encode_dialog_prompt"]) {
    std::vector<ChatTurn> msgs;
    for (auto& m : e["dialog"]) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    std::string prompt = qeval::render_chat(*qeval::chat_format_by_name("llama3"), msgs);
    CHECK(tok->encode(prompt, /*add_special=*/false, /*parse_special=*/true) == e["ids"].get<std::vector<int32_t>>());
  }
}
