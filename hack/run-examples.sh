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

"$python" - "$port" <<'PY'
import json
import sys
import time
import urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(100):
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
            health = json.load(response)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("serve did not answer /healthz")
print(f"GET /healthz -> model {health['model']}, r2 {health['metrics']['r2']:.4f}")
row = dict(zip(health["features"], [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]))
request = urllib.request.Request(
    f"{base}/predict", data=json.dumps({"rows": [row]}).encode(), headers={"Content-Type": "application/json"}
)
with urllib.request.urlopen(request, timeout=5) as response:
    answer = json.load(response)
print(f"POST /predict {json.dumps({'rows': [row]})}")
print(f"  -> {json.dumps(answer)}")
PY
