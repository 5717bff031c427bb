"""The Helm chart as tests use it: the pinned helm binary, rendering, installing."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.kube import REPO_ROOT, apply_crds

CHART_DIR = REPO_ROOT / "charts" / "dagflow-operator"
BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "build.sh"
NAMESPACED_VALUES: dict[str, Any] = {"watchNamespaces": ["team-a", "team-b"]}


@functools.cache
def helm_binary() -> Path:
    """The helm that tests/cluster/build.sh builds (v3, pinned in versions.env), built if missing."""
    bin_dir = Path(
        subprocess.run(["bash", str(BUILD_SCRIPT), "bin-dir"], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    binary = bin_dir / "helm"
    if not binary.exists():
        subprocess.run(["bash", str(BUILD_SCRIPT), "helm"], capture_output=True, text=True, check=True)
    return binary


def helm(
    *args: str, check: bool = True, timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run helm against $KUBECONFIG; raise with its output when `check` and it fails."""
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env=os.environ.copy(),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
        )
    return result


def values_args(values: dict[str, Any] | None, directory: Path) -> list[str]:
    """`--values FILE` for `values` (JSON is YAML), written into `directory`."""
    if not values:
        return []
    path = directory / "values.json"
    path.write_text(json.dumps(values))
    return ["--values", str(path)]


def render_text(
    values: dict[str, Any] | None = None,
    *,
    release: str = "dagflow",
    namespace: str = "dagflow-system",
    extra: Iterable[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart."""
    with tempfile.TemporaryDirectory() as directory:
        return helm(
            "template",
            release,
            str(CHART_DIR),
            "--namespace",
            namespace,
            *values_args(values, Path(directory)),
            *extra,
            check=check,
        )


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The objects `helm template` makes of the chart (CRDs not included, as Helm installs them apart)."""
    text = render_text(values, **kwargs).stdout
    return [document for document in yaml.safe_load_all(text) if document]


def objects_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects_of(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's plain environment variables (those with a `value`)."""
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry}


def rbac_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of every Role and ClusterRole."""
    return [
        rule for item in objects if item["kind"] in ("Role", "ClusterRole") for rule in item.get("rules", [])
    ]


def install(
    release: str,
    namespace: str,
    values: dict[str, Any] | None = None,
    *extra: str,
    wait: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm install` of the chart into `namespace` of the cluster in $KUBECONFIG."""
    with tempfile.TemporaryDirectory() as directory:
        return helm(
            "install",
            release,
            str(CHART_DIR),
            "--namespace",
            namespace,
            *values_args(values, Path(directory)),
            *(["--wait", "--timeout", "3m"] if wait else []),
            *extra,
        )


def uninstall(release: str, namespace: str) -> subprocess.CompletedProcess[str]:
    return helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "3m", check=False)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def install_chart_crds() -> list[str]:
    """Apply the chart's crds/ (as Helm does on a first install), wait until Established; their names."""
    return apply_crds(CHART_DIR / "crds")
