"""The generated CRD on a real API server: what `kubectl apply` accepts, refuses and shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dagflow.api.models import DAGFlowStatus
from dagflow.rules.validation import validate_flow
from tests.kube import REPO_ROOT, apply, apply_crds, get_json, kubectl, table_row, wait_for

pytestmark = pytest.mark.cluster

CRD_NAME = "dagflows.dagflow.dev"


@pytest.fixture(scope="module", autouse=True)
def dagflow_crd(cluster: Any) -> Iterator[None]:
    """The CRD from crds/, installed the way users install it, and Established."""
    apply_crds(REPO_ROOT / "crds")
    yield


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "container": {"image": "example/ml:1.0"}, **fields}
    if depends_on:
        body["dependsOn"] = list(depends_on)
    return body


def flow(name: str, *works: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": name},
        "spec": {"works": list(works), **spec},
    }


CLASSIC = flow(
    "ml-pipeline",
    work("process", container={"image": "example/ml:1.0", "command": ["python", "-m", "pipeline.process"]}),
    work("train-a", "process", gpu=1, retries=2, timeoutSeconds=3600),
    work("train-b", "process", gpu=1, labels={"pod-duration": "1s"}, annotations={"note": "x"}),
    work(
        "serve",
        "train-a",
        "train-b",
        when="AllSucceeded",
        serve={"port": 8080},
        container={
            "image": "example/ml:1.0",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        },
        volumes=[{"name": "models", "emptyDir": {"sizeLimit": "1Gi"}}],
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    ),
    work("smoke-test", "serve", when="AllDone"),
    failurePolicy="Continue",
    parallelism=2,
    podDefaults={
        "serviceAccountName": "trainer",
        "nodeSelector": {"pool": "ml"},
        "imagePullSecrets": [{"name": "registry"}],
        "env": [{"name": "MODE", "value": "prod"}],
    },
)


def test_a_valid_flow_is_accepted_and_defaulted(namespace: str) -> None:
    assert validate_flow(CLASSIC["spec"]) == []
    apply(CLASSIC, namespace=namespace)
    stored = get_json("dagflow", "ml-pipeline", namespace=namespace)
    assert stored["spec"]["failurePolicy"] == "Continue"
    works = {item["name"]: item for item in stored["spec"]["works"]}
    assert works["process"]["when"] == "AllSucceeded" and works["process"]["retries"] == 0
    assert works["serve"]["serve"] == {"port": 8080, "replicas": 1}
    # Embedded Kubernetes types keep their fields, and upstream list-map defaults apply.
    serve_container = works["serve"]["container"]
    assert serve_container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert serve_container["readinessProbe"]["httpGet"]["port"] == 8080
    assert works["serve"]["volumes"][0]["emptyDir"]["sizeLimit"] == "1Gi"


REFUSED = [
    pytest.param(
        [work("a"), work("a")],
        ["spec.works[1]", "Duplicate value", '"name":"a"'],
        id="duplicate-name",
    ),
    pytest.param(
        [work("a", "a")], ["spec.works[0].dependsOn", 'work "a" depends on itself'], id="self-dependency"
    ),
    pytest.param([work("Bad_Name")], ["spec.works[0].name", "Bad_Name", "should match"], id="bad-name"),
    pytest.param([work("x" * 64)], ["spec.works[0].name", "may not be more than 63"], id="long-name"),
    pytest.param(
        [work("a", when="Sometimes")],
        ["spec.works[0].when", 'Unsupported value: "Sometimes"', '"AllSucceeded"'],
        id="bad-when",
    ),
    pytest.param(
        [work("a", retries=-1)],
        ["spec.works[0].retries", "greater than or equal to 0"],
        id="negative-retries",
    ),
    pytest.param([work("a", gpu=-1)], ["spec.works[0].gpu", "greater than or equal to 0"], id="negative-gpu"),
    pytest.param(
        [work("a", timeoutSeconds=0)],
        ["spec.works[0].timeoutSeconds", "greater than or equal to 1"],
        id="timeout",
    ),
    pytest.param(
        [work("a"), work("b", "a", "a")], ["spec.works[1].dependsOn[1]", "Duplicate value"], id="dup-dep"
    ),
    pytest.param(
        [work("s", serve={"port": 80}, retries=3)], ['work "s" is a serve work'], id="serve-with-retries"
    ),
    pytest.param([work("s", serve={"port": 0})], ["spec.works[0].serve.port"], id="bad-port"),
    pytest.param([work("a", dependOn=["b"])], ['unknown field "spec.works[0].dependOn"'], id="unknown-field"),
    pytest.param(
        [{"name": "a", "container": {"name": "c"}}],
        ["spec.works[0].container.image", "Required"],
        id="no-image",
    ),
    pytest.param(
        [work("a", container={"image": "x", "resources": {"limits": {"cpu": "1 core"}}})],
        ["spec.works[0].container.resources.limits.cpu"],
        id="bad-quantity",
    ),
]


@pytest.mark.parametrize(("works", "expected"), REFUSED)
def test_invalid_flows_are_refused_naming_the_field(
    namespace: str, works: list[Any], expected: list[str]
) -> None:
    manifest = flow("bad", *works)
    result = apply(manifest, namespace=namespace, check=False)
    assert result.returncode != 0, f"accepted: {works}"
    for text in expected:
        assert text in result.stderr, result.stderr
    # The offline validator refuses the same flows.
    assert validate_flow(manifest["spec"]), works


def big_flow(name: str, size: int = 2000) -> dict[str, Any]:
    """A chain, a fan-out and a fan-in: the last work waits for all the fan-out works."""
    works = [work("w-0000")]
    works += [work(f"w-{index:04d}", "w-0000") for index in range(1, size - 1)]
    works.append(work("last", *(f"w-{index:04d}" for index in range(1, size - 1))))
    return flow(name, *works)


def test_a_flow_of_two_thousand_works_is_accepted(namespace: str) -> None:
    manifest = big_flow("big")
    assert len(manifest["spec"]["works"]) == 2000
    kubectl("apply", "--server-side", "-f", "-", namespace=namespace, input=yaml.safe_dump(manifest))
    stored = get_json("dagflow", "big", namespace=namespace)
    assert len(stored["spec"]["works"]) == 2000
    assert len(stored["spec"]["works"][-1]["dependsOn"]) == 1998


def test_status_subresource_and_printer_columns(namespace: str) -> None:
    apply(flow("columns", work("a"), work("s", "a", serve={"port": 8080})), namespace=namespace)
    status = DAGFlowStatus.model_validate(
        {
            "phase": "Serving",
            "progress": "2/2",
            "observedGeneration": 1,
            "run": 1,
            "startedAt": "2025-01-02T03:04:05Z",
            "endpoint": f"http://columns-s.{namespace}.svc:8080",
            "works": [
                {"name": "a", "phase": "Succeeded", "job": "columns-1-a", "attempts": 1},
                {"name": "s", "phase": "Serving", "job": "columns-s", "endpoint": "http://columns-s:8080"},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Serving",
                    "message": "",
                    "lastTransitionTime": "2025-01-02T03:04:05Z",
                    "observedGeneration": 1,
                }
            ],
        }
    )
    kubectl(
        "patch", "dagflow", "columns", "--subresource=status", "--type=merge",
        "-p", yaml.safe_dump({"status": status.to_dict()}), namespace=namespace,
    )  # fmt: skip
    table = kubectl("get", "dagflows", namespace=namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "PROGRESS", "RUN", "STARTED", "SCHEDULE", "ENDPOINT", "AGE"]
    row = table_row("\n".join(table), "columns")
    assert [row["NAME"], row["PHASE"], row["PROGRESS"], row["RUN"]] == ["columns", "Serving", "2/2", "1"]
    assert row["SCHEDULE"] == ""
    assert row["ENDPOINT"] == f"http://columns-s.{namespace}.svc:8080"
    for short_name in ("dag", "dagf"):
        assert "columns" in kubectl("get", short_name, namespace=namespace).stdout
    stored = get_json("dagflow", "columns", namespace=namespace)
    assert DAGFlowStatus.model_validate(stored["status"]) == status


def test_kubectl_explain_documents_works_and_containers() -> None:
    def explain(field: str) -> str:
        return kubectl("explain", field).stdout

    works = wait_for(lambda: explain("dagflow.spec.works"), timeout=60, what="the CRD's OpenAPI")
    assert "dependsOn" in works and "DNS-1123 label" in works
    container = explain("dagflow.spec.works.container")
    assert "The container to run" in container
    assert "image" in container and "readinessProbe" in container
    assert "Container image name" in container
