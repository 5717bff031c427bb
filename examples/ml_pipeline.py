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
CLAIM = "ml-pipeline-data"
DATA = [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}]
MOUNT = [{"name": "data", "mountPath": "/data"}]

claim = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": CLAIM},
    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
}

with Flow(
    "ml-pipeline",
    failure_policy="FailFast",
    pod_defaults={"labels": {"app.kubernetes.io/part-of": "ml-pipeline"}},
    objects=[claim],
) as flow:
    process = Work(
        "process",
        image=IMAGE,
        command=["python", "-m", "pipeline.process"],
        args=["--data", "/data"],
        volume_mounts=MOUNT,
        resources={"requests": {"cpu": "250m", "memory": "256Mi"}},
        volumes=DATA,
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
        command=["python", "-m", "pipeline.train", "--model", "$(matrix.model)", "--data", "/data"],
        volume_mounts=MOUNT,
        resources={"requests": {"cpu": "500m", "memory": "512Mi"}},
        volumes=DATA,
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
        command=["python", "-m", "pipeline.serve"],
        args=[
            *("--data", "/data", "--port", "8080"),
            *("--models", train.outputs["model"], "--scores", train.outputs["score"]),
        ],
        volume_mounts=[{**MOUNT[0], "readOnly": True}],
        container={"readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}},
        resources={"requests": {"cpu": "250m", "memory": "256Mi"}},
        volumes=DATA,
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
