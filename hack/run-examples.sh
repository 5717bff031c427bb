#!/usr/bin/env bash
# Runs the steps of examples/ml-pipeline.yaml as plain local processes, in the order the flow runs
# them: process, the three trainings (in parallel, like on the cluster), then serve on a free port,
# asks it for one prediction and stops it. The data directory is temporary unless DATA is set.
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

say "train-linear, train-forest, train-gbr"
pids=()
for model in linear forest gbr; do
  "$python" -m pipeline.train --model "$model" --data "$data" &
  pids+=("$!")
done
for pid in "${pids[@]}"; do wait "$pid"; done

say "serve"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$python" -m pipeline.serve --data "$data" --host 127.0.0.1 --port "$port" &
serve_pid=$!

"$python" "$here/predict.py" "http://127.0.0.1:$port" --wait 10
