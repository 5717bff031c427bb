"""Step 3: serve the model with the best test score over HTTP.

    python -m pipeline.serve --data /data --port 8080 [--models '["linear","gbr"]' --scores '[0.3,0.4]']
    python -m pipeline.serve --data /data --port 8080 --model forest

With --models and --scores (the trainings' outputs, as the flow passes them) it serves the model with
the highest score among them; with --model, that model (the one a promote step promoted); without
either, the best of the metrics files under --data.

GET /healthz answers 200 with the chosen model; POST /predict takes JSON rows and answers with the
predictions:

    curl -s localhost:8080/predict -d '{"rows": [{"age": 0.04, "sex": 0.05, "bmi": 0.06, "bp": 0.02,
        "s1": -0.04, "s2": -0.03, "s3": -0.04, "s4": 0.0, "s5": 0.02, "s6": -0.02}]}'
    {"model": "gbr", "predictions": [237.35568496718219]}

A row is an object keyed by feature name or a list of the features in order. Models are loaded with
joblib, which unpickles them: serve only a data directory that your own pipeline wrote.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from pipeline.evaluate import chosen_model
from pipeline.layout import Layout, add_data_argument

MAX_BODY_BYTES = 1 << 20
SCORE = "r2"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    metrics: dict[str, Any]
    features: list[str]
    estimator: Any

    def predict(self, rows: list[Any]) -> list[float]:
        frame = pd.DataFrame([self._row(index, row) for index, row in enumerate(rows)], columns=self.features)
        return [float(value) for value in self.estimator.predict(frame)]

    def _row(self, index: int, row: Any) -> list[float]:
        if isinstance(row, dict):
            missing = [feature for feature in self.features if feature not in row]
            if missing:
                raise ValueError(f"row {index} lacks {', '.join(missing)}")
            values = [row[feature] for feature in self.features]
        elif isinstance(row, list):
            if len(row) != len(self.features):
                raise ValueError(f"row {index} has {len(row)} values, the model takes {len(self.features)}")
            values = row
        else:
            raise ValueError(f"row {index} is neither an object nor a list")
        try:
            return [float(value) for value in values]
        except (TypeError, ValueError):
            raise ValueError(f"row {index} holds a value that is not a number") from None


def best_model(layout: Layout, chosen: str | None = None) -> LoadedModel:
    """The trained model with the highest test R^2 (the metrics files say which), or `chosen`."""
    candidates: list[dict[str, Any]] = []
    for metrics_file in sorted(layout.models.glob("*.json")):
        metrics = json.loads(metrics_file.read_text())
        if layout.model_file(metrics_file.stem).is_file() and isinstance(metrics.get(SCORE), int | float):
            candidates.append({**metrics, "model": metrics_file.stem})
    if chosen is not None:
        candidates = [metrics for metrics in candidates if metrics["model"] == chosen]
        if not candidates:
            raise FileNotFoundError(f"model {chosen} is not in {layout.models}")
    if not candidates:
        raise FileNotFoundError(f"no trained model in {layout.models}: run `python -m pipeline.train` first")
    best = max(candidates, key=lambda metrics: metrics[SCORE])
    estimator = joblib.load(layout.model_file(best["model"]))
    features = [str(name) for name in getattr(estimator, "feature_names_in_", [])]
    if not features:
        raise ValueError(f"model {best['model']} does not record its feature names")
    return LoadedModel(name=best["model"], metrics=best, features=features, estimator=estimator)


class PredictionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: LoadedModel) -> None:
        super().__init__(address, PredictionHandler)
        self.model = model


class PredictionHandler(BaseHTTPRequestHandler):
    server: PredictionServer
    server_version = "dagflow-example-serve/0.1"

    def do_GET(self) -> None:
        model = self.server.model
        if self.path in ("/healthz", "/"):
            self._reply(
                HTTPStatus.OK,
                {"status": "ok", "model": model.name, "metrics": model.metrics, "features": model.features},
            )
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path: {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path: {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        try:
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except json.JSONDecodeError as error:
                raise ValueError(f"the body is not JSON: {error}") from None
            rows = body.get("rows") if isinstance(body, dict) else body
            if not isinstance(rows, list) or not rows:
                raise ValueError('send {"rows": [...]} or a JSON list of rows')
            predictions = self.server.model.predict(rows)
        except ValueError as error:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self._reply(HTTPStatus.OK, {"model": self.server.model.name, "predictions": predictions})

    def _reply(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.path != "/healthz":  # probes would drown the log
            super().log_message(format, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve", description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--models", type=json.loads, help="the trained models' names, a JSON list")
    parser.add_argument("--scores", type=json.loads, help="their scores, a JSON list in the same order")
    parser.add_argument("--model", help="serve this trained model, whatever its score")
    args = parser.parse_args(argv)
    if args.model is not None and args.models is not None:
        parser.error("--model names the model to serve: give it without --models and --scores")
    try:
        if args.model is not None:
            if not args.model:
                raise ValueError("--model is empty: name the model to serve")
            chosen = args.model
        else:
            chosen = chosen_model(args.models, args.scores) if args.models is not None else None
        model = best_model(Layout(Path(args.data)), chosen)
    except (FileNotFoundError, ValueError) as error:
        print(f"serve: {error}", file=sys.stderr)
        return 1
    server = PredictionServer((args.host, args.port), model)
    # Kubernetes stops a pod with SIGTERM: finish the requests in flight and leave.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    host, port = server.server_address[:2]
    print(
        f"serve: model {model.name} ({SCORE}={model.metrics[SCORE]:.4f}) on http://{host!s}:{port}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
