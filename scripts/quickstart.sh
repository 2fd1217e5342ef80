#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, fetch the datasets and the
# stories260K model (from $QEVAL_DATA / $QEVAL_MODELS or --mirror trees when given, else from
# upstream), then run configs/quickstart.yaml and print where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target qeval
if [ -n "${QEVAL_DATA:-}" ]; then
  echo "quickstart: datasets from \$QEVAL_DATA=$QEVAL_DATA"
else
  ./build/qeval fetch gsm8k mmlu
fi
if [ -n "${QEVAL_MODELS:-}" ]; then
  echo "quickstart: models from \$QEVAL_MODELS=$QEVAL_MODELS"
else
  ./build/qeval fetch stories260K
fi
./build/qeval run configs/quickstart.yaml --overwrite "$@"
echo "quickstart: report at reports/quickstart/report.md"
