"""The cache's pure parts: which entry a lookup takes, a hit's status, an entry's shape, and plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dagflow.api.models import DAGFlowSpec, Work
from dagflow.client.cacheplan import HIT, MISS, RUNS, plan_cache
from dagflow.controller.builders import FlowRef
from dagflow.controller.caching import build_entry, entry_name, hit_status, newest_valid
from dagflow.controller.planner import WorkState
from dagflow.rules.cachekey import KEY_LABEL, work_cache_key
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
