#!/usr/bin/env bash
# Runs every benchmark once, on a quiet machine, and prints the numbers the issues ask for.
# Every speed-up is a ratio against a reference measured in this same run (the scalar twin,
# the bandwidth and int8 peak (AMX, or AVX-512 VNNI) measured here, around each timed run: this kind of shared machine
# swings by 2x within seconds); llama.cpp's figures are the fixed external targets.
# Usage: bash bench/run_all.sh [build dir=build]   (after scripts/test.sh or a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
Q=$B/qeval
T=${QEVAL_BENCH_THREADS:-2}
line() { printf '\n== %s\n' "$*"; }

line "kernels: GEMV/GEMM per scheme and kernel level vs scalar twin, bandwidth and int8 peak (0.5B and 1.5B shapes)"
"$B/bench/bench_kernels" "$T" 4 both

line "attention: AMX-BF16 kernel (bf16 compute) vs its scalar twin, one layer and kv head of a 512-token prefill"
"$B/bench/bench_attention" 512

for shape in qwen2.5-0.5b r1-distill-qwen-1.5b; do
  for q in none int8-channel int8-block fp8-block; do
    line "engine $shape bf16 quantization=$q: batch 1 (prefill 512, decode 64), median of 3, read bandwidth probed between decode steps"
    "$Q" bench --model "random:$shape" --dtype bf16 --quantization "$q" --prompt-tokens 512 --gen-tokens 64 --batch 1 --threads "$T" --repeat 3 --reference --json
    if [ "$shape" = qwen2.5-0.5b ]; then
      line "engine $shape bf16 quantization=$q: batch 16 (prefill 64 each, decode 32)"
      "$Q" bench --model "random:$shape" --dtype bf16 --quantization "$q" --prompt-tokens 64 --gen-tokens 32 --batch 16 --threads "$T" --json
    fi
  done
done

for shape in qwen2.5-0.5b r1-distill-qwen-1.5b; do
  line "engine $shape: quantised variants vs bf16, interleaved in one process (ratios of runs seconds apart)"
  "$B/bench/bench_ratio" "$shape" 9 "$T" 32
done

line "engine qwen2.5-0.5b bf16 with the scalar reference kernels (QEVAL_KERNEL=ref), same run"
QEVAL_KERNEL=ref "$Q" bench --model random:qwen2.5-0.5b --dtype bf16 --prompt-tokens 32 --gen-tokens 4 --batch 1 --threads "$T" --json
QEVAL_KERNEL=ref "$Q" bench --model random:qwen2.5-0.5b --dtype bf16 --quantization int8-channel --prompt-tokens 32 --gen-tokens 4 --batch 1 --threads "$T" --json

line "harness: samples/s through run_eval against an instant loopback endpoint (goal >= 5000/s)"
"$B/bench/bench_run" mmlu_generative 180 64
"$B/bench/bench_run" gsm8k 10000 64
"$B/bench/bench_run" mmlu 60 64

line "converter: 1.07 GB of BF16 (32 x 4096x4096) to int8-block, int8-channel, fp8-block: GB/s, GB per CPU-second, peak RSS (writes to \$TMPDIR)"
"$B/tests/test_engine" "convert throughput and peak RSS" 2>&1 | grep -E -A1 "GB in|passed|failed"
