"""Caching on the local cluster: reruns that run nothing, misses where inputs changed (parameters,
an upstream that ran again through a volume), maxAge, entries no user can forge, and `dagflow plan`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import objects_of, render
from tests.e2e.flows import create, flow, status, wait_for_phase, work, works_by_name
from tests.e2e.test_runs import jobs_of_run, request, wait_for_run
from tests.kube import VENV_BIN, get_json, grant, kubectl, kubectl_as, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

DAGFLOW = str(VENV_BIN / "dagflow")
DATA_VOLUME = [{"name": "data", "emptyDir": {}}]
DATA_MOUNT = [{"name": "data", "mountPath": "/data"}]


def dagflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DAGFLOW, *args], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )


def reported(outputs: dict[str, Any]) -> dict[str, str]:
    return {"sim.dagflow.dev/termination-message": json.dumps(outputs)}


def pipeline(name: str, train_args: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    """process -> train (reads process's output, and the lr parameter) -> evaluate (reads what train
    left in a volume); report depends on process only. Caching on for the whole flow."""
    works = [
        work("process", outputs=[{"name": "rows"}], annotations=reported({"rows": "1200"})),
        work(
            "train",
            "process",
            container={
                "image": "example.invalid/ml:1.0",
                "args": train_args or ["--rows", "$(works.process.outputs.rows)", "--lr", "$(params.lr)"],
                "volumeMounts": DATA_MOUNT,
            },
            volumes=DATA_VOLUME,
            outputs=[{"name": "model"}],
            annotations=reported({"model": "m-1"}),
        ),
        work(
            "evaluate",
            "train",
            container={
                "image": "example.invalid/ml:1.0",
                "args": ["--model", "/data/model"],
                "volumeMounts": DATA_MOUNT,
            },
            volumes=DATA_VOLUME,
        ),
        work("report", "process"),
    ]
    return flow(
        name,
        works,
        params=[{"name": "lr", "default": "0.1"}],
        cache=spec.pop("cache", {"enabled": True}),
        **spec,
    )


def first_run(namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    create(manifest, namespace)
    done = wait_for_phase(namespace, manifest["metadata"]["name"])
    assert done["phase"] == "Succeeded", done
    return done


def jobs_of_run_names(namespace: str, run: int) -> list[str]:
    return [
        job["metadata"]["name"]
        for job in get_json("jobs", namespace=namespace)["items"]
        if job["metadata"]["labels"]["dagflow.dev/run"] == str(run)
    ]


def entries(namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json("dagflowcacheentries", namespace=namespace)["items"]
    return items


def test_a_rerun_with_nothing_changed_runs_no_job_and_succeeds_at_once(
    namespace: str, running_operator: OperatorProcess
) -> None:
    first_run(namespace, pipeline("ml"))
    assert sorted(entry["spec"]["work"] for entry in entries(namespace)) == [
        "evaluate",
        "process",
        "report",
        "train",
    ]
    asked = time.monotonic()
    request(namespace, "ml", "rerun", "again")
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed", timeout=30)
    took = time.monotonic() - asked
    assert done["phase"] == "Succeeded", done
    assert took < 3, f"a rerun with nothing changed took {took:.1f}s"
    assert jobs_of_run(namespace, 2) == []
    works = works_by_name(done)
    assert {name: entry["cachedFrom"]["run"] for name, entry in works.items()} == {
        "process": 1,
        "train": 1,
        "evaluate": 1,
        "report": 1,
    }
    # It ran no Job in this run; the Job of run 1 is named as where its outcome came from.
    assert "job" not in works["process"]
    assert works["process"]["cachedFrom"]["job"] in jobs_of_run_names(namespace, 1)
    assert works["train"]["outputs"] == {"model": "m-1"}  # restored from the entry
    shown = dagflow("get", "ml", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("Succeeded (cached)") == 4, shown.stdout


def test_a_changed_parameter_reruns_only_the_works_using_it_and_those_downstream(
    namespace: str, running_operator: OperatorProcess
) -> None:
    first_run(namespace, pipeline("ml"))
    kubectl(
        "annotate", "dagflow", "ml", 'dagflow.dev/params={"lr":"0.2"}', "--overwrite", namespace=namespace
    )
    request(namespace, "ml", "rerun", "lr")
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert jobs_of_run(namespace, 2) == ["evaluate", "train"]
    works = works_by_name(done)
    assert [name for name, entry in works.items() if "cachedFrom" in entry] == ["process", "report"]


def test_an_upstream_that_ran_again_invalidates_what_reads_its_volume(
    namespace: str, running_operator: OperatorProcess
) -> None:
    """evaluate's own spec never changes: only train, which writes the volume it reads, does."""
    first_run(namespace, pipeline("ml"))
    kubectl(
        "patch",
        "dagflow",
        "ml",
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/works/1/container/args/3", "value": "0.3"}]),
        namespace=namespace,
    )
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert jobs_of_run(namespace, 2) == ["evaluate", "train"]


def test_a_work_that_is_not_cached_makes_everything_downstream_run(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = pipeline("ml")
    manifest["spec"]["works"][1]["cache"] = {"enabled": False}  # train
    first_run(namespace, manifest)
    request(namespace, "ml", "rerun", "again")
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed")
    assert jobs_of_run(namespace, 2) == ["evaluate", "train"]
    assert "cachedFrom" in works_by_name(done)["report"]


def test_an_entry_past_max_age_is_not_used(namespace: str, running_operator: OperatorProcess) -> None:
    first_run(namespace, pipeline("ml", cache={"enabled": True, "maxAge": "3s"}))
    time.sleep(4)
    request(namespace, "ml", "rerun", "late")
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert jobs_of_run(namespace, 2) == ["evaluate", "process", "report", "train"]


def test_a_rerun_without_the_cache_runs_everything(namespace: str, running_operator: OperatorProcess) -> None:
    first_run(namespace, pipeline("ml"))
    result = dagflow("rerun", "ml", "--no-cache", "-n", namespace)
    assert result.returncode == 0, result.stderr
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed")
    assert done["noCache"] is True
    assert jobs_of_run(namespace, 2) == ["evaluate", "process", "report", "train"]
    # A plain rerun after it uses the cache again.
    result = dagflow("rerun", "ml", "-n", namespace)
    done = wait_for_run(namespace, "ml", 3, "Succeeded", "Failed")
    assert jobs_of_run(namespace, 3) == []
    assert "noCache" not in done


def test_a_flow_made_again_under_its_name_takes_the_cache(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = pipeline("ml")
    first_run(namespace, manifest)
    kubectl("delete", "dagflow", "ml", "--wait=true", namespace=namespace)
    create(manifest, namespace)
    done = wait_for_phase(namespace, "ml")
    assert done["phase"] == "Succeeded"
    assert all("cachedFrom" in entry for entry in done["works"])
    assert get_json("jobs", namespace=namespace)["items"] == []


def test_a_user_who_may_create_flows_and_config_maps_cannot_forge_an_entry(
    namespace: str, running_operator: OperatorProcess
) -> None:
    first_run(namespace, pipeline("ml"))
    user = "mallory"
    grant(
        namespace,
        "flows-and-config-maps",
        [
            {"apiGroups": ["dagflow.dev"], "resources": ["dagflows"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]},
            # Even one given the entries by RBAC (a wildcard over the group, say) is refused.
            {"apiGroups": ["dagflow.dev"], "resources": ["dagflowcacheentries"], "verbs": ["*"]},
        ],
        {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"},
    )
    genuine = next(entry for entry in entries(namespace) if entry["spec"]["work"] == "train")
    forged = {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlowCacheEntry",
        "metadata": {"name": "forged", "labels": genuine["metadata"]["labels"]},
        "spec": {**genuine["spec"], "outputs": {"model": "evil"}, "createdAt": "2099-01-01T00:00:00Z"},
    }
    made = kubectl_as(user, "create", namespace=namespace, document=forged)
    assert made.returncode != 0
    assert "mallory may not write DAGFlow cache entries" in made.stderr, made.stderr
    changed = kubectl_as(
        user,
        "patch",
        "dagflowcacheentry",
        genuine["metadata"]["name"],
        "--type=merge",
        "-p",
        json.dumps({"spec": {"outputs": {"model": "evil"}}}),
        namespace=namespace,
    )
    assert changed.returncode != 0
    assert "may not write DAGFlow cache entries" in changed.stderr, changed.stderr
    # Deleting one is allowed: the work just runs again.
    removed = kubectl_as(
        user, "delete", "dagflowcacheentry", genuine["metadata"]["name"], namespace=namespace
    )
    assert removed.returncode == 0, removed.stderr
    request(namespace, "ml", "rerun", "after")
    done = wait_for_run(namespace, "ml", 2, "Succeeded", "Failed")
    assert works_by_name(done)["train"]["outputs"] == {"model": "m-1"}
    # train ran again with the same inputs, so what depends on it keeps its key and its entry.
    assert jobs_of_run(namespace, 2) == ["train"]


def test_plan_tells_hits_and_why_each_miss_misses(
    namespace: str, running_operator: OperatorProcess, tmp_path: Path
) -> None:
    first_run(namespace, pipeline("ml"))
    same = dagflow("plan", "ml", "-n", namespace)
    assert same.returncode == 0, same.stderr
    assert "process: hit (run 1 of ml)" in same.stdout
    assert "4 of 4 works from the cache" in same.stdout
    assert "image example.invalid/ml:1.0 is a tag: a tag moved to another image is not seen" in same.stdout

    def plan_of(manifest: dict[str, Any], *args: str) -> dict[str, str]:
        path = tmp_path / "flow.yaml"
        path.write_text(yaml.safe_dump(manifest))
        result = dagflow("plan", str(path), "-n", namespace, *args)
        assert result.returncode == 0, result.stderr
        return {
            line.split(":", 1)[0]: line.split(":", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line and not line.startswith(" ") and ":" in line
        }

    changed_arg = plan_of(
        pipeline("ml", train_args=["--rows", "$(works.process.outputs.rows)", "--lr", "0.5"])
    )
    assert changed_arg["train"] == "miss: args[3] changed"
    assert changed_arg["evaluate"] == "miss: upstream train re-ran"
    assert changed_arg["process"].startswith("hit")
    assert changed_arg["report"].startswith("hit")

    assert plan_of(pipeline("ml"), "--param", "lr=0.9")["train"] == "miss: args[3] changed"

    moved = pipeline("ml")
    moved["spec"]["works"][0]["container"]["image"] = "example.invalid/ml:2.0"
    planned = plan_of(moved)
    assert planned["process"] == "miss: image changed"
    assert planned["train"] == "miss: upstream process re-runs: its outputs are known once it ran"
    assert planned["evaluate"].startswith("miss: upstream train re-runs")
    # Nothing was created.
    assert jobs_of_run(namespace, 2) == []
    assert status(namespace, "ml")["run"] == 1


def matrix_job(namespace: str, run: int, work_name: str) -> dict[str, Any]:
    (job,) = [
        job
        for job in get_json("jobs", namespace=namespace)["items"]
        if job["metadata"]["labels"]["dagflow.dev/run"] == str(run)
        and job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
    ]
    return job


def job_values(namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The values the launcher gives each index of a matrix Job, from the ConfigMap its pods mount."""
    (name,) = [
        volume["configMap"]["name"]
        for volume in job["spec"]["template"]["spec"]["volumes"]
        if "configMap" in volume
    ]
    values: list[dict[str, Any]] = json.loads(
        get_json("configmap", name, namespace=namespace)["data"]["values.json"]
    )
    return values


def test_a_matrix_work_is_cached_instance_by_instance_with_its_gathered_outputs(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = work(
        "train",
        matrix={"model": ["a", "b", "c"]},
        annotations=reported({"score": "first-{index}"}),
        outputs=[{"name": "score"}],
    )
    train["container"]["command"] = ["python", "-m", "train", "--model", "$(matrix.model)"]
    pick = work("pick", "train")
    pick["container"]["args"] = ["--scores", "$(works.train.outputs.score)"]
    first_run(namespace, flow("grid", [train, pick], cache={"enabled": True}))
    request(namespace, "grid", "rerun", "again")
    done = wait_for_run(namespace, "grid", 2, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert jobs_of_run(namespace, 2) == []
    works = works_by_name(done)
    assert works["train"]["outputs"] == {"score": ["first-0", "first-1", "first-2"]}
    assert works["train"]["instanceCounts"] == {"Succeeded": 3}
    assert works["train"]["cachedFrom"]["run"] == 1
    # One more value: only its instance runs, as index 0 of a Job of one completion; the gathered
    # outputs keep index order, and pick, whose upstream changed, runs.
    train["matrix"] = {"model": ["a", "b", "c", "d"]}
    train["annotations"] = reported({"score": "third-{index}"})
    create(flow("grid", [train, pick], cache={"enabled": True}), namespace)
    done = wait_for_run(namespace, "grid", 3, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert jobs_of_run(namespace, 3) == ["pick", "train"]
    job = matrix_job(namespace, 3, "train")
    assert job["spec"]["completions"] == 1
    assert job_values(namespace, job) == [{"model": "d"}]
    works = works_by_name(done)
    assert works["train"]["cachedInstances"] == 3 and "cachedFrom" not in works["train"]
    assert works["train"]["instanceCounts"]["Succeeded"] == 4 and works["train"]["instances"] == 4
    outputs = json.loads(
        get_json("configmap", works["train"]["outputsConfigMap"], namespace=namespace)["data"]["outputs.json"]
    )
    assert outputs == {"score": ["first-0", "first-1", "first-2", "third-0"]}
    # The instance that ran is cached too: the next rerun runs nothing.
    request(namespace, "grid", "rerun", "fourth")
    done = wait_for_run(namespace, "grid", 4, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded" and jobs_of_run(namespace, 4) == [], done
    assert works_by_name(done)["train"]["outputs"] == {"score": ["first-0", "first-1", "first-2", "third-0"]}


def test_a_rerun_where_3_of_1000_instances_changed_runs_a_job_of_3(
    namespace: str, running_operator: OperatorProcess
) -> None:
    shards: list[Any] = list(range(1000))
    train = work("train", matrix={"shard": shards}, annotations=reported({"part": "run1-{index}"}))
    train["outputs"] = [{"name": "part"}]
    train["container"]["command"] = ["train", "--shard", "$(matrix.shard)"]
    merge = work("merge", "train")
    merge["container"]["args"] = ["--parts", "$(works.train.outputs.part)"]
    first_run(namespace, flow("wide", [train, merge], cache={"enabled": True}))
    changed = [10, 500, 999]
    for index in changed:
        shards[index] = f"new-{index}"
    train["annotations"] = reported({"part": "run2-{index}"})
    create(flow("wide", [train, merge], cache={"enabled": True}), namespace)
    done = wait_for_run(namespace, "wide", 2, "Succeeded", "Failed", timeout=180)
    assert done["phase"] == "Succeeded", done
    job = matrix_job(namespace, 2, "train")
    assert job["spec"]["completions"] == 3
    assert job_values(namespace, job) == [{"shard": f"new-{index}"} for index in changed]
    works = works_by_name(done)
    assert works["train"]["cachedInstances"] == 997 and works["train"]["jobIndexes"] == "10,500,999"
    assert works["train"]["instanceCounts"]["Succeeded"] == 1000
    outputs = json.loads(
        get_json("configmap", works["train"]["outputsConfigMap"], namespace=namespace)["data"]["outputs.json"]
    )
    expected = [f"run1-{index}" for index in range(1000)]
    for job_index, index in enumerate(changed):
        expected[index] = f"run2-{job_index}"
    assert outputs == {"part": expected}
    planned = dagflow("plan", "wide", "-n", namespace)
    assert planned.returncode == 0, planned.stderr
    assert "1000 of 1000 instances hit" in planned.stdout, planned.stdout


@pytest.fixture
def cache_entries_policy(operator: OperatorProcess) -> Iterator[None]:
    """The chart's policy that keeps cache entries the operator's, applied."""
    installed = [
        obj
        for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        for obj in objects_of(render(), kind)
        if obj["metadata"]["name"].endswith("-cache-entries")
    ]
    assert len(installed) == 2
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(installed))
    yield
    for obj in installed:
        kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")


def test_the_charts_policy_refuses_a_forged_entry_while_no_webhook_answers(
    namespace: str, cache_entries_policy: None, without_shared_operator: None
) -> None:
    """With the operator (and its webhook) down, the API server's own policy still refuses."""
    user = "mallory"
    grant(
        namespace,
        "entries",
        [{"apiGroups": ["dagflow.dev"], "resources": ["dagflowcacheentries"], "verbs": ["*"]}],
        {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"},
    )
    forged = {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlowCacheEntry",
        "metadata": {"name": "forged", "labels": {"dagflow.dev/cache-key": "0" * 32}},
        "spec": {
            "key": "0" * 32,
            "work": "train",
            "flow": "ml",
            "run": 1,
            "createdAt": "2099-01-01T00:00:00Z",
        },
    }

    def refused() -> str | None:
        made = kubectl_as(user, "create", namespace=namespace, document=forged)
        if made.returncode == 0:
            # Made before the API server loaded the policy just applied: removed, and tried again.
            kubectl("delete", "dagflowcacheentry", "forged", namespace=namespace)
            return None
        return made.stderr

    message = wait_for(refused, timeout=30, what="the policy to refuse a forged entry")
    assert "mallory may not write DAGFlow cache entries" in message, message
