"""The Python SDK: flows built in code are the flows of the YAML examples, checked as the cluster checks."""

from __future__ import annotations

import runpy
import subprocess
import sys
from typing import Any

import pytest
import yaml

from dagflow.sdk import FAILED_WORKS, RUN_PHASE, Flow, FlowError, Serve, Work
from tests.kube import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def test_the_sdk_example_emits_the_objects_of_the_yaml_example() -> None:
    emitted = subprocess.run(
        [sys.executable, str(EXAMPLES / "ml_pipeline.py")], capture_output=True, text=True, check=True
    ).stdout
    assert documents(emitted) == documents((EXAMPLES / "ml-pipeline.yaml").read_text())


def test_works_made_inside_a_flow_join_it_and_shift_makes_dependencies() -> None:
    with Flow("fan", params={"lr": "0.1"}) as flow:
        root = Work("root", image="ml", outputs=["shards"])
        a = Work("a", image="ml", args=["--lr", flow.params["lr"], "--in", root.outputs["shards"]])
        b = Work("b", image="ml")
        join = Work("join", image="ml")
        root >> [a, b] >> join
    Work("elsewhere", image="ml")
    spec = flow.to_object()["spec"]
    assert [work["name"] for work in spec["works"]] == ["root", "a", "b", "join"]
    assert {work["name"]: work.get("dependsOn") for work in spec["works"]} == {
        "root": None,
        "a": ["root"],
        "b": ["root"],
        "join": ["a", "b"],
    }
    assert spec["works"][1]["container"]["args"] == [
        "--lr",
        "$(params.lr)",
        "--in",
        "$(works.root.outputs.shards)",
    ]
    assert spec["params"] == [{"name": "lr", "default": "0.1"}]


def test_finally_works_leave_the_works_and_are_told_how_the_run_ended() -> None:
    with Flow("nightly") as flow:
        train = Work("train", image="ml", outputs=["model"])
        report = Work("report", image="r", args=[RUN_PHASE, FAILED_WORKS, train.outputs["model"]])
        cleanup = Work("cleanup", image="r", depends_on=[report])
        flow.add_finally(report, cleanup)
    spec = flow.to_object()["spec"]
    assert [work["name"] for work in spec["works"]] == ["train"]
    assert [work["name"] for work in spec["finally"]] == ["report", "cleanup"]
    assert spec["finally"][0]["container"]["args"] == [
        "$(run.phase)",
        "$(run.failedWorks)",
        "$(works.train.outputs.model)",
    ]
    with pytest.raises(FlowError, match="known in finally works only"):
        Flow("misplaced").add(Work("train", image="ml", args=[RUN_PHASE])).spec()


def test_only_the_fields_given_are_emitted() -> None:
    with Flow("small") as flow:
        Work("only", image="ml", gpu=1, env={"A": "1"})
    assert flow.to_object() == {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": "small"},
        "spec": {
            "works": [
                {"name": "only", "container": {"image": "ml", "env": [{"name": "A", "value": "1"}]}, "gpu": 1}
            ]
        },
    }


def test_undeclared_outputs_and_parameters_fail_where_they_are_referenced() -> None:
    with Flow("f", params={"lr": "0.1"}) as flow:
        train = Work("train", image="ml", outputs=["score"])
    with pytest.raises(KeyError, match="work train declares no output 'model' \\(it has: score\\)"):
        train.outputs["model"]
    with pytest.raises(KeyError, match="flow f declares no parameter 'epochs' \\(it has: lr\\)"):
        flow.params["epochs"]


def test_what_the_webhook_refuses_is_refused_when_the_flow_is_built() -> None:
    with Flow("loop") as flow:
        a, b, c = Work("a", image="ml"), Work("b", image="ml"), Work("c", image="ml")
        a >> b >> c >> a
        Work("d", image="ml", args=["$(works.a.outputs.x)"])
        Work("s", image="ml", serve=Serve(port=8080), retries=1)
    with pytest.raises(FlowError) as raised:
        flow.to_yaml()
    text = str(raised.value)
    assert "dependency cycle" in text and "a -> " in text
    assert "$(works.a.outputs.x)" in text
    assert "retries, timeoutSeconds, outputs and matrix apply to batch works only" in text
    assert all(problem.path.startswith("spec.") for problem in raised.value.problems)


def test_the_sdk_example_module_builds_its_flow_without_a_cluster() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "ml_pipeline.py"))
    flow = namespace["flow"]
    assert [work.name for work in flow.works] == ["process", "train", "serve"]
    assert flow.spec().work("train").matrix == {"model": ["linear", "forest", "gbr"]}


def test_code_written_against_the_sdk_is_checked_by_mypy(tmp_path: Any) -> None:
    """Users' pipelines type-check: the package is typed, and a wrong type is caught."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text('from dagflow.sdk import Work\n\nWork("a", image="x", gpu="one")\n')
    env = {"MYPYPATH": str(REPO_ROOT / "operator"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent"]
    good = subprocess.run(
        [*command, str(EXAMPLES / "ml_pipeline.py")], capture_output=True, text=True, env=env
    )
    assert good.returncode == 0, good.stdout
    bad = subprocess.run([*command, str(wrong)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and 'Argument "gpu" to "Work" has incompatible type "str"' in bad.stdout, (
        bad.stdout
    )
