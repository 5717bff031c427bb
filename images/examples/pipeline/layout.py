"""Where the steps keep their files inside the shared data directory, and small file helpers."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_ENV = "PIPELINE_DATA"
TARGET = "target"
# Kubernetes mounts this file into every container and shows its content in the pod's status.
TERMINATION_LOG = Path("/dev/termination-log")


@dataclass(frozen=True)
class Layout:
    """The files of one pipeline under its data directory."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def train_csv(self) -> Path:
        return self.dataset / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.dataset / "test.csv"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_file(self, name: str) -> Path:
        return self.models / f"{name}.joblib"

    def metrics_file(self, name: str) -> Path:
        return self.models / f"{name}.json"

    def trained_models(self) -> list[str]:
        """The names of the models whose training finished (it writes the metrics file last)."""
        return sorted(
            path.stem for path in self.models.glob("*.json") if self.model_file(path.stem).is_file()
        )

    @property
    def promoted(self) -> Path:
        return self.root / "promoted.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def report_file(self, run: int) -> Path:
        return self.reports / f"run-{run}.json"


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get(DATA_ENV, "/data")),
        help=f"the shared data directory (default: ${DATA_ENV}, else /data)",
    )


def add_termination_log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=TERMINATION_LOG,
        help=f"file for the one-line summary, if it exists (default: {TERMINATION_LOG}, "
        "the container's terminationMessagePath)",
    )


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file and rename it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: dict[str, Any]) -> None:
    write_atomically(path, lambda target: target.write_text(json.dumps(document, indent=2) + "\n"))


def write_termination_message(message: str, path: Path = TERMINATION_LOG) -> bool:
    """Leave a one-line summary where Kubernetes picks it up; skipped where no such file exists."""
    if not path.is_file() or not os.access(path, os.W_OK):
        return False
    path.write_text(message + "\n")
    return True
