#!/usr/bin/env bash
# CLI-level checks of `qeval`: every run-ending problem (bad config, unknown keys, missing or
# malformed data, unreachable server, bad flag) exits 2 with exactly one clear
# `qeval: error:` line naming the culprit, and config errors write nothing to the output dir;
# `qeval prompts` prints one JSON line per doc (57 subjects x limit for --task mmlu).
# Run by CTest as: bash test_errors.sh <path-to-qeval> <source-dir>
set -u
QEVAL=$(realpath "${1:?usage: test_errors.sh QEVAL SOURCE_DIR}")
SRC=$(realpath "${2:?usage: test_errors.sh QEVAL SOURCE_DIR}")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILS=0

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

# A small datasets tree: 4 GSM8K test docs, 6 train docs, all 57 MMLU subjects (5 dev rows,
# 3 test rows each).
DATA=$TMP/data
mkdir -p "$DATA/gsm8k" "$DATA/mmlu/dev" "$DATA/mmlu/val" "$DATA/mmlu/test"
for i in 0 1 2 3; do
  echo "{\"question\": \"Q$i: what is $i plus $i?\", \"answer\": \"$i + $i = $((2 * i))\\n#### $((2 * i))\"}"
done > "$DATA/gsm8k/test.jsonl"
for i in 0 1 2 3 4 5; do
  echo "{\"question\": \"T$i: what is $i times 2?\", \"answer\": \"$i * 2 = $((2 * i))\\n#### $((2 * i))\"}"
done > "$DATA/gsm8k/train.jsonl"
SUBJECTS="abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology
college_chemistry college_computer_science college_mathematics college_medicine college_physics
computer_security conceptual_physics econometrics electrical_engineering elementary_mathematics
formal_logic global_facts high_school_biology high_school_chemistry high_school_computer_science
high_school_european_history high_school_geography high_school_government_and_politics
high_school_macroeconomics high_school_mathematics high_school_microeconomics high_school_physics
high_school_psychology high_school_statistics high_school_us_history high_school_world_history
human_aging human_sexuality international_law jurisprudence logical_fallacies machine_learning
management marketing medical_genetics miscellaneous moral_disputes moral_scenarios nutrition
philosophy prehistory professional_accounting professional_law professional_medicine
professional_psychology public_relations security_studies sociology us_foreign_policy virology
world_religions"
for s in $SUBJECTS; do
  for i in 0 1 2 3 4; do echo "Dev $i of $s?,w,x,y,z,A"; done > "$DATA/mmlu/dev/${s}_dev.csv"
  echo "Val of $s?,w,x,y,z,B" > "$DATA/mmlu/val/${s}_val.csv"
  for i in 0 1 2; do echo "\"Test $i, $s?\",w,x,y,z,C"; done > "$DATA/mmlu/test/${s}_test.csv"
done
[ "$(ls "$DATA/mmlu/test" | wc -l)" = 57 ] || fail "fixture: expected 57 MMLU subjects"
export QEVAL_DATA=$DATA

# Nobody listens on port 1 of the loopback.
DEAD_URL="http://127.0.0.1:1/v1"

# write_config FILE BODY: a run config.
write_config() { printf '%s\n' "$2" > "$1"; }

GOOD="name: t
tasks: [gsm8k]
limit: 2
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m, timeout_s: 2}"

# expect_error NAME PATTERN OUTDIR CMD...: exit code 2, exactly one `qeval: error:` line,
# containing PATTERN (a fixed string), and (when OUTDIR is not -) nothing created at OUTDIR.
expect_error() {
  local name=$1 pattern=$2 outdir=$3
  shift 3
  "$@" > "$TMP/stdout" 2> "$TMP/stderr"
  local rc=$?
  local n
  n=$(grep -c '^qeval: error:' "$TMP/stderr")
  if [ "$rc" != 2 ]; then
    fail "$name: exit code $rc, want 2 (stderr: $(cat "$TMP/stderr"))"
  elif [ "$n" != 1 ]; then
    fail "$name: $n 'qeval: error:' lines, want 1 (stderr: $(cat "$TMP/stderr"))"
  elif ! grep '^qeval: error:' "$TMP/stderr" | grep -qF -- "$pattern"; then
    fail "$name: the error does not mention '$pattern': $(cat "$TMP/stderr")"
  else
    echo "ok: $name: $(grep '^qeval: error:' "$TMP/stderr" | cut -c1-200)"
  fi
  if [ "$outdir" != - ] && [ -e "$outdir" ]; then
    fail "$name: $outdir was created by a run that could not be done"
  fi
}

C=$TMP/cfg
mkdir -p "$C"

write_config "$C/unknown_top.yaml" "$GOOD
nmae: typo"
expect_error "unknown top-level key" "nmae" "$TMP/o1" "$QEVAL" run "$C/unknown_top.yaml" --out "$TMP/o1"

write_config "$C/unknown_variant_key.yaml" "name: t
tasks: [gsm8k]
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m, concurency: 8}"
expect_error "unknown variant key" "concurency" "$TMP/o2" "$QEVAL" run "$C/unknown_variant_key.yaml" --out "$TMP/o2"

write_config "$C/unknown_gate_key.yaml" "$GOOD
gates:
  - {task: gsm8k, metric: \"exact_match,strict-match\", max_dorp: 0.05}"
expect_error "unknown gate key" "max_dorp" "$TMP/o3" "$QEVAL" run "$C/unknown_gate_key.yaml" --out "$TMP/o3"

write_config "$C/missing_tasks.yaml" "name: t
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m}"
expect_error "missing tasks" "tasks" "$TMP/o4" "$QEVAL" run "$C/missing_tasks.yaml" --out "$TMP/o4"

write_config "$C/unknown_task.yaml" "name: t
tasks: [gsm9k]
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m}"
expect_error "unknown task" "gsm9k" "$TMP/o5" "$QEVAL" run "$C/unknown_task.yaml" --out "$TMP/o5"

write_config "$C/gate_no_threshold.yaml" "$GOOD
gates:
  - {task: gsm8k, metric: \"exact_match,strict-match\"}"
expect_error "gate without threshold" "gates[0]" "$TMP/o6" "$QEVAL" run "$C/gate_no_threshold.yaml" --out "$TMP/o6"

write_config "$C/gate_other_task.yaml" "$GOOD
gates:
  - {task: mmlu, metric: \"acc,none\", min_value: 0.1}"
expect_error "gate on a task not run" "gates[0].task: 'mmlu' is not a task of this run" "$TMP/o7" \
  "$QEVAL" run "$C/gate_other_task.yaml" --out "$TMP/o7"

write_config "$C/gate_other_metric.yaml" "$GOOD
gates:
  - {task: gsm8k, metric: \"exact_match,strict_match\", min_value: 0.1}"
expect_error "gate on a metric the task lacks" "gates[0].metric: 'exact_match,strict_match' is not a metric of task gsm8k" \
  "$TMP/o7b" "$QEVAL" run "$C/gate_other_metric.yaml" --out "$TMP/o7b"

write_config "$C/fidelity_missing.yaml" "$GOOD
fidelity_text: nope.txt"
expect_error "fidelity_text that does not exist" "fidelity_missing.yaml: fidelity_text:" "$TMP/o7c" \
  "$QEVAL" run "$C/fidelity_missing.yaml" --out "$TMP/o7c"
: > "$C/empty.txt"
write_config "$C/fidelity_empty.yaml" "$GOOD
fidelity_text: empty.txt"
# Whatever the variants (here no engine at all): the same error as where it would be scored.
expect_error "fidelity_text that is empty" "fidelity_empty.yaml: fidelity_text: $C/empty.txt is empty" "$TMP/o7f" \
  "$QEVAL" run "$C/fidelity_empty.yaml" --out "$TMP/o7f"

write_config "$C/dup_key.yaml" "$GOOD
limit: 3"
expect_error "a key given twice" "dup_key.yaml:6: duplicate key 'limit'" "$TMP/o7d" "$QEVAL" run "$C/dup_key.yaml" --out "$TMP/o7d"

write_config "$C/gate_bad_alpha.yaml" "$GOOD
gates:
  - {task: gsm8k, metric: \"exact_match,strict-match\", significant_drop: 5}"
expect_error "gate with a bad significance level" "significant_drop" "$TMP/o8" "$QEVAL" run "$C/gate_bad_alpha.yaml" --out "$TMP/o8"

write_config "$C/no_variants.yaml" "name: t
tasks: [gsm8k]"
expect_error "no variants" "variants" "$TMP/o9" "$QEVAL" run "$C/no_variants.yaml" --out "$TMP/o9"

write_config "$C/bad_yaml.yaml" "name: t
tasks: [gsm8k
variants: ]"
expect_error "YAML syntax error" "bad_yaml.yaml" "$TMP/o10" "$QEVAL" run "$C/bad_yaml.yaml" --out "$TMP/o10"

expect_error "missing config file" "nope.yaml" "$TMP/o11" "$QEVAL" run "$C/nope.yaml" --out "$TMP/o11"

write_config "$C/good.yaml" "$GOOD"

# --junit that cannot be written: found before anything runs (the server is not even asked).
expect_error "--junit is a directory" "--junit" "$TMP/o12j" "$QEVAL" run "$C/good.yaml" --out "$TMP/o12j" --junit "$TMP"
touch "$TMP/afile"
expect_error "--junit under a file" "--junit" "$TMP/o12k" "$QEVAL" run "$C/good.yaml" --out "$TMP/o12k" --junit "$TMP/afile/j.xml"
# --junit on the run's own config or outputs, in any spelling: refused before anything is written.
cp "$C/good.yaml" "$TMP/good.bak"
expect_error "--junit on the config" "which this run reads or writes" "$TMP/o12l" \
  "$QEVAL" run "$C/good.yaml" --out "$TMP/o12l" --junit "$C/../cfg/./good.yaml"
cmp -s "$C/good.yaml" "$TMP/good.bak" || fail "--junit on the config: the config changed"
expect_error "--junit on results.json" "which this run reads or writes" "$TMP/o12m" \
  "$QEVAL" run "$C/good.yaml" --out "$TMP/o12m" --junit "$TMP/o12m/results.json"
expect_error "--junit on report.svg" "which this run reads or writes" "$TMP/o12m" \
  "$QEVAL" run "$C/good.yaml" --out "$TMP/o12m/" --junit "$TMP/./o12m/report.svg"
expect_error "--junit among the samples" "where this run logs its samples" "$TMP/o12m" \
  "$QEVAL" run "$C/good.yaml" --out "$TMP/o12m" --junit "$TMP/o12m/samples/a/variant.json"

# Missing datasets: an empty QEVAL_DATA names the missing file and hints `qeval fetch`.
mkdir -p "$TMP/empty"
QEVAL_DATA=$TMP/empty expect_error "missing dataset" "gsm8k" "$TMP/o12" "$QEVAL" run "$C/good.yaml" --out "$TMP/o12"
grep -qF "qeval fetch" "$TMP/stderr" || fail "missing dataset: no 'qeval fetch' hint: $(cat "$TMP/stderr")"
grep -qF "$TMP/empty" "$TMP/stderr" || fail "missing dataset: the path under QEVAL_DATA is not named"

# Malformed data: line 3 of the GSM8K test split is broken -> file:line.
BAD=$TMP/bad_data
cp -r "$DATA" "$BAD"
sed -i '3s/.*/{"question": "broken/' "$BAD/gsm8k/test.jsonl"
QEVAL_DATA=$BAD expect_error "malformed data line" "test.jsonl:3" "$TMP/o13" "$QEVAL" run "$C/good.yaml" --out "$TMP/o13"

# A malformed MMLU record (5 fields) names the file.
cp -r "$DATA" "$TMP/bad_mmlu"
echo "Only,five,fields,here,A" >> "$TMP/bad_mmlu/mmlu/test/anatomy_test.csv"
write_config "$C/mmlu.yaml" "name: t
tasks: [mmlu]
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m}"
QEVAL_DATA=$TMP/bad_mmlu expect_error "malformed MMLU record" "anatomy_test.csv" "$TMP/o14" "$QEVAL" run "$C/mmlu.yaml" --out "$TMP/o14"

# Unreachable server: exit 2, naming the address.
expect_error "unreachable server" "127.0.0.1:1" "$TMP/o15" "$QEVAL" run "$C/good.yaml" --out "$TMP/o15"
grep -qF "cannot reach" "$TMP/stderr" || fail "unreachable server: message lacks 'cannot reach'"

# An output directory holding samples of an earlier run is refused without --resume or
# --overwrite, and left untouched.
mkdir -p "$TMP/earlier/samples/a"
echo '{"doc_id":0,"error":null}' > "$TMP/earlier/samples/a/gsm8k.jsonl"
cp "$TMP/earlier/samples/a/gsm8k.jsonl" "$TMP/earlier.bak"
expect_error "output dir with samples" "--resume" - "$QEVAL" run "$C/good.yaml" --out "$TMP/earlier"
cmp -s "$TMP/earlier/samples/a/gsm8k.jsonl" "$TMP/earlier.bak" || fail "output dir with samples: the samples changed"
[ "$(ls "$TMP/earlier")" = samples ] || fail "output dir with samples: something was written: $(ls "$TMP/earlier")"

# Bad CLI flags and values: exit 2 with one error line.
expect_error "unknown flag" "--bogus" - "$QEVAL" run "$C/good.yaml" --bogus
expect_error "bad --limit" "--limit" - "$QEVAL" run "$C/good.yaml" --limit zero
expect_error "unknown subcommand" "subcommand" - "$QEVAL" frobnicate
expect_error "bad bench --repeat" "--repeat" - "$QEVAL" bench --model random:tiny --repeat 0
expect_error "bad bench --batch" "--batch: 0 is out of range: give an integer from 1 to 256" - "$QEVAL" bench --model random:tiny --batch 0
expect_error "huge bench --batch" "--batch: 2147483647 is out of range" - "$QEVAL" bench --model random:tiny --batch 2147483647
expect_error "huge bench --prompt-tokens" "--prompt-tokens: 9223372036854775807 is out of range" - \
  "$QEVAL" bench --model random:tiny --prompt-tokens 9223372036854775807 --gen-tokens 1
# Within the flag's bound but past the context: refused before a KV cache is sized from it (it was
# std::bad_alloc).
expect_error "bench past the context" "exceed the model's context (256 tokens)" - \
  "$QEVAL" bench --model random:tiny --prompt-tokens 16777216 --gen-tokens 1 --batch 256
expect_error "bad generate --temperature" "--temperature: -1 is out of range: give a number >= 0" - \
  "$QEVAL" generate --model random:tiny --prompt x --temperature -1
expect_error "bad generate --threads" "--threads: -2 is out of range" - "$QEVAL" generate --model random:tiny --prompt x --threads -2
expect_error "too many bench --threads" "--threads: 100000 is out of range: give an integer from 0 to 1024" - \
  "$QEVAL" bench --model random:tiny --threads 100000
expect_error "bad convert --shard-size-gb" "--shard-size-gb: 0 is out of range: give a number from 0.001 to 1000000" - \
  "$QEVAL" convert --in "$TMP" --out "$TMP/conv" --to bf16 --shard-size-gb 0
# NaN fails both comparisons of a range check, so each real-valued flag tests it on its own.
expect_error "convert --shard-size-gb nan" "--shard-size-gb: nan is out of range" "$TMP/conv" \
  "$QEVAL" convert --in "$TMP" --out "$TMP/conv" --to bf16 --shard-size-gb nan
expect_error "generate --top-p nan" "--top-p: nan is out of range: give a number from 0 to 1" - \
  "$QEVAL" generate --model random:tiny --prompt x --top-p nan
expect_error "generate --temperature inf" "--temperature: inf is out of range" - \
  "$QEVAL" generate --model random:tiny --prompt x --temperature inf
expect_error "generate --temperature nan" "--temperature: nan is out of range" - \
  "$QEVAL" generate --model random:tiny --prompt x --temperature nan
# CLI11 saturates unsigned flags: -1 and 2^64 would both be taken as 2^64-1.
expect_error "generate --seed -1" "--seed: -1 is out of range: give an integer from 0 to 18446744073709551615" - \
  "$QEVAL" generate --model random:tiny --prompt x --seed -1
expect_error "generate --seed 2^64" "--seed: 18446744073709551616 is out of range" - \
  "$QEVAL" generate --model random:tiny --prompt x --seed 18446744073709551616
# w8a8_int8 (SGLang's name) is taken by the flag as by a run config; random models have no
# tokenizer, so generate gets past the flags to that error.
expect_error "generate --quantization w8a8_int8" "has no tokenizer" - \
  "$QEVAL" generate --model random:tiny --prompt x --quantization w8a8_int8 --seed 18446744073709551615
if out=$("$QEVAL" bench --model random:tiny --quantization w8a8_int8 --prompt-tokens 4 --gen-tokens 1 --json 2>&1) &&
   echo "$out" | grep -qF '"quantization":"int8-channel"'; then
  echo "ok: bench --quantization w8a8_int8 runs int8-channel"
else
  fail "bench --quantization w8a8_int8: $out"
fi
mkdir -p "$TMP/cin"
touch "$TMP/cin/config.json"
expect_error "convert --out inside --in" "is inside --in" "$TMP/cin/sub" \
  "$QEVAL" convert --in "$TMP/cin" --out "$TMP/cin/sub" --to int8-block
expect_error "convert --out equal to --in" "--out must differ from --in" - \
  "$QEVAL" convert --in "$TMP/cin" --out "$TMP/cin/../cin/" --to int8-block
expect_error "report of a non-results file" "good.yaml" - "$QEVAL" report "$C/good.yaml"
# report --out on its own input, on the chart it writes, or on a folder: refused before anything
# is written (the results are the source of truth; a folder used to get a stray FOLDER.svg beside it).
mkdir -p "$TMP/rep"
cp "$C/good.yaml" "$TMP/rep/results.json"
expect_error "report --out results.json" "would overwrite" - "$QEVAL" report "$TMP/rep/results.json" --out "$TMP/rep/../rep/results.json"
cmp -s "$TMP/rep/results.json" "$C/good.yaml" || fail "report --out results.json: results.json changed"
cp "$C/good.yaml" "$TMP/rep/r.svg"
expect_error "report --out on its chart's name" "the chart goes to the same file" - "$QEVAL" report "$TMP/rep/results.json" --out "$TMP/rep/r.svg"
expect_error "report --out a folder" "is a folder" "$TMP/rep.svg" "$QEVAL" report "$TMP/rep/results.json" --out "$TMP/rep"
expect_error "report --out a folder/" "is a folder" "$TMP/rep/.svg" "$QEVAL" report "$TMP/rep/results.json" --out "$TMP/rep/"
[ "$(ls "$TMP/rep" | tr '\n' ' ')" = "r.svg results.json " ] || fail "report --out: something was written: $(ls "$TMP/rep")"

# --- qeval prompts ------------------------------------------------------------------------
check_json_lines() {  # FILE EXPECTED_LINES KEY(prompt|messages) EXPECTED_TASKS
  python3 - "$@" <<'EOF'
import json, sys
path, n, key, n_tasks = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
lines = open(path, encoding="utf-8").read().split("\n")
assert lines[-1] == "", "output must end with a newline"
recs = [json.loads(l) for l in lines[:-1]]
assert len(recs) == n, f"{len(recs)} lines, want {n}"
tasks = {}
for r in recs:
    assert set(r) == {"task", "doc_id", key}, f"keys {sorted(r)}"
    assert isinstance(r["doc_id"], int)
    tasks.setdefault(r["task"], []).append(r["doc_id"])
assert len(tasks) == n_tasks, f"{len(tasks)} tasks, want {n_tasks}"
for t, ids in tasks.items():
    assert ids == list(range(len(ids))), f"{t}: doc ids {ids}"
EOF
}

if "$QEVAL" prompts "$C/good.yaml" --task gsm8k > "$TMP/p_gsm8k.jsonl" 2> "$TMP/stderr"; then
  check_json_lines "$TMP/p_gsm8k.jsonl" 2 prompt 1 || fail "prompts --task gsm8k: bad output"
  python3 - "$TMP/p_gsm8k.jsonl" <<'EOF' || fail "prompts --task gsm8k: prompt text"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert r[0]["task"] == "gsm8k"
assert r[1]["prompt"].endswith("Question: Q1: what is 1 plus 1?\nAnswer:"), r[1]["prompt"][-80:]
assert r[0]["prompt"].count("Question: ") == 6  # 5 shots + the question
EOF
else
  fail "prompts --task gsm8k exited non-zero: $(cat "$TMP/stderr")"
fi

if "$QEVAL" prompts "$C/good.yaml" --task mmlu --limit 2 > "$TMP/p_mmlu.jsonl" 2> "$TMP/stderr"; then
  check_json_lines "$TMP/p_mmlu.jsonl" 114 prompt 57 || fail "prompts --task mmlu: bad output"
  python3 - "$TMP/p_mmlu.jsonl" <<'EOF' || fail "prompts --task mmlu: prompt text"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert r[0]["task"] == "mmlu_abstract_algebra" and r[-1]["task"] == "mmlu_world_religions"
p = r[0]["prompt"]
assert p.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n"), p[:100]
assert p.endswith("Test 0, abstract_algebra?\nA. w\nB. x\nC. y\nD. z\nAnswer:"), p[-80:]
EOF
else
  fail "prompts --task mmlu exited non-zero: $(cat "$TMP/stderr")"
fi

if "$QEVAL" prompts "$C/good.yaml" --task gsm8k_chat --limit 3 > "$TMP/p_chat.jsonl" 2> "$TMP/stderr"; then
  check_json_lines "$TMP/p_chat.jsonl" 3 messages 1 || fail "prompts --task gsm8k_chat: bad output"
else
  fail "prompts --task gsm8k_chat exited non-zero: $(cat "$TMP/stderr")"
fi

expect_error "prompts with an unknown task" "gsm9k" - "$QEVAL" prompts "$C/good.yaml" --task gsm9k
if "$QEVAL" prompts "$C/good.yaml" --task mmlu_anatomy --limit 2 > "$TMP/p_sub.jsonl" 2> "$TMP/stderr"; then
  check_json_lines "$TMP/p_sub.jsonl" 2 prompt 1 || fail "prompts --task mmlu_anatomy: bad output"
else
  fail "prompts --task mmlu_anatomy exited non-zero: $(cat "$TMP/stderr")"
fi
expect_error "prompts with an unknown subtask" "mmlu_bogus" - "$QEVAL" prompts "$C/good.yaml" --task mmlu_bogus
# A config's own task file, by its task: name or by the path the config gives (beside the config).
sed 's/^task: gsm8k$/task: mygsm/' "$SRC/configs/tasks/gsm8k.yaml" > "$C/mygsm.yaml"
printf 'task: draft\nbogus: 1\n' > "$C/draft.yaml"  # a broken task file beside it: not in the way
write_config "$C/own_task.yaml" "name: t
tasks: [./mygsm.yaml, draft.yaml]
limit: 2
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m}"
for t in mygsm mygsm.yaml ./mygsm.yaml; do
  if (cd "$TMP" && "$QEVAL" prompts "$C/own_task.yaml" --task "$t") > "$TMP/p_own.jsonl" 2> "$TMP/stderr"; then
    check_json_lines "$TMP/p_own.jsonl" 2 prompt 1 || fail "prompts --task $t (a config's task file): bad output"
  else
    fail "prompts --task $t (a config's task file) exited non-zero: $(cat "$TMP/stderr")"
  fi
done
expect_error "prompts of a broken task file" "draft.yaml" - "$QEVAL" prompts "$C/own_task.yaml" --task draft.yaml
# An alias inside its own anchor (this crashed with a stack overflow), in a task file and in a config.
printf 'task: selfref\na: &x [*x]\n' > "$C/selfref.yaml"
expect_error "a task file with a YAML alias inside its own anchor" "selfref.yaml:2: a YAML alias refers to its own anchor" - \
  "$QEVAL" prompts "$C/good.yaml" --task "$C/selfref.yaml"
write_config "$C/selfref_cfg.yaml" "name: t
tasks: &x [gsm8k, *x]
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m}"
expect_error "a config with a YAML alias inside its own anchor" "selfref_cfg.yaml:" "$TMP/o_selfref" \
  "$QEVAL" run "$C/selfref_cfg.yaml" --out "$TMP/o_selfref"
# An edited copy of a built-in task that does not load, asked for by its task: name: its error,
# not the built-in task's prompts (which would look like the edit's).
sed 's/^num_fewshot: 5$/num_fewshot: 3\nbogus_key: 1/' "$SRC/configs/tasks/gsm8k.yaml" > "$C/my_gsm8k.yaml"
grep -q '^bogus_key: 1$' "$C/my_gsm8k.yaml" || fail "fixture: my_gsm8k.yaml lacks its bad key"
write_config "$C/edited_task.yaml" "name: t
tasks: [my_gsm8k.yaml]
limit: 1
variants:
  - {name: a, backend: openai, base_url: \"$DEAD_URL\", model: m}"
expect_error "prompts of a broken task file by its task name" "edited_task.yaml: tasks[0]: " - \
  "$QEVAL" prompts "$C/edited_task.yaml" --task gsm8k
grep -q "my_gsm8k.yaml: unknown key 'bogus_key'" "$TMP/stderr" || fail "prompts of a broken task file by its task name: $(cat "$TMP/stderr")"

# A damaged data file: one error naming the file, and no prompt printed before it (the last
# subject's dev file is short, so every other subject would have been printed first).
SHORT=$TMP/data_short
cp -r "$DATA" "$SHORT"
head -n 4 "$DATA/mmlu/dev/world_religions_dev.csv" > "$SHORT/mmlu/dev/world_religions_dev.csv"
QEVAL_DATA=$SHORT expect_error "prompts with a short few-shot file" "world_religions_dev.csv: 4 docs" - \
  "$QEVAL" prompts "$C/good.yaml" --task mmlu --limit 1
[ -s "$TMP/stdout" ] && fail "prompts with a short few-shot file: printed $(wc -l < "$TMP/stdout") prompts before its error"
printf 'Wh\xffat?,w,x,y,z,C\n' > "$SHORT/mmlu/test/anatomy_test.csv"
QEVAL_DATA=$SHORT expect_error "prompts with invalid UTF-8 in a CSV" "anatomy_test.csv: record 1 (line 1): field 1 is not valid UTF-8" - \
  "$QEVAL" prompts "$C/good.yaml" --task mmlu_anatomy
echo '{"question": "Q?", "answer": "4"}' > "$SHORT/gsm8k/test.jsonl"
QEVAL_DATA=$SHORT expect_error "prompts with a GSM8K answer without ####" "test.jsonl:1: \"answer\" has no" - \
  "$QEVAL" prompts "$C/good.yaml" --task gsm8k

# Output that cannot be written (a full disk, a closed stdout) is an error, not exit 0 with a cut file.
expect_write_error() {  # NAME CMD...: stdout is /dev/full, then closed
  local name=$1 rc
  shift
  for how in full closed; do
    if [ "$how" = full ]; then "$@" > /dev/full 2> "$TMP/stderr"; else "$@" >&- 2> "$TMP/stderr"; fi
    rc=$?
    if [ "$rc" != 2 ] || ! grep -q '^qeval: error: stdout: not all output was written' "$TMP/stderr"; then
      fail "$name > $how stdout: exit code $rc, want 2 and a stdout error (stderr: $(cat "$TMP/stderr"))"
    else
      echo "ok: $name > $how stdout: $(grep '^qeval: error:' "$TMP/stderr")"
    fi
  done
}
if [ -w /dev/full ]; then
  expect_write_error "prompts" "$QEVAL" prompts "$C/good.yaml" --task gsm8k
  expect_write_error "bench --json" "$QEVAL" bench --model random:tiny --prompt-tokens 4 --gen-tokens 1 --json
  expect_write_error "bench" "$QEVAL" bench --model random:tiny --prompt-tokens 4 --gen-tokens 1
  if [ -n "${QEVAL_MODELS:-}" ] && [ -f "$QEVAL_MODELS/stories260K/stories260K.gguf" ]; then
    expect_write_error "generate" "$QEVAL" generate --model stories260K --prompt "Once" --max-tokens 4
  fi
fi

# --- a model name `qeval fetch` knows, given to generate (as a run config's model: may) ---------
if [ -n "${QEVAL_MODELS:-}" ] && [ -f "$QEVAL_MODELS/stories260K/stories260K.gguf" ]; then
  if out=$("$QEVAL" generate --model stories260K --prompt "Once" --max-tokens 4 2>&1) && [ -n "$out" ]; then
    echo "ok: generate --model stories260K: $out"
  else
    fail "generate --model stories260K: $out"
  fi
fi
QEVAL_MODELS=$TMP/empty expect_error "generate with a fetchable model not fetched" "qeval fetch stories260K" - \
  "$QEVAL" generate --model stories260K --prompt x

# --- a damaged HF config.json: one error naming the file and the field, before any work --------
HF=${QEVAL_MODELS:-}/stories260K-hf
if [ -n "${QEVAL_MODELS:-}" ] && [ -f "$HF/config.json" ]; then
  # hf_variant NAME SED-EXPR: a copy of stories260K-hf whose config.json is edited by SED-EXPR.
  hf_variant() {
    mkdir -p "$TMP/hf/$1"
    for f in model.safetensors tokenizer.json tokenizer_config.json generation_config.json; do
      ln -sf "$HF/$f" "$TMP/hf/$1/$f"
    done
    sed "$2" "$HF/config.json" > "$TMP/hf/$1/config.json"
  }
  hf_variant tie_str 's/"tie_word_embeddings": true/"tie_word_embeddings": "yes"/'
  expect_error "config.json with a string for a bool" \
    "$TMP/hf/tie_str/config.json: field tie_word_embeddings must be true or false, got \"yes\"" - \
    "$QEVAL" generate --model "$TMP/hf/tie_str" --prompt x
  hf_variant layers_4 's/"num_hidden_layers": 5/"num_hidden_layers": 4/'
  expect_error "config.json with fewer layers than the weights" \
    "tensor model.layers.4.input_layernorm.weight is in layer 4, beyond num_hidden_layers 4" - \
    "$QEVAL" generate --model "$TMP/hf/layers_4" --prompt x
  hf_variant maxpos_huge 's/"max_position_embeddings": 512/"max_position_embeddings": 4611686018427387904/'
  expect_error "config.json with a huge context" \
    "$TMP/hf/maxpos_huge/config.json: max_position_embeddings must be at most 2147483647" - \
    "$QEVAL" generate --model "$TMP/hf/maxpos_huge" --prompt x --max-tokens 100
  hf_variant dtype_null 's/"torch_dtype": "float32"/"torch_dtype": null/'
  if out=$("$QEVAL" generate --model "$TMP/hf/dtype_null" --prompt "Once upon" --max-tokens 3 2>&1) && [ -n "$out" ]; then
    echo "ok: config.json with torch_dtype null loads (null is absent, as in transformers): $out"
  else
    fail "config.json with torch_dtype null: $out"
  fi
fi

if [ "$FAILS" != 0 ]; then
  echo "$FAILS check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
