"""`dagflow validate`: every problem with file, flow and path; exit code 1 when there is any."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from dagflow.client import cli as cli_module
from dagflow.client.cli import app

runner = CliRunner()

GOOD = """\
apiVersion: dagflow.dev/v1alpha1
kind: DAGFlow
metadata: {name: ml-pipeline}
spec:
  works:
  - name: process
    container: {image: example/ml:1.0}
  - name: serve
    dependsOn: [process]
    serve: {port: 8080}
    container: {image: example/ml:1.0}
"""

BAD = """\
apiVersion: dagflow.dev/v1alpha1
kind: DAGFlow
metadata: {name: broken}
spec:
  works:
  - {name: a, dependsOn: [b], container: {image: x}}
  - {name: b, dependsOn: [a], retries: -1, container: {image: x}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_files_exit_0_with_an_ok_line(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "b.yaml", GOOD.replace("ml-pipeline", "other") + "---\n" + GOOD)
    result = runner.invoke(app, ["validate", str(first), str(second)])
    assert result.exit_code == 0, result.output
    assert "OK: 3 DAGFlows in 2 files, no problems found." in result.output


def test_problems_are_listed_with_file_flow_and_path(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", BAD)
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert (
        f"{bad}: DAGFlow broken: spec.works[0].dependsOn[0]: work 'a' is part of a dependency cycle: "
        in lines[0]
    )
    assert "a -> b -> a" in lines[0]
    assert lines[1] == (
        f"{bad}: DAGFlow broken: spec.works[1].retries: work 'b': Input should be greater than or equal "
        "to 0 (got -1)"
    )
    assert lines[-1] == "Found 2 problems in 1 file."
    assert "skipped ConfigMap settings (not a DAGFlow)" in result.stderr


def test_stdin_and_kind_list(tmp_path: Path) -> None:
    listed = "apiVersion: v1\nkind: List\nitems:\n- " + GOOD.replace("\n", "\n  ").rstrip() + "\n"
    result = runner.invoke(app, ["validate", "-"], input=listed)
    assert result.exit_code == 0, result.output
    assert "OK: 1 DAGFlow in 1 file" in result.output


def test_unreadable_and_malformed_files_are_problems(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", "works: [a, b\n")
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.yaml"), str(broken)])
    assert result.exit_code == 1
    assert "missing.yaml: file: -: cannot read" in result.stdout
    assert "broken.yaml: file: -: not valid YAML" in result.stdout


def test_other_versions_of_the_group_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "v2.yaml", GOOD.replace("v1alpha1", "v2"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "apiVersion: must be dagflow.dev/v1alpha1, got 'dagflow.dev/v2'" in result.stdout


def test_a_file_without_flows_is_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0
    assert "No DAGFlow found in 1 file." in result.stderr


def test_the_app_has_subcommands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "validate" in result.output


# -- offline parts of the cluster commands --------------------------------------------------------------


def test_graph_of_a_file_as_text_mermaid_and_dot(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(GOOD)
    text = runner.invoke(app, ["graph", str(path)])
    assert text.exit_code == 0 and text.output == "process · job\nserve · serve  <- process\n"
    mermaid = runner.invoke(app, ["graph", str(path), "--format", "mermaid"])
    assert mermaid.output.splitlines() == [
        "flowchart LR",
        '  process["process · job"]',
        '  serve["serve · serve"]',
        "  process --> serve",
    ]
    dot = runner.invoke(app, ["graph", str(path), "-o", "dot"])
    assert '"process" -> "serve";' in dot.output and dot.output.startswith('digraph "ml-pipeline" {')
    unknown = runner.invoke(app, ["graph", str(path), "-o", "svg"])
    assert unknown.exit_code == 1 and "use one of text, mermaid, dot" in unknown.output


def test_submit_refuses_an_invalid_file_before_touching_any_cluster(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD)
    result = runner.invoke(app, ["submit", str(path), "--kubeconfig", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "is not valid: nothing applied" in result.output
    assert "dependency cycle" in result.output


def test_cluster_commands_say_when_there_is_no_cluster(tmp_path: Path) -> None:
    result = runner.invoke(app, ["list", "--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "kubeconfig" in result.output


# -- tables and -o, on a cluster that exists only here -------------------------------------------

LONG_ENDPOINT = "http://ml-pipeline-serve-a-rather-long-service-name.team-with-a-long-namespace.svc:8080"
LONG_MESSAGE = "BackoffLimitExceeded: Job has reached the specified backoff limit after 3 attempts"


def listed_flow(name: str, namespace: str = "team-with-a-long-namespace") -> dict[str, Any]:
    return {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T11:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "works": [{"name": "train", "container": {"image": "x"}}]},
        "status": {
            "phase": "Serving",
            "progress": "3/3",
            "run": 12,
            "endpoint": LONG_ENDPOINT,
            "works": [
                {
                    "name": "train-a-model-with-a-long-name",
                    "phase": "Failed",
                    "job": f"{name}-12-train-a-model-with-a-long-name",
                    "attempts": 3,
                    "startedAt": "2026-01-01T11:00:00Z",
                    "message": LONG_MESSAGE,
                }
            ],
            "runs": [
                {"number": 12, "trigger": "Schedule", "phase": "Serving", "startedAt": "2026-01-01T11:00:00Z"}
            ],
        },
    }


class FakeFlowClient:
    """The part of FlowClient that list and get use, with flows that exist nowhere."""

    flows: ClassVar[list[dict[str, Any]]] = [
        listed_flow("ml-pipeline-with-a-name-long-enough-to-be-cut"),
        listed_flow("b", "default"),
    ]

    def __init__(self, target: Any) -> None:
        self.namespace = target.namespace or "default"

    def list_flows(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        return [
            flow for flow in self.flows if all_namespaces or flow["metadata"]["namespace"] == self.namespace
        ]

    def get(self, name: str) -> dict[str, Any]:
        return next(flow for flow in self.flows if flow["metadata"]["name"] == name)

    def events(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_module, "FlowClient", FakeFlowClient)


def test_piped_tables_print_every_value_whole(fake_cluster: None) -> None:
    """`dagflow list -A | grep ...` sees the whole endpoint, as with kubectl: no ellipsis, no
    wrapping, one line per flow, columns lined up."""
    result = runner.invoke(app, ["list", "-A"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output
    assert len(lines) == 3
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "PROGRESS", "RUN", "SCHEDULE", "ENDPOINT"]
    row = lines[1]
    assert "ml-pipeline-with-a-name-long-enough-to-be-cut" in row and row.endswith(LONG_ENDPOINT)
    assert lines[2].index("http://") == row.index("http://"), "the columns are not lined up"

    shown = runner.invoke(app, ["get", "ml-pipeline-with-a-name-long-enough-to-be-cut", "-n", "x"])
    assert shown.exit_code == 0, shown.output
    assert "…" not in shown.output
    work_line = next(line for line in shown.output.splitlines() if line.startswith("train-a-model"))
    assert work_line.split()[0] == "train-a-model-with-a-long-name"
    assert work_line.endswith(LONG_MESSAGE)


def test_list_and_get_write_json_yaml_wide_and_names_as_kubectl_does(fake_cluster: None) -> None:
    listed = runner.invoke(app, ["list", "-A", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    as_json = json.loads(listed.output)
    assert as_json["kind"] == "List" and [item["metadata"]["name"] for item in as_json["items"]] == [
        "ml-pipeline-with-a-name-long-enough-to-be-cut",
        "b",
    ]
    as_yaml = yaml.safe_load(runner.invoke(app, ["list", "-o", "yaml"]).output)
    assert [item["metadata"]["name"] for item in as_yaml["items"]] == ["b"]
    assert runner.invoke(app, ["list", "-o", "name"]).output == "dagflow.dagflow.dev/b\n"

    wide = runner.invoke(app, ["list", "-A", "-o", "wide"]).output.splitlines()
    assert wide[0].split()[-3:] == ["SUSPENDED", "AGE", "MESSAGE"]

    got = runner.invoke(app, ["get", "b", "-o", "json"])
    assert json.loads(got.output) == FakeFlowClient.flows[1]
    assert yaml.safe_load(runner.invoke(app, ["get", "b", "-o", "yaml"]).output) == FakeFlowClient.flows[1]
    got_wide = runner.invoke(app, ["get", "b", "-o", "wide"]).output
    assert "b-12-train-a-model-with-a-long-name" in got_wide

    refused = runner.invoke(app, ["list", "-o", "table"])
    assert refused.exit_code == 1 and "wide, json, yaml, name" in refused.output


def queued_flow() -> dict[str, Any]:
    """A flow whose two trainings wait for Kueue (one preempted) while a third waits for them."""
    flow = listed_flow("gpu-sweep", "default")
    flow["status"].update(phase="Running", progress="1/5", queued=2)
    flow["status"]["works"] = [
        {"name": "prep", "phase": "Succeeded", "attempts": 1},
        {"name": "train-a", "phase": "Running", "attempts": 1},
        {
            "name": "train-b",
            "phase": "Pending",
            "reason": "Queued",
            "job": "gpu-sweep-12-train-b",
            "message": "queued in LocalQueue gpu: insufficient unused quota for nvidia.com/gpu in flavor gpu",
        },
        {
            "name": "train-c",
            "phase": "Pending",
            "reason": "Preempted",
            "job": "gpu-sweep-12-train-c",
            "attempts": 1,
            "message": "preempted by Kueue and queued again in LocalQueue gpu",
        },
        {"name": "eval", "phase": "Pending"},
    ]
    return flow


def test_get_shows_works_waiting_for_kueue_apart_from_pending_ones(
    fake_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeFlowClient, "flows", [queued_flow()])
    shown = runner.invoke(app, ["get", "gpu-sweep"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split()[-4:] == ["1/5", "works", "2", "queued"], lines[0]
    # Columns are padded with at least three spaces; a phase holds one.
    rows = [re.split(r" {3,}", line) for line in lines if line.startswith(("train", "eval"))]
    phases = {row[0]: row[1] for row in rows}
    assert phases == {
        "train-a": "Running",
        "train-b": "Pending (Queued)",
        "train-c": "Pending (Preempted)",
        "eval": "Pending",
    }
