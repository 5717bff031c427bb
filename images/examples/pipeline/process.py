"""Step 1: load scikit-learn's diabetes data set and write a train/test split as CSV.

python -m pipeline.process --data /data
"""

from __future__ import annotations

import argparse
import sys

from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

from pipeline.layout import (
    Layout,
    add_data_argument,
    add_termination_log_argument,
    write_atomically,
    write_termination_message,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.process", description=__doc__.splitlines()[0])
    add_data_argument(parser)
    add_termination_log_argument(parser)
    parser.add_argument("--test-size", type=float, default=0.2, help="share of rows held out for testing")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split")
    args = parser.parse_args(argv)
    layout = Layout(args.data)

    # The data set ships inside scikit-learn: nothing is downloaded.
    frame = load_diabetes(as_frame=True).frame
    train, test = train_test_split(frame, test_size=args.test_size, random_state=args.seed)
    write_atomically(layout.train_csv, lambda path: train.to_csv(path, index=False))
    write_atomically(layout.test_csv, lambda path: test.to_csv(path, index=False))

    summary = f"process: {len(train)} training rows, {len(test)} test rows, {frame.shape[1] - 1} features"
    print(f"{summary} -> {layout.dataset}", flush=True)
    write_termination_message(summary, args.termination_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
