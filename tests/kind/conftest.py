"""A kind cluster with real containers (tests/cluster/kind.sh): Docker, kind's node image built here,
the project's images loaded into its nodes and the operator installed by its chart.

In `make test` the group starts its own cluster, `dagflow-test` (DAGFLOW_KIND_CLUSTER names another),
and deletes it at the end unless it was there already or DAGFLOW_KEEP_CLUSTER is set. Where no Docker
engine answers and none can be installed and started (root with apt-get), the tests fail, saying how to
leave them out: `-m 'not kind'`. `make e2e-kind` runs them against its own deployment instead
(DAGFLOW_TEST_CLUSTER=external, DAGFLOW_TEST_OPERATOR=<namespace>/<release>).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chart.helm import CHART_DIR, helm
from tests.kube import REPO_ROOT, kubectl

KIND_SCRIPT = REPO_ROOT / "tests" / "cluster" / "kind.sh"
BUILD_IMAGE = REPO_ROOT / "images" / "build-image.sh"
BUILD_LOCAL = REPO_ROOT / "images" / "build-local.sh"
CLUSTER_NAME = os.environ.get("DAGFLOW_KIND_CLUSTER", "dagflow-test")
# The chart's own tags (its appVersion), as `helm install` without --set uses them.
IMAGES = {
    "operator": "dagflow/operator:0.1.0",
    "launcher": "dagflow/launcher:0.1.0",
    "examples": os.environ.get("EXAMPLES_IMAGE", "dagflow/examples:0.1.0"),
}
OPERATOR_NAMESPACE = "dagflow-kind-system"
RELEASE = "dagflow-kind"


@dataclass(frozen=True)
class KindCluster:
    name: str
    kubeconfig: Path
    # The host folder every node mounts at /var/local/dagflow-shared.
    shared: Path
    operator_namespace: str
    release: str


def kind_script(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KIND_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "KIND_CLUSTER": CLUSTER_NAME},
    )


def _run(*command: str, timeout: float = 3600) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"


def _shared_dir() -> Path:
    return Path(kind_script("shared-dir").stdout.strip())


@pytest.fixture(scope="package")
def kind_cluster() -> Iterator[KindCluster]:
    previous = os.environ.get("KUBECONFIG")
    if os.environ.get("DAGFLOW_TEST_CLUSTER") == "external":
        # make e2e-kind: its cluster and its release, as they are.
        deployed = os.environ.get("DAGFLOW_TEST_OPERATOR", "dagflow-system/dagflow")
        namespace, _, release = deployed.partition("/")
        kubeconfig = Path(previous or Path.home() / ".kube" / "config")
        yield KindCluster(CLUSTER_NAME, kubeconfig, _shared_dir(), namespace, release)
        return

    if kind_script("can-run").returncode != 0:
        pytest.fail(
            "No Docker engine answers here, and none can be installed and started (that needs root and "
            "apt-get): the kind tests cannot run. To run the suite without them: "
            "make test PYTEST_ARGS=\"-m 'not kind'\"",
            pytrace=False,
        )
    existed = kind_script("exists").returncode == 0
    up = kind_script("up")
    if up.returncode != 0:
        pytest.fail(f"The kind cluster {CLUSTER_NAME} did not start:\n{up.stderr[-6000:]}", pytrace=False)
    kubeconfig = Path(up.stdout.strip().splitlines()[-1].removeprefix("export KUBECONFIG="))
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        # The images from this checkout, built with Docker where it can, else with buildah and loaded
        # into Docker; then into every node.
        for name, ref in IMAGES.items():
            _run("bash", str(BUILD_IMAGE), name, ref)
        loaded = kind_script("load", *IMAGES.values())
        assert loaded.returncode == 0, f"kind.sh load failed:\n{loaded.stderr}"
        image_id = subprocess.run(
            ["bash", str(BUILD_LOCAL), "id", "operator"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "OPERATOR_IMAGE": IMAGES["operator"]},
        ).stdout.strip()
        kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        kubectl(
            "label",
            "namespace",
            OPERATOR_NAMESPACE,
            "--overwrite",
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        )
        helm(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART_DIR),
            "--namespace",
            OPERATOR_NAMESPACE,
            # A release left by an earlier run rolls its pod when the image was rebuilt under its tag.
            "--set-string",
            f"podAnnotations.dagflow\\.dev/image-id={image_id}",
            "--wait",
            "--timeout",
            "5m",
            timeout=400,
        )
        yield KindCluster(CLUSTER_NAME, kubeconfig, _shared_dir(), OPERATOR_NAMESPACE, RELEASE)
    finally:
        if not existed and not os.environ.get("DAGFLOW_KEEP_CLUSTER"):
            kind_script("down")
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


@pytest.fixture
def kind_namespace(kind_cluster: KindCluster) -> Iterator[str]:
    """A fresh namespace on the kind cluster, deleted afterwards without waiting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    kubectl(
        "wait",
        "--for=jsonpath={.metadata.name}=default",
        "serviceaccount/default",
        "--timeout=30s",
        namespace=name,
        check=False,
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
