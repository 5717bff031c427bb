#!/usr/bin/env bash
# Runs the steps of examples/ml-pipeline.yaml as plain local processes, in the order the flow runs
# them: process, the three instances of the training matrix (in parallel, like on the cluster), each
# leaving its outputs in a termination log, then serve on a free port, given the trainings' outputs as
# lists as the flow gives them ($(works.train.outputs.model) and .score), asks it for one prediction
# and stops it. The data directory is temporary unless DATA is set.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
export PYTHONPATH="$repo/images/examples${PYTHONPATH:+:$PYTHONPATH}"

if [[ -n "${DATA:-}" ]]; then
  data="$DATA"
  mkdir -p "$data"
else
  data="$(mktemp -d "${TMPDIR:-/tmp}/dagflow-examples.XXXXXX")"
fi
serve_pid=""
cleanup() {
  if [[ -n "$serve_pid" ]]; then kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  if [[ -z "${DATA:-}" ]]; then rm -rf "$data"; fi
}
trap cleanup EXIT

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "process (data directory: $data)"
"$python" -m pipeline.process --data "$data"

say "train: the matrix model=[linear, forest, gbr]"
outputs="$(mktemp -d "${TMPDIR:-/tmp}/dagflow-outputs.XXXXXX")"
trap 'rm -rf "$outputs"; cleanup' EXIT
models=(linear forest gbr)
pids=()
for index in "${!models[@]}"; do
  touch "$outputs/$index"
  "$python" -m pipeline.train --model "${models[$index]}" --data "$data" --termination-log "$outputs/$index" &
  pids+=("$!")
done
for pid in "${pids[@]}"; do wait "$pid"; done
# The outputs of the instances, as lists in index order: what the flow gives the serve step.
read -r model_list score_list < <("$python" - "$outputs" "${#models[@]}" <<'PY'
import json, sys
from pathlib import Path
reported = [json.loads(Path(sys.argv[1], str(index)).read_text()) for index in range(int(sys.argv[2]))]
print(json.dumps([entry["model"] for entry in reported], separators=(",", ":")),
      json.dumps([entry["score"] for entry in reported], separators=(",", ":")))
PY
)
echo "outputs: model=$model_list score=$score_list"

say "serve"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$python" -m pipeline.serve --data "$data" --host 127.0.0.1 --port "$port" \
  --models "$model_list" --scores "$score_list" &
serve_pid=$!

"$python" "$here/predict.py" "http://127.0.0.1:$port" --wait 10
