"""The example manifests: valid flows whose commands name steps that exist in the example image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dagflow.rules.validation import validate_flow
from tests.kube import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
PIPELINE_PACKAGE = REPO_ROOT / "images" / "examples" / "pipeline"
EXAMPLE_IMAGE = "dagflow/examples:"


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def flows(path: Path) -> list[dict[str, Any]]:
    return [document for document in documents(path) if document.get("kind") == "DAGFlow"]


def test_there_are_examples() -> None:
    assert {path.name for path in EXAMPLES} >= {"hello.yaml", "ml-pipeline.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_flow_is_valid(path: Path) -> None:
    assert flows(path), f"{path.name} holds no DAGFlow"
    for flow in flows(path):
        problems = validate_flow(flow["spec"], flow_name=flow["metadata"]["name"])
        assert not problems, [str(problem) for problem in problems]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_image_commands_name_existing_steps(path: Path) -> None:
    for flow in flows(path):
        for work in [*flow["spec"]["works"], *flow["spec"].get("finally", [])]:
            container = work["container"]
            if not container["image"].startswith(EXAMPLE_IMAGE):
                continue
            command = container["command"]
            assert command[:2] == ["python", "-m"], command
            module = command[2].removeprefix("pipeline.")
            assert (PIPELINE_PACKAGE / f"{module}.py").is_file(), f"work {work['name']}: no {command[2]}"


def data_folder(work: dict[str, Any]) -> str:
    """Where a step of the example image reads and writes its files: its --data argument."""
    argv = [*work["container"].get("command", []), *work["container"].get("args", [])]
    return str(argv[argv.index("--data") + 1])


def test_ml_pipeline_passes_its_files_through_the_run_s_workspace() -> None:
    path = REPO_ROOT / "examples" / "ml-pipeline.yaml"
    assert [doc["kind"] for doc in documents(path)] == ["DAGFlow"]  # no claim made by hand
    (flow,) = flows(path)
    assert flow["spec"]["workspace"] == {"size": "1Gi", "accessModes": ["ReadWriteMany"]}
    works = flow["spec"]["works"]
    names = ["process", "train", "serve"]
    assert [work["name"] for work in works] == names
    for work in works:
        assert "volumes" not in work and "volumeMounts" not in work["container"], work["name"]
        assert data_folder(work) == "/workspace", work["name"]
    assert works[-1]["workspace"] == {"readOnly": True}
    train = works[1]
    assert train["matrix"] == {"model": ["linear", "forest", "gbr"]} and train["gpu"] == 1
    assert [output["name"] for output in train["outputs"]] == ["model", "score"]
    assert "$(works.train.outputs.score)" in works[-1]["container"]["args"]
    assert works[-1]["serve"]["port"] == 8080


def test_the_gated_pipeline_serves_only_the_model_an_approver_promoted() -> None:
    path = REPO_ROOT / "examples" / "ml-pipeline-gated.yaml"
    assert [doc["kind"] for doc in documents(path)] == ["DAGFlow"]
    (flow,) = flows(path)
    spec = flow["spec"]
    works = {work["name"]: work for work in spec["works"]}
    assert list(works) == ["process", "train", "evaluate", "promote", "serve"]
    finally_works = {work["name"]: work for work in spec["finally"]}
    assert list(finally_works) == ["report"]
    assert spec["workspace"]["accessModes"] == ["ReadWriteMany"]
    for work in [*works.values(), *finally_works.values()]:
        if work["name"] == "evaluate":  # reads only its upstreams' outputs: no workspace
            assert work["workspace"] == {"mount": False}
            continue
        assert data_folder(work) == "/workspace", work["name"]

    train = works["train"]
    assert train["matrix"] == {"model": ["linear", "forest", "gbr"]} and train["gpu"] == 1
    assert [output["name"] for output in train["outputs"]] == ["model", "score"]
    evaluate = works["evaluate"]
    assert evaluate["dependsOn"] == ["train"]
    assert [output["name"] for output in evaluate["outputs"]] == ["model", "score"]
    assert evaluate["container"]["args"] == [
        *("--models", "$(works.train.outputs.model)", "--scores", "$(works.train.outputs.score)")
    ]

    # The gate: the approver may name the model, and by default it is the one evaluate found best.
    promote = works["promote"]
    assert promote["dependsOn"] == ["evaluate"]
    assert promote["approval"]["params"] == ["model"]
    assert promote["approval"]["timeoutSeconds"] == 86400
    assert promote["approval"]["message"].startswith("Promote")
    assert [(param["name"], param["default"]) for param in spec["params"]] == [("model", "")]
    args = promote["container"]["args"]
    assert args[args.index("--best") + 1] == "$(works.evaluate.outputs.model)"
    assert "--chosen=$(params.model)" in args
    assert [output["name"] for output in promote["outputs"]] == ["model"]

    # What is served is what promote promoted, nothing else.
    serve = works["serve"]
    assert serve["dependsOn"] == ["promote"] and serve["serve"]["port"] == 8080
    serve_args = serve["container"]["args"]
    assert serve_args[serve_args.index("--model") + 1] == "$(works.promote.outputs.model)"
    assert "--models" not in serve_args and "--scores" not in serve_args
    assert not any("params.model" in arg for arg in serve_args)
    assert serve["workspace"] == {"readOnly": True}

    report = finally_works["report"]
    assert report["container"]["command"] == ["python", "-m", "pipeline.report"]
    assert {"$(run)", "$(run.phase)", "$(run.failedWorks)", "--model=$(works.promote.outputs.model)"} <= set(
        report["container"]["args"]
    )

    assert spec["notify"] == [
        {
            "on": ["Failed"],
            "format": "slack",
            "webhook": {"urlFrom": {"secretKeyRef": {"name": "ml-team-hook", "key": "url"}}},
        }
    ]
    # The header tells how to approve, and who may.
    header = path.read_text().split("apiVersion:", 1)[0]
    assert "dagflow approve ml-pipeline-gated promote -p model=forest" in header
    assert "<release>-approver" in header and "docs/api.md#approval-gates" in header
    assert "kubectl create secret generic ml-team-hook --from-literal=url=" in header
