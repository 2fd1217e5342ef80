// Integration: prompts for the full GSM8K and MMLU test sets from $QEVAL_DATA, compared with
// an independent Python rendition of lm-eval's prompt construction. The expected digests are
// sha256 over every prompt followed by a NUL byte, in doc order (MMLU: subjects sorted),
// printed by this script (python3 3.11, data from ../shared/datasets):
//
//   import csv, hashlib, json, os, random
//   D = os.environ["QEVAL_DATA"]
//   def jl(p): return [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]
//   train, test = jl(f"{D}/gsm8k/train.jsonl"), jl(f"{D}/gsm8k/test.jsonl")
//   rng = random.Random(1234); h = hashlib.sha256()
//   for doc in test:
//       p = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in rng.sample(train, 5))
//       h.update((p + f"Question: {doc['question']}\nAnswer:").encode() + b"\0")
//   print(h.hexdigest())
//   subs = sorted(f[:-len("_test.csv")] for f in os.listdir(f"{D}/mmlu/test"))
//   def rows(p): return list(csv.reader(open(p, newline="", encoding="utf-8")))
//   h = hashlib.sha256()
//   for s in subs:
//       dev, tst = rows(f"{D}/mmlu/dev/{s}_dev.csv"), rows(f"{D}/mmlu/test/{s}_test.csv")
//       fmt = lambda r: f"{r[0].strip()}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:"
//       ctx = f"The following are multiple choice questions (with answers) about {s.replace('_', ' ')}.\n\n"
//       ctx += "".join(fmt(r) + " " + r[5] + "\n\n" for r in dev[:5])
//       for r in tst: h.update((ctx + fmt(r)).encode() + b"\0")
//   print(h.hexdigest())
#include <cstdlib>

#include <catch2/catch.hpp>

#include "core/fs.h"
#include "tasks/task.h"

using namespace qeval;

namespace {

bool have_data() {
  if (std::getenv("QEVAL_DATA")) return true;
  WARN("QEVAL_DATA is not set: skipping the dataset integration test");
  return false;
}

}  // namespace

TEST_CASE("gsm8k prompts over the whole test set match the Python reference", "[tasks][data]") {
  if (!have_data()) return;
  auto spec = load_task("gsm8k");
  auto subs = expand_task(spec);
  REQUIRE(subs.size() == 1);
  auto inst = build_instances(spec, subs[0], -1);
  REQUIRE(inst.size() == 1319);
  std::string all;
  for (const auto& i : inst) all += i.gen->prompt + '\0';
  CHECK(sha256_hex(all) == "90c166d5c3e3026061cfa63a694800e2cc31cdc12da84ff0fea81cccf9c93092");
  CHECK(inst[0].gen->prompt.rfind("Question: Jen and Tyler are gymnasts practicing flips.", 0) == 0);
  // --limit 20: the same first 20 prompts.
  auto limited = build_instances(spec, subs[0], 20);
  REQUIRE(limited.size() == 20);
  CHECK(limited[19].gen->prompt == inst[19].gen->prompt);
}

TEST_CASE("mmlu prompts over all 57 subjects match the Python reference", "[tasks][data]") {
  if (!have_data()) return;
  auto spec = load_task("mmlu");
  auto subs = expand_task(spec);
  REQUIRE(subs.size() == 57);
  CHECK(subs[0].name == "mmlu_abstract_algebra");
  CHECK(subs[0].group == "mmlu");
  std::string all;
  size_t n = 0;
  for (const auto& s : subs) {
    for (const auto& i : build_instances(spec, s, -1)) {
      all += i.loglik->context + '\0';
      n++;
    }
  }
  CHECK(n == 14042);
  CHECK(sha256_hex(all) == "e615053d5ed037dcf108fb4fa85df27e5fa45928938a6c4b8f51e9fce3141fb9");
}
