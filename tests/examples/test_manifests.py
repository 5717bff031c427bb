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
        for work in flow["spec"]["works"]:
            container = work["container"]
            if not container["image"].startswith(EXAMPLE_IMAGE):
                continue
            command = container["command"]
            assert command[:2] == ["python", "-m"], command
            module = command[2].removeprefix("pipeline.")
            assert (PIPELINE_PACKAGE / f"{module}.py").is_file(), f"work {work['name']}: no {command[2]}"


def test_ml_pipeline_claims_the_volume_it_mounts() -> None:
    path = REPO_ROOT / "examples" / "ml-pipeline.yaml"
    claims = {doc["metadata"]["name"] for doc in documents(path) if doc["kind"] == "PersistentVolumeClaim"}
    (flow,) = flows(path)
    works = flow["spec"]["works"]
    names = ["process", "train", "serve"]
    assert [work["name"] for work in works] == names
    for work in works:
        volume_claims = {volume["persistentVolumeClaim"]["claimName"] for volume in work["volumes"]}
        assert volume_claims == claims, work["name"]
        mounts = {mount["mountPath"] for mount in work["container"]["volumeMounts"]}
        assert mounts == {"/data"}, work["name"]
    train = works[1]
    assert train["matrix"] == {"model": ["linear", "forest", "gbr"]} and train["gpu"] == 1
    assert [output["name"] for output in train["outputs"]] == ["model", "score"]
    assert "$(works.train.outputs.score)" in works[-1]["container"]["args"]
    assert works[-1]["serve"]["port"] == 8080
