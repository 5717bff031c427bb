"""Ask a served model of the example pipeline for one prediction, the way a user would.

    python hack/predict.py http://HOST:PORT [--wait SECONDS]

Waits (up to --wait seconds) until GET /healthz answers, prints the model it serves, then POSTs one
row of features to /predict and prints the answer. Exits non-zero when no prediction came back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from typing import Any

# One row of the diabetes data set's features (already scaled, as the data set ships them).
SAMPLE = [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]


def get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_for_health(base: str, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return get_json(f"{base}/healthz", timeout=2)
        except OSError as error:
            if time.monotonic() >= deadline:
                raise SystemExit(f"{base}/healthz did not answer in {seconds:.0f} s: {error}") from error
            time.sleep(0.2)


def predict(base: str, rows: list[dict[str, float]]) -> Any:
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps({"rows": rows}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the model's address, e.g. http://10.96.12.34:8080")
    parser.add_argument("--wait", type=float, default=10, help="seconds to wait for /healthz")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    health = wait_for_health(base, args.wait)
    print(f"GET {base}/healthz -> model {health['model']}, r2 {health['metrics']['r2']:.4f}")
    row = dict(zip(health["features"], SAMPLE, strict=True))
    answer = predict(base, [row])
    print(f"POST {base}/predict {json.dumps({'rows': [row]})}")
    print(f"  -> {json.dumps(answer)}")
    return 0 if answer.get("predictions") else 1


if __name__ == "__main__":
    sys.exit(main())
