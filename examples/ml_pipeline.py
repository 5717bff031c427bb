"""examples/ml-pipeline.yaml, written with the Python SDK: `python examples/ml_pipeline.py` prints the
same objects (a test compares them, document by document); `--apply NAMESPACE` applies them and
waits until the flow serves or fails.

    process --> train (a matrix: model = linear, forest, gbr) --> serve (the best score)
"""

from __future__ import annotations

import argparse
import sys

from dagflow.sdk import Flow, Serve, Work

IMAGE = "dagflow/examples:0.1.0"
# Every work finds the run's workspace here.
DATA = "/workspace"

with Flow(
    "ml-pipeline",
    failure_policy="FailFast",
    pod_defaults={"labels": {"app.kubernetes.io/part-of": "ml-pipeline"}},
    workspace={"size": "1Gi", "accessModes": ["ReadWriteMany"]},
) as flow:
    process = Work(
        "process",
        image=IMAGE,
        command=["python", "-m", "pipeline.process"],
        args=["--data", DATA],
        resources={"requests": {"cpu": "250m", "memory": "256Mi"}},
        annotations={"sim.dagflow.dev/duration": "3s"},
    )
    train = Work(
        "train",
        image=IMAGE,
        matrix={"model": ["linear", "forest", "gbr"]},
        gpu=1,
        retries=1,
        timeout_seconds=1800,
        outputs={"model": "the model the instance trained", "score": "its R^2 on the test split"},
        command=["python", "-m", "pipeline.train", "--model", "$(matrix.model)", "--data", DATA],
        resources={"requests": {"cpu": "500m", "memory": "512Mi"}},
        annotations={
            "sim.dagflow.dev/duration": "6s",
            "sim.dagflow.dev/termination-message": '{"model": "gbr", "score": 0.45}',
        },
    )
    serve = Work(
        "serve",
        image=IMAGE,
        when="AllSucceeded",
        serve=Serve(port=8080, replicas=1),
        workspace={"readOnly": True},
        command=["python", "-m", "pipeline.serve"],
        args=[
            *("--data", DATA, "--port", "8080"),
            *("--models", train.outputs["model"], "--scores", train.outputs["score"]),
        ],
        container={"readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}},
        resources={"requests": {"cpu": "250m", "memory": "256Mi"}},
    )
    process >> train >> serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apply", metavar="NAMESPACE", help="apply to the cluster of $KUBECONFIG and wait")
    args = parser.parse_args(argv)
    if args.apply is None:
        print(flow.to_yaml(), end="")
        return 0
    flow.apply(namespace=args.apply)
    final = flow.wait()
    print(f"{flow.name}: {final['phase']} {final.get('message') or ''}".rstrip())
    return 0 if final["phase"] in ("Succeeded", "Serving") else 1


if __name__ == "__main__":
    sys.exit(main())
