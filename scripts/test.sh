#!/usr/bin/env bash
# Installs what is missing, builds qeval and runs every test. Integration tests use
# $QEVAL_DATA (datasets tree) and $QEVAL_MODELS (models tree) when set, and skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DQEVAL_BUILD_TESTS=ON >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" "$@"

# Loader fuzz targets (libFuzzer + ASan/UBSan, clang), each run for a bounded time.
if [ -z "${QEVAL_SKIP_FUZZ:-}" ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DQEVAL_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j"$jobs" --target fuzz_safetensors fuzz_gguf
  ctest --test-dir build-fuzz -L fuzz --output-on-failure
fi
