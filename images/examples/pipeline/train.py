"""Step 2: fit one regression model on the training split and score it on the test split.

python -m pipeline.train --model linear|forest|gbr --data /data

On success its termination message is its outputs, a JSON object: {"model": "gbr", "score": 0.41}
(the score is the test R^2), which the flow hands to the serve step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from pipeline.layout import (
    TARGET,
    Layout,
    add_data_argument,
    add_termination_log_argument,
    write_atomically,
    write_json,
    write_termination_message,
)

MODELS: dict[str, Callable[[int], Any]] = {
    "linear": lambda seed: LinearRegression(),
    "forest": lambda seed: RandomForestRegressor(n_estimators=200, random_state=seed, n_jobs=1),
    "gbr": lambda seed: GradientBoostingRegressor(random_state=seed),
}


def read_split(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(path)
    return frame.drop(columns=[TARGET]), frame[TARGET]


def train(layout: Layout, model_name: str, seed: int = 42) -> dict[str, Any]:
    """Fit, score, and store the model and its metrics; return the metrics."""
    for path in (layout.train_csv, layout.test_csv):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `python -m pipeline.process` first")
    x_train, y_train = read_split(layout.train_csv)
    x_test, y_test = read_split(layout.test_csv)

    model = MODELS[model_name](seed)
    started = time.perf_counter()
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    predicted = model.predict(x_test)
    metrics: dict[str, Any] = {
        "model": model_name,
        "estimator": type(model).__name__,
        "r2": round(float(r2_score(y_test, predicted)), 6),
        "mae": round(float(mean_absolute_error(y_test, predicted)), 6),
        "rmse": round(float(mean_squared_error(y_test, predicted) ** 0.5), 6),
        "train_rows": len(x_train),
        "test_rows": len(x_test),
        "fit_seconds": round(seconds, 3),
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    # The model first: a metrics file always describes a model that is already complete.
    write_atomically(layout.model_file(model_name), lambda path: joblib.dump(model, path))
    write_json(layout.metrics_file(model_name), metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS), help="which model to train")
    add_data_argument(parser)
    add_termination_log_argument(parser)
    parser.add_argument("--seed", type=int, default=42, help="seed of the estimator")
    args = parser.parse_args(argv)
    try:
        metrics = train(Layout(args.data), args.model, args.seed)
    except FileNotFoundError as error:
        print(f"train: {error}", file=sys.stderr)
        write_termination_message(f"train {args.model}: {error}", args.termination_log)
        return 1
    scores = f"r2={metrics['r2']:.4f} mae={metrics['mae']:.2f} rmse={metrics['rmse']:.2f}"
    print(f"train {args.model}: {scores}", flush=True)
    outputs = {"model": args.model, "score": metrics["r2"]}
    write_termination_message(json.dumps(outputs, separators=(",", ":")), args.termination_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
