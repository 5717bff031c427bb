"""Artifacts and archived logs, the operator's side: the namespace's store, the keys of objects, what a
work's pods are told (uploads, downloads, the log's key), `$(works.W.outputs.O.path)`, and what is
refused at apply."""

from __future__ import annotations

from typing import Any

import pytest

from dagflow.api.models import DAGFlowSpec
from dagflow.controller.artifacts import (
    FlowIdentity,
    StoreConfigError,
    artifact_key,
    artifact_paths,
    log_prefix,
    needs_store,
    parse_store,
    store_missing_message,
    wiring,
)
from dagflow.controller.builders import (
    LAUNCHER_EXIT_CODE,
    FlowRef,
    MatrixInstances,
    build_deployment,
    build_job,
)
from dagflow.controller.settings import OperatorSettings
from dagflow.rules.cachekey import work_cache_key
from dagflow.rules.substitution import BadReference, Values, substitute
from dagflow.rules.validation import validate_flow

FLOW = FlowRef(name="ml", namespace="team-a", uid="0a1b2c3d-uid")
IDENTITY = FlowIdentity("team-a", "ml", "0a1b2c3d-uid")
STORE = parse_store(
    {"endpoint": "http://store.example:7070", "bucket": "dagflow", "secretName": "store-keys"}, "test"
)
SETTINGS = OperatorSettings()
MODEL = {
    "uri": "s3://dagflow/artifacts/team-a/ml/0a1b2c3d-uid/1/train/model",
    "size": 12,
    "sha256": "ab" * 32,
}


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


def pipeline() -> DAGFlowSpec:
    return DAGFlowSpec.model_validate(
        {
            "works": [
                work("train", outputs=[{"name": "model", "artifact": {"path": "/workspace/model.pkl"}}]),
                work(
                    "evaluate",
                    "train",
                    outputs=[{"name": "report", "artifact": {"path": "/out/report"}}, {"name": "score"}],
                    container={"image": "x", "args": ["--model", "$(works.train.outputs.model.path)"]},
                ),
                work(
                    "serve",
                    "evaluate",
                    serve={"port": 8080},
                    container={"image": "x", "args": ["$(works.train.outputs.model.path)"]},
                ),
            ],
            "finally": [
                work("notes", container={"image": "x", "args": ["$(works.evaluate.outputs.report.path)"]})
            ],
        }
    )


def env_of(template: dict[str, Any]) -> dict[str, Any]:
    container = template["spec"]["containers"][0]
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container.get("env", [])}


# -- the store ------------------------------------------------------------------------------------


def test_a_namespace_names_its_store_in_camel_case_with_defaults() -> None:
    assert (STORE.endpoint, STORE.bucket, STORE.secret_name, STORE.region, STORE.prefix) == (
        "http://store.example:7070",
        "dagflow",
        "store-keys",
        "us-east-1",
        "",
    )
    prefixed = parse_store({**STORE.to_dict(), "prefix": "/team/"}, "test")
    assert prefixed.prefix == "team"
    assert (
        artifact_key(prefixed, IDENTITY, 3, "train", "model")
        == "team/artifacts/team-a/ml/0a1b2c3d-uid/3/train/model"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"bucket": "dagflow", "secretName": "s"}, "endpoint"),
        ({"endpoint": "store:7070", "bucket": "dagflow", "secretName": "s"}, "endpoint"),
        ({"endpoint": "http://s:1/path", "bucket": "dagflow", "secretName": "s"}, "endpoint"),
        ({"endpoint": "http://s:1", "bucket": "Not_A_Bucket", "secretName": "s"}, "bucket"),
        ({"endpoint": "http://s:1", "bucket": "dagflow"}, "secretName"),
        ({"endpoint": "http://s:1", "bucket": "dagflow", "secretName": "s", "buckt": "x"}, "buckt"),
    ],
)
def test_a_store_that_cannot_be_used_is_told_naming_the_field(data: dict[str, str], field: str) -> None:
    with pytest.raises(StoreConfigError) as raised:
        parse_store(data, "ConfigMap team-a/dagflow-artifacts")
    assert str(raised.value).startswith("ConfigMap team-a/dagflow-artifacts is not a usable artifact store: ")
    assert field in str(raised.value)


def test_keys_are_the_flow_s_own_so_a_flow_made_again_never_meets_the_old_one_s_objects() -> None:
    again = FlowIdentity("team-a", "ml", "ffff-other-uid")
    assert artifact_key(STORE, IDENTITY, 1, "train", "model") != artifact_key(
        STORE, again, 1, "train", "model"
    )
    assert log_prefix(STORE, IDENTITY, 2, "train") == "logs/team-a/ml/0a1b2c3d-uid/2/train/"


# -- what the pods are told ----------------------------------------------------------------------


def test_a_work_uploads_its_artifacts_downloads_those_it_reads_and_archives_its_log() -> None:
    spec = pipeline()
    outputs = {"train": {"model": {**MODEL, "kind": "file"}}}
    train = wiring(STORE, IDENTITY, spec, spec.work("train"), 1, {})
    assert train.uploads == [
        {
            "name": "model",
            "path": "/workspace/model.pkl",
            "key": "artifacts/team-a/ml/0a1b2c3d-uid/1/train/model",
        }
    ]
    assert train.downloads == []
    assert train.log_key == "logs/team-a/ml/0a1b2c3d-uid/1/train/{pod}.log"
    evaluate = wiring(STORE, IDENTITY, spec, spec.work("evaluate"), 1, outputs)
    assert evaluate.downloads == [
        {
            "work": "train",
            "name": "model",
            "uri": MODEL["uri"],
            "sha256": MODEL["sha256"],
            "kind": "file",
            "path": "/dagflow-artifacts/train/model/model.pkl",
        }
    ]
    assert [upload["name"] for upload in evaluate.uploads] == ["report"]
    # A serve work downloads what it serves and has no log to archive: it runs until the flow goes.
    serve = wiring(STORE, IDENTITY, spec, spec.work("serve"), 1, outputs)
    assert serve.log_key is None and len(serve.downloads) == 1
    # A finally work's reference to a work that left nothing downloads nothing (it reads "").
    notes = wiring(STORE, IDENTITY, spec, spec.work("notes"), 1, outputs)
    assert notes.downloads == []


def test_a_directory_artifact_is_downloaded_as_a_folder() -> None:
    spec = pipeline()
    paths = artifact_paths(spec, {"evaluate": {"report": {"uri": "s3://b/k", "kind": "directory"}}})
    assert paths["evaluate"]["report"] == "/dagflow-artifacts/evaluate/report"
    assert paths["train"]["model"] == "/dagflow-artifacts/train/model/model.pkl"


def test_the_job_starts_through_the_launcher_with_the_store_s_environment() -> None:
    spec = pipeline()
    wired = wiring(
        STORE, IDENTITY, spec, spec.work("evaluate"), 1, {"train": {"model": {**MODEL, "kind": "file"}}}
    )
    job = build_job(FLOW, spec, spec.work("evaluate"), 1, SETTINGS, store=wired)
    template = job["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["command"][1:3] == ["run", "--"]
    env = env_of(template)
    assert env["DAGFLOW_STORE_ENDPOINT"] == "http://store.example:7070"
    assert env["DAGFLOW_STORE_BUCKET"] == "dagflow"
    assert env["DAGFLOW_STORE_SECRET"] == "store-keys"
    # The credentials come from the namespace's Secret, read by the pod: the operator never has them.
    assert env["DAGFLOW_STORE_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "store-keys", "key": "accessKeyId", "optional": True}
    }
    assert env["DAGFLOW_STORE_SECRET_ACCESS_KEY"]["secretKeyRef"]["key"] == "secretAccessKey"
    assert env["DAGFLOW_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["DAGFLOW_LOG_KEY"] == "logs/team-a/ml/0a1b2c3d-uid/1/evaluate/{pod}.log"
    assert '"path":"/dagflow-artifacts/train/model/model.pkl"' in env["DAGFLOW_DOWNLOADS"]
    assert '"name":"report"' in env["DAGFLOW_UPLOADS"]
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/dagflow", "/dagflow-logs", "/dagflow-artifacts"} <= mounts
    assert "/dagflow-matrix" not in mounts and "DAGFLOW_MATRIX_ENV" not in env  # no matrix here
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert any(rule.get("onExitCodes", {}).get("values") == [LAUNCHER_EXIT_CODE] for rule in rules)
    # Its pod's success still settles it at once.
    assert template["metadata"]["labels"]["dagflow.dev/settles-work"] == "true"


def test_a_matrix_work_keeps_its_values_beside_the_store() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                work(
                    "grid",
                    matrix={"k": ["a", "b"]},
                    container={"image": "x", "command": ["run", "$(matrix.k)"]},
                )
            ]
        }
    )
    wired = wiring(STORE, IDENTITY, spec, spec.works[0], 1, {})
    job = build_job(FLOW, spec, spec.works[0], 1, SETTINGS, instances=MatrixInstances(2, 2), store=wired)
    env = env_of(job["spec"]["template"])
    assert "DAGFLOW_MATRIX_ENV" in env and "DAGFLOW_LOG_KEY" in env
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][3:] == ["run", "$(matrix.k)"]


def test_without_a_store_nothing_changes_and_a_serve_work_is_launched_only_to_download() -> None:
    spec = pipeline()
    plain = build_job(FLOW, spec, spec.work("train"), 1, SETTINGS)
    assert plain["spec"]["template"]["spec"]["containers"][0].get("command") is None
    no_downloads = wiring(STORE, IDENTITY, spec, spec.work("serve"), 1, {})
    deployment = build_deployment(FLOW, spec, spec.work("serve"), 1, SETTINGS, store=no_downloads)
    assert "DAGFLOW_STORE_BUCKET" not in env_of(deployment["spec"]["template"])


def test_a_work_that_needs_the_store_is_told_why_it_cannot_start() -> None:
    spec = pipeline()
    assert needs_store(spec.work("train")) and needs_store(spec.work("serve"))
    assert not needs_store(DAGFlowSpec.model_validate({"works": [work("a")]}).works[0])
    assert store_missing_message("team-a", spec.work("train"), None) == (
        "it uploads artifacts, and namespace team-a has no artifact store: create the ConfigMap "
        "dagflow-artifacts there (endpoint, bucket, secretName), or set the operator's artifactStore"
    )
    broken = StoreConfigError(
        "ConfigMap team-a/dagflow-artifacts is not a usable artifact store: bucket: ..."
    )
    assert store_missing_message("team-a", spec.work("serve"), broken).startswith(
        "it downloads artifacts, and ConfigMap team-a/dagflow-artifacts is not"
    )


# -- references ------------------------------------------------------------------------------------


def test_an_artifact_reads_as_its_uri_and_its_path_as_where_it_was_downloaded() -> None:
    values = Values(
        run=1,
        flow="ml",
        work="evaluate",
        outputs={"train": {"model": MODEL}, "evaluate": {"score": 0.5}},
        artifact_paths={"train": {"model": "/dagflow-artifacts/train/model/model.pkl"}},
    )
    assert (
        substitute("$(works.train.outputs.model.path)", values) == "/dagflow-artifacts/train/model/model.pkl"
    )
    assert substitute("$(works.train.outputs.model)", values) == MODEL["uri"]
    with pytest.raises(BadReference, match="is not an artifact"):
        substitute("$(works.evaluate.outputs.score.path)", values)


def problems(raw: dict[str, Any]) -> list[str]:
    return [str(problem) for problem in validate_flow(raw)]


def test_what_is_refused_at_apply() -> None:
    value_output = {
        "works": [
            work("a", outputs=[{"name": "score"}]),
            work("b", "a", container={"image": "x", "args": ["$(works.a.outputs.score.path)"]}),
        ]
    }
    assert problems(value_output) == [
        "spec.works[1].container.args[0]: work 'b': $(works.a.outputs.score.path): output 'score' of "
        "work 'a' is a value, not an artifact: use $(works.a.outputs.score)"
    ]
    matrix = {
        "works": [
            work(
                "grid",
                matrix={"k": ["a"]},
                container={"image": "x", "command": ["go"]},
                outputs=[{"name": "m", "artifact": {"path": "/out/m"}}],
            )
        ]
    }
    assert [line.split(":")[0] for line in problems(matrix)] == ["spec.works[0].outputs[0].artifact"]
    for path in ("relative/m", "/a/../b", "/"):
        relative = {"works": [work("a", outputs=[{"name": "m", "artifact": {"path": path}}])]}
        assert any("artifact.path" in line for line in problems(relative)), path


def test_a_work_that_reads_an_artifact_by_path_has_a_cache_key() -> None:
    spec = pipeline()
    outputs = {"train": {"model": {**MODEL, "kind": "file"}}}
    values = Values(
        run=2, flow="ml", work="evaluate", outputs=outputs, artifact_paths=artifact_paths(spec, outputs)
    )
    key = work_cache_key(spec, spec.work("evaluate"), values, {"train": "k" * 32})
    # The path is in its arguments; what is at the path is in its upstream's key.
    assert key != work_cache_key(spec, spec.work("evaluate"), values, {"train": "j" * 32})
