"""A workspace per run (spec.workspace): its claim, how each work mounts it, which run's claim a run
uses, when a claim is let go, what is refused at apply, and that a work writing it is never cached."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dagflow.api.models import DAGFlowSpec, DAGFlowStatus, FlowPhase, RunTrigger, WorkPhase
from dagflow.controller.builders import (
    FlowRef,
    MatrixInstances,
    build_deployment,
    build_job,
    build_workspace_claim,
)
from dagflow.controller.planner import Plan, WorkState
from dagflow.controller.runcontrol import begun_status, referenced_claims, run_workspace, with_run_control
from dagflow.controller.rundecisions import NewRun, decide_run
from dagflow.controller.settings import OperatorSettings
from dagflow.controller.status import build_status, invalid_status
from dagflow.rules import naming
from dagflow.rules.validation import validate_flow

FLOW = FlowRef(name="ml-pipeline", namespace="team-a", uid="7d0c2b2a-uid")
NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
SETTINGS = OperatorSettings()
WORKSPACE = {"size": "10Gi", "storageClassName": "nfs", "accessModes": ["ReadWriteMany"]}


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


def flow_spec(*works: dict[str, Any], **fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": list(works) or [work("a")], "workspace": WORKSPACE, **fields})


def pod_of(job_or_deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job_or_deployment["spec"]["template"]["spec"]
    return pod


def mounts(job_or_deployment: dict[str, Any]) -> list[dict[str, Any]]:
    container = pod_of(job_or_deployment)["containers"][0]
    return [mount for mount in container.get("volumeMounts", []) if mount["name"] == "dagflow-workspace"]


# -- the claim and the pods --------------------------------------------------------------------------


def test_the_claim_asks_for_the_spec_s_storage_and_belongs_to_the_flow() -> None:
    spec = flow_spec()
    claim = build_workspace_claim(FLOW, spec, 3, "ml-pipeline-3-workspace")
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == "ml-pipeline-3-workspace"
    assert claim["metadata"]["namespace"] == "team-a"
    assert claim["metadata"]["labels"]["dagflow.dev/flow"] == "ml-pipeline"
    assert claim["metadata"]["labels"]["dagflow.dev/run"] == "3"
    [owner] = claim["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("DAGFlow", FLOW.uid, True)
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "10Gi"}},
        "storageClassName": "nfs",
    }


def test_without_a_class_the_claim_takes_the_cluster_s_default_and_one_node_access() -> None:
    spec = DAGFlowSpec.model_validate({"works": [work("a")], "workspace": {"size": "1Gi"}})
    claim = build_workspace_claim(FLOW, spec, 1, "c")
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_every_work_mounts_the_run_s_claim_at_workspace() -> None:
    spec = flow_spec(work("process"), work("train", "process", gpu=1))
    for item in spec.works:
        job = build_job(FLOW, spec, item, 2, SETTINGS, workspace_claim="ml-pipeline-2-workspace")
        assert mounts(job) == [{"name": "dagflow-workspace", "mountPath": "/workspace"}]
        assert {
            "name": "dagflow-workspace",
            "persistentVolumeClaim": {"claimName": "ml-pipeline-2-workspace"},
        } in (pod_of(job)["volumes"])


def test_a_work_may_opt_out_pick_a_folder_or_only_read() -> None:
    spec = flow_spec(
        work("out", workspace={"mount": False}),
        work("sub", workspace={"subPath": "models/linear"}),
        work("reader", workspace={"readOnly": True}),
    )
    jobs = {item.name: build_job(FLOW, spec, item, 1, SETTINGS, workspace_claim="c") for item in spec.works}
    assert mounts(jobs["out"]) == []
    assert "volumes" not in pod_of(jobs["out"])
    assert mounts(jobs["sub"]) == [
        {"name": "dagflow-workspace", "mountPath": "/workspace", "subPath": "models/linear"}
    ]
    assert mounts(jobs["reader"]) == [
        {"name": "dagflow-workspace", "mountPath": "/workspace", "readOnly": True}
    ]


def test_the_work_s_own_volumes_stay_beside_the_workspace() -> None:
    own = work(
        "a",
        volumes=[{"name": "cache", "emptyDir": {}}],
        container={"image": "x", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
    )
    job = build_job(FLOW, flow_spec(own), flow_spec(own).works[0], 1, SETTINGS, workspace_claim="c")
    assert [volume["name"] for volume in pod_of(job)["volumes"]] == ["cache", "dagflow-workspace"]
    assert [mount["mountPath"] for mount in pod_of(job)["containers"][0]["volumeMounts"]] == [
        "/cache",
        "/workspace",
    ]


def test_a_matrix_work_s_instances_and_a_serve_work_mount_it_too() -> None:
    spec = flow_spec(
        work("train", matrix={"model": ["a", "b"]}, container={"image": "x", "command": ["train"]}),
        work("serve", "train", serve={"port": 8080}, workspace={"readOnly": True}),
    )
    job = build_job(
        FLOW, spec, spec.work("train"), 1, SETTINGS, instances=MatrixInstances(2, 2), workspace_claim="c"
    )
    assert mounts(job) == [{"name": "dagflow-workspace", "mountPath": "/workspace"}]
    # The launcher's own mounts are there as well.
    assert len(pod_of(job)["containers"][0]["volumeMounts"]) == 3
    deployment = build_deployment(FLOW, spec, spec.work("serve"), 1, SETTINGS, workspace_claim="c")
    assert mounts(deployment) == [{"name": "dagflow-workspace", "mountPath": "/workspace", "readOnly": True}]


def test_a_flow_without_a_workspace_mounts_none() -> None:
    spec = DAGFlowSpec.model_validate({"works": [work("a")]})
    job = build_job(FLOW, spec, spec.works[0], 1, SETTINGS, workspace_claim="ignored")
    assert "volumes" not in pod_of(job)


# -- which claim a run uses, and when one goes ---------------------------------------------------------


def new_run(number: int, trigger: RunTrigger) -> NewRun:
    return NewRun(number=number, trigger=trigger, spec_hash="h", works=("a",))


def test_each_run_has_its_own_claim_but_a_retry_shares_the_retried_run_s() -> None:
    spec = flow_spec()
    assert run_workspace({}, spec, new_run(1, RunTrigger.CREATED), "ml") == "ml-1-workspace"
    previous = {"workspaceClaim": "ml-4-workspace"}
    assert run_workspace(previous, spec, new_run(5, RunTrigger.RETRY), "ml") == "ml-4-workspace"
    for trigger in (RunTrigger.RERUN, RunTrigger.SPEC_CHANGE, RunTrigger.SCHEDULE):
        assert run_workspace(previous, spec, new_run(5, trigger), "ml") == "ml-5-workspace"
    # A retry of a run that had none (the workspace came with this spec) gets its own.
    assert run_workspace({}, spec, new_run(5, RunTrigger.RETRY), "ml") == "ml-5-workspace"
    assert (
        run_workspace(
            previous, DAGFlowSpec.model_validate({"works": [work("a")]}), new_run(5, RunTrigger.RERUN), "ml"
        )
        is None
    )


def test_a_long_flow_name_still_gives_a_valid_claim_name() -> None:
    name = naming.workspace_claim_name("a" * 63, 12345)
    assert len(name) <= 63 and naming.is_dns1123_label(name)
    assert name != naming.workspace_claim_name("a" * 62 + "b", 12345)


def test_the_claims_of_runs_beyond_the_history_are_let_go_and_no_other() -> None:
    spec = flow_spec(historyRuns=2)
    status: dict[str, Any] = {}
    claims_over_time = []
    for number in range(1, 5):
        decision = decide_run(spec, status, {"dagflow.dev/rerun": str(number)}, NOW, generation=1)
        status = begun_status(status, decision, spec, 1, NOW, 2, flow_name="ml")
        DAGFlowStatus.model_validate(status)
        status = with_run_control(
            {**status, "phase": "Failed", "finishedAt": "2025-01-01T12:01:00Z"}, None, 2
        )
        claims_over_time.append(referenced_claims(status))
    assert status["workspaceClaim"] == "ml-4-workspace"
    assert claims_over_time == [
        {"ml-1-workspace"},
        {"ml-1-workspace", "ml-2-workspace"},
        {"ml-2-workspace", "ml-3-workspace"},
        {"ml-3-workspace", "ml-4-workspace"},
    ]
    # A retry keeps using run 4's claim: it stays while the retry is kept, even once run 4 is not.
    decision = decide_run(spec, status, {"dagflow.dev/retry": "r"}, NOW, generation=1)
    retried = begun_status(status, decision, spec, 1, NOW, 1, flow_name="ml")
    assert retried["workspaceClaim"] == "ml-4-workspace"
    assert [summary["workspaceClaim"] for summary in retried["runs"]] == ["ml-4-workspace"]
    assert referenced_claims(retried) == {"ml-4-workspace"}


# -- refused at apply ------------------------------------------------------------------------------


def problems(raw: dict[str, Any]) -> list[str]:
    return [str(problem) for problem in validate_flow(raw)]


@pytest.mark.parametrize(
    ("workspace", "message"),
    [
        ({}, "size"),
        ({"size": "lots"}, "size"),
        ({"size": "-1Gi"}, "size"),
        ({"size": "1Gi", "accessModes": ["ReadWriteSometimes"]}, "accessModes"),
        ({"size": "1Gi", "accessModes": []}, "accessModes"),
        ({"size": "1Gi", "accessModes": ["ReadOnlyMany"]}, "no work could write to it"),
    ],
)
def test_a_bad_workspace_is_refused_saying_which_field(workspace: dict[str, Any], message: str) -> None:
    found = problems({"works": [work("a")], "workspace": workspace})
    assert any(line.startswith("spec.workspace") and message in line for line in found), found


def test_what_a_work_says_of_the_workspace_must_fit_the_flow() -> None:
    assert problems({"works": [work("a", workspace={"subPath": "x"})]}) == [
        "spec.works[0].workspace: work 'a' says how to mount the workspace, but the flow has none: set "
        "spec.workspace"
    ]
    for sub_path in ("/abs", "../up", "a//b", "a/"):
        found = problems({"works": [work("a", workspace={"subPath": sub_path})], "workspace": WORKSPACE})
        assert any("spec.works[0].workspace.subPath" in line for line in found), (sub_path, found)
    clash = work("a", container={"image": "x", "volumeMounts": [{"name": "v", "mountPath": "/workspace/"}]})
    clash["volumes"] = [{"name": "v", "emptyDir": {}}]
    assert problems({"works": [clash], "workspace": WORKSPACE}) == [
        "spec.works[0].container.volumeMounts[0].mountPath: work 'a' mounts the flow's workspace at "
        "/workspace: mount this volume elsewhere, or set workspace.mount: false on the work"
    ]
    assert problems({"works": [{**clash, "workspace": {"mount": False}}], "workspace": WORKSPACE}) == []
    named = work("a", volumes=[{"name": "dagflow-workspace", "emptyDir": {}}])
    assert any("volumes[0].name" in line for line in problems({"works": [named], "workspace": WORKSPACE}))


def test_a_work_that_writes_the_workspace_is_never_cached() -> None:
    cached = work("a", cache={"enabled": True})
    found = problems({"works": [cached], "workspace": WORKSPACE})
    assert len(found) == 1 and found[0].startswith(
        "spec.works[0].cache.enabled: work 'a' writes to the workspace"
    )
    assert problems({"works": [{**cached, "workspace": {"readOnly": True}}], "workspace": WORKSPACE}) == []
    # Spec-wide caching leaves the writers out and keeps the others.
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                work("writer"),
                work("reader", workspace={"readOnly": True}),
                work("apart", workspace={"mount": False}),
            ],
            "workspace": WORKSPACE,
            "cache": {"enabled": True},
        }
    )
    assert [spec.caches(item) for item in spec.works] == [False, True, True]
    plain = DAGFlowSpec.model_validate({"works": [work("w")], "cache": {"enabled": True}})
    assert plain.caches(plain.works[0])


def test_finally_works_mount_it_and_are_checked_as_well() -> None:
    spec = DAGFlowSpec.model_validate(
        {"works": [work("a")], "finally": [work("report")], "workspace": WORKSPACE}
    )
    job = build_job(FLOW, spec, spec.work("report"), 1, SETTINGS, workspace_claim="c")
    assert mounts(job) == [{"name": "dagflow-workspace", "mountPath": "/workspace"}]
    assert any(
        line.startswith("spec.finally[0].workspace")
        for line in problems({"works": [work("a")], "finally": [work("r", workspace={"readOnly": True})]})
    )


def test_every_status_of_the_run_keeps_its_claim_so_none_is_let_go_by_a_pass() -> None:
    spec = flow_spec()
    decision = decide_run(spec, {}, {}, NOW, generation=1)
    begun = begun_status({}, decision, spec, 1, NOW, 3, flow_name="ml")
    plan = Plan(works=[WorkState("a", phase=WorkPhase.RUNNING)], phase=FlowPhase.RUNNING)
    passed = with_run_control(build_status(plan, begun, 1, 1, "2025-01-01T12:00:31Z"), None, 3)
    assert passed["workspaceClaim"] == "ml-1-workspace"
    refused = invalid_status("spec.works[0]: bad", passed, 2, "2025-01-01T12:00:32Z")
    assert (
        referenced_claims(begun)
        == referenced_claims(passed)
        == referenced_claims(refused)
        == {"ml-1-workspace"}
    )
