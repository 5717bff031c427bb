"""The cache's pure parts: which entry a lookup takes, a hit's status, an entry's shape, and plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dagflow.api.models import DAGFlowSpec, Work, WorkPhase
from dagflow.client.cacheplan import HIT, MISS, RUNS, plan_cache
from dagflow.controller.builders import FlowRef, MatrixInstances, build_job, build_matrix_values
from dagflow.controller.caching import (
    MAX_ENTRY_BYTES,
    build_entry,
    build_instance_entries,
    entry_name,
    hit_status,
    newest_valid,
    take_instances,
)
from dagflow.controller.instances import failed_instances, format_indexes
from dagflow.controller.observe import JobObservation, observe_job, parse_indexes
from dagflow.controller.planner import Plan, WorkState
from dagflow.controller.settings import OperatorSettings
from dagflow.controller.workdata import merge_instances
from dagflow.rules.cachekey import KEY_LABEL, match_instances, matrix_work_keys, work_cache_key
from dagflow.rules.substitution import Values

NOW = datetime(2030, 1, 2, tzinfo=UTC)


def entry(key: str, age: timedelta, run: int = 1, **spec: Any) -> dict[str, Any]:
    created = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": f"e{run}"}, "spec": {"key": key, "createdAt": created, "run": run, **spec}}


def test_a_lookup_takes_the_newest_entry_of_exactly_its_key_within_max_age() -> None:
    entries = [
        entry("k", timedelta(hours=3), run=1),
        entry("k", timedelta(hours=1), run=2),
        entry("k-other", timedelta(minutes=1), run=3),  # the same label, another key
    ]
    assert newest_valid(entries, "k", NOW, 7200)["spec"]["run"] == 2
    assert newest_valid(entries, "k", NOW, 1800) is None


def test_a_hit_succeeds_now_with_the_entrys_outputs_and_where_they_came_from() -> None:
    work = Work.model_validate({"name": "train", "container": {"image": "x"}, "outputs": [{"name": "model"}]})
    found = entry(
        "k", timedelta(hours=1), run=4, work="train", flow="ml", job="ml-4-train", outputs={"model": "m"}
    )
    found["spec"]["finishedAt"] = "2030-01-01T23:00:00Z"
    status = hit_status(work, "k", found, "2030-01-02T00:00:00Z")
    assert status["phase"] == "Succeeded"
    assert status["outputs"] == {"model": "m"}
    assert status["cachedFrom"] == {
        "flow": "ml",
        "run": 4,
        "job": "ml-4-train",
        "finishedAt": "2030-01-01T23:00:00Z",
    }
    assert "job" not in status


def test_an_entry_is_labelled_by_its_key_and_named_once_per_run() -> None:
    spec = DAGFlowSpec.model_validate({"works": [{"name": "train", "container": {"image": "x"}}]})
    work = spec.works[0]
    key = work_cache_key(spec, work, Values(run=1, flow="ml", work="train"), {})
    flow = FlowRef(name="ml", namespace="team", uid="u1")
    state = WorkState(name="train", job="ml-1-train", finished_at="2030-01-01T00:00:00Z")
    body = build_entry(flow, work, 1, state, key, {}, "docker.io/x@sha256:abc", NOW)
    assert body["metadata"]["labels"][KEY_LABEL] == key.label
    assert "ownerReferences" not in body["metadata"]  # it outlives the flow
    assert body["spec"]["imageID"] == "docker.io/x@sha256:abc"
    assert body["spec"]["parts"]["image"] == key.short_parts()["image"]
    assert entry_name("train", key.value, "u1", 1) == body["metadata"]["name"]
    assert entry_name("train", key.value, "u1", 2) != body["metadata"]["name"]


def pipeline(args: list[str], image: str = "x:1") -> DAGFlowSpec:
    return DAGFlowSpec.model_validate(
        {
            "cache": {"enabled": True},
            "works": [
                {"name": "process", "container": {"image": image}},
                {"name": "train", "dependsOn": ["process"], "container": {"image": "x:1", "args": args}},
                {"name": "evaluate", "dependsOn": ["train"], "container": {"image": "x:1"}},
                {"name": "notes", "container": {"image": "x:1"}, "cache": {"enabled": False}},
            ],
        }
    )


def recorded(spec: DAGFlowSpec) -> list[dict[str, Any]]:
    """Entries of run 1 of `spec`, as the operator would have written them."""
    keys: dict[str, str] = {}
    found = []
    for work in spec.works:
        if not spec.cache_of(work).enabled:
            continue
        upstream = {dep: keys[dep] for dep in work.depends_on}
        key = work_cache_key(spec, work, Values(run=1, flow="ml", work=work.name), upstream)
        keys[work.name] = key.value
        labels = {KEY_LABEL: key.label, "dagflow.dev/flow": "ml", "dagflow.dev/work": work.name}
        created = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        found.append(
            {
                "metadata": {"labels": labels},
                "spec": {
                    "key": key.value,
                    "work": work.name,
                    "flow": "ml",
                    "run": 1,
                    "createdAt": created,
                    "parts": key.short_parts(),
                },
            }
        )
    return found


def lookup(entries: list[dict[str, Any]]) -> Any:
    def look_up(selector: str) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in selector.split(","))
        return [e for e in entries if all(e["metadata"]["labels"].get(k) == v for k, v in wanted.items())]

    return look_up


def test_plan_tells_hits_and_why_each_miss_misses() -> None:
    entries = recorded(pipeline(["--lr", "0.1"]))
    same = plan_cache(pipeline(["--lr", "0.1"]), "ml", {}, lookup(entries), NOW, run=2)
    assert {work.work: work.verdict for work in same} == {
        "notes": RUNS,
        "process": HIT,
        "train": HIT,
        "evaluate": HIT,
    }
    assert any("is a tag" in warning for work in same for warning in work.warnings)
    changed = {
        work.work: work for work in plan_cache(pipeline(["--lr", "0.2"]), "ml", {}, lookup(entries), NOW)
    }
    assert (changed["train"].verdict, changed["train"].reasons) == (MISS, ["args[1] changed"])
    assert changed["evaluate"].reasons == ["upstream train re-ran"]
    assert changed["process"].verdict == HIT
    moved = {
        work.work: work
        for work in plan_cache(pipeline(["--lr", "0.1"], image="x:2"), "ml", {}, lookup(entries), NOW)
    }
    assert moved["process"].reasons == ["image changed"]
    assert moved["train"].reasons == ["upstream process re-ran"]
    assert {work.work: work.reasons for work in plan_cache(pipeline([]), "ml", {}, lookup([]), NOW)}[
        "train"
    ] == ["no entry of this work yet"]


def test_plan_says_a_finally_work_always_runs_though_the_flow_caches() -> None:
    cached = pipeline(["--lr", "0.1"])
    spec = cached.model_copy(
        update={"finally_works": [cached.works[0].model_copy(update={"name": "report"})]}
    )
    planned = {work.work: work for work in plan_cache(spec, "ml", {}, lookup(recorded(cached)), NOW, run=2)}
    assert planned["process"].verdict == HIT
    assert (planned["report"].verdict, planned["report"].reasons) == (RUNS, ["a finally work always runs"])


def grid_plan(values: list[str]) -> tuple[DAGFlowSpec, Plan, WorkState]:
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                {
                    "name": "grid",
                    "container": {"image": "x", "command": ["train", "$(matrix.model)"]},
                    "matrix": {"model": values},
                    "outputs": [{"name": "score"}],
                    "maxParallel": 2,
                }
            ],
            "cache": {"enabled": True},
        }
    )
    state = WorkState(name="grid", phase=WorkPhase.RUNNING, job="f-2-grid")
    plan = Plan(start=[spec.works[0]], works=[state])
    plan.combinations["grid"] = [{"model": value} for value in values]
    plan.instances["grid"] = MatrixInstances(count=len(values), parallelism=2)
    return spec, plan, state


def test_a_partly_cached_matrix_work_runs_only_the_missing_instances_in_order() -> None:
    spec, plan, state = grid_plan(["a", "b", "c", "d", "e"])
    keys = matrix_work_keys(
        spec, spec.works[0], Values(run=2, flow="f", work="grid"), {}, plan.combinations["grid"]
    )
    cached = {"spec": {"key": keys.template.value, "createdAt": "2030-01-01T00:00:00Z", "run": 1}}
    cached["spec"].update(instanceKeys=[keys.instances[0], keys.instances[2]], outputs={"score": [0.1, 0.3]})
    found = match_instances([cached], keys, NOW, 86400)
    take_instances(plan, state, spec, keys, found)
    # The Job's index i runs the i-th missing instance.
    assert plan.combinations["grid"] == [{"model": "b"}, {"model": "d"}, {"model": "e"}]
    assert plan.instances["grid"] == MatrixInstances(count=3, parallelism=2, cached=2, job_indexes="1,3-4")
    assert (state.cached_instances, state.job_indexes) == (2, "1,3-4")
    assert state.instance_counts == {"Pending": 3, "Running": 0, "Succeeded": 2, "Failed": 0, "Stopped": 0}
    assert plan.cached_outputs["grid"] == {"score": [0.1, None, 0.3, None, None]}
    # What the Job gathers goes in place, in index order.
    gathered = merge_instances(plan.cached_outputs["grid"], parse_indexes("1,3-4"), {"score": [2, 4, 5]})
    assert gathered == {"score": [0.1, 2, 0.3, 4, 5]}


def test_a_partly_cached_matrix_records_only_the_instances_it_ran_in_entries_that_fit() -> None:
    spec, plan, state = grid_plan([str(index) for index in range(40)])
    keys = matrix_work_keys(
        spec, spec.works[0], Values(run=2, flow="f", work="grid"), {}, plan.combinations["grid"]
    )
    state.job_indexes = "5,30-39"
    flow = FlowRef(name="f", namespace="team", uid="u1")
    outputs = {"score": ["x" * 100_000 for _ in range(40)]}
    made = build_instance_entries(flow, spec.works[0], 2, state, keys, outputs, None, NOW)
    held = [key for entry in made for key in entry["spec"]["instanceKeys"]]
    assert held == [keys.instances[5], *keys.instances[30:40]]
    assert len(made) > 1 and len({entry["metadata"]["name"] for entry in made}) == len(made)
    for entry in made:
        assert entry["metadata"]["labels"][KEY_LABEL] == keys.template.value
        assert len(json.dumps(entry)) <= MAX_ENTRY_BYTES
        assert len(entry["spec"]["outputs"]["score"]) == len(entry["spec"]["instanceKeys"])


def test_a_failed_instance_of_a_partly_cached_matrix_is_named_by_its_own_index() -> None:
    job = JobObservation(
        name="j",
        work="grid",
        run=2,
        active=0,
        succeeded=1,
        failed=1,
        outcome="Failed",
        reason="FailedIndexes",
        message=None,
        started_at=None,
        finished_at=None,
        deleting=False,
        completions=2,
        failed_indexes="1",
    )
    combinations = [{"model": value} for value in "abcde"]
    assert failed_instances(job, combinations, [1, 4]) == [{"index": 4, "values": {"model": "e"}}]
    assert format_indexes([1, 3, 4, 9]) == "1,3-4,9" and format_indexes([]) == ""


def test_plan_tells_how_many_instances_of_a_matrix_work_hit() -> None:
    spec, plan, state = grid_plan(["a", "b", "c"])
    keys = matrix_work_keys(
        spec, spec.works[0], Values(run=1, flow="f", work="grid"), {}, plan.combinations["grid"]
    )
    state.phase, state.finished_at = WorkPhase.SUCCEEDED, "2030-01-01T00:00:00Z"
    flow = FlowRef(name="f", namespace="team", uid="u1")
    outputs = {"score": [1, 2, 3]}
    entries = build_instance_entries(
        flow, spec.works[0], 1, state, keys, outputs, None, NOW - timedelta(hours=1)
    )
    (same,) = plan_cache(spec, "f", {}, lookup(entries), NOW, run=2)
    assert same.verdict == HIT and same.cached_from == "3 of 3 instances hit; newest from run 1 of f"
    more, _, _ = grid_plan(["a", "b", "c", "d", "e"])
    (grown,) = plan_cache(more, "f", {}, lookup(entries), NOW, run=2)
    assert (grown.verdict, grown.reasons) == (
        MISS,
        ["3 of 5 instances hit; 2 run as one Job of 2 completions"],
    )
    other, _, _ = grid_plan(["x", "y"])
    (changed,) = plan_cache(other, "f", {}, lookup(entries), NOW, run=2)
    assert changed.reasons == ["none of its 2 instances hit: their values changed"]


def test_a_partly_cached_matrix_jobs_pods_mount_the_values_made_for_its_instances() -> None:
    spec, _, _ = grid_plan(["a", "b", "c"])
    flow = FlowRef(name="f", namespace="team", uid="u1")
    work = spec.works[0]

    def mounted(job: dict[str, Any]) -> str:
        volumes = job["spec"]["template"]["spec"]["volumes"]
        (name,) = [volume["configMap"]["name"] for volume in volumes if "configMap" in volume]
        return str(name)

    instances = MatrixInstances(count=2, parallelism=2, cached=1, job_indexes="1-2")
    job = build_job(flow, spec, work, 2, OperatorSettings(), Values(run=2, flow="f", work="grid"), instances)
    values = build_matrix_values(
        flow, work, 2, [{"model": "b"}, {"model": "c"}], {"score": [1, None, None]}, "1-2"
    )
    assert mounted(job) == values["metadata"]["name"]
    assert job["metadata"]["annotations"]["dagflow.dev/job-indexes"] == "1-2"
    assert json.loads(values["data"]["cached.json"]) == {"score": [1, None, None]}
    # Had the cache had other instances by the time the Job was made, its values would be others'.
    other = build_matrix_values(flow, work, 2, [{"model": "c"}], {"score": [1, 2, None]}, "2")
    assert other["metadata"]["name"] != values["metadata"]["name"]
    assert observe_job(job).job_indexes == "1-2" and observe_job(job).cached_instances == 1
