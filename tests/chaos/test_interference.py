"""Other hands on a running flow: its Jobs, pods, Deployment and Service deleted, its spec edited by
two clients at once, and its labels, annotations and status patched by a third party."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.drills import DrillResult, layered, record, until_accepted, wait_for_run_end
from tests.e2e.flows import flow, jobs, pods_of_work, status, work, works_by_name
from tests.e2e.recorder import recording
from tests.kube import apply, get_json, kubectl, wait_for

pytestmark = pytest.mark.local_cluster


def running_pod(namespace: str, work_name: str) -> str | None:
    for pod in pods_of_work(namespace, work_name):
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            return str(pod["metadata"]["name"])
    return None


def uid_of(kind: str, name: str, namespace: str) -> str:
    found = kubectl("get", kind, name, "-o", "jsonpath={.metadata.uid}", namespace=namespace, check=False)
    return found.stdout if found.returncode == 0 else ""


@pytest.mark.usefixtures("operator")
def test_jobs_pods_and_the_serve_deployment_and_service_deleted_while_the_flow_runs(namespace: str) -> None:
    name = "battered"
    trainers = [f"t{index}" for index in range(8)]
    manifest = flow(
        name,
        [
            work("prep", duration="1s"),
            *[work(trainer, "prep", duration="8s") for trainer in trainers],
            work("web", *trainers, serve={"port": 8080}),
        ],
    )
    chosen = random.Random(16).sample(trainers, 5)
    jobs_deleted, pods_deleted = chosen[:2], chosen[2:]
    started = time.monotonic()
    with recording(namespace) as recorder:
        apply(manifest, namespace=namespace)
        pods = {
            trainer: wait_for(
                lambda t=trainer: running_pod(namespace, t), timeout=120, what=f"{trainer} to run"
            )
            for trainer in chosen
        }
        for trainer in jobs_deleted:
            kubectl("delete", "job", f"{name}-1-{trainer}", "--wait=false", namespace=namespace)
        for trainer in pods_deleted:
            kubectl("delete", "pod", pods[trainer], "--wait=false", namespace=namespace)
        wait_for_run_end(namespace, name, 1, timeout=180)
        gone = {kind: uid_of(kind, f"{name}-web", namespace) for kind in ("deployment", "service")}
        came_back = time.monotonic()
        for kind in gone:
            kubectl("delete", kind, f"{name}-web", namespace=namespace)
        wait_for(
            lambda: all(
                uid_of(kind, f"{name}-web", namespace) not in ("", old) for kind, old in gone.items()
            ),
            timeout=60,
            what="the Deployment and Service to come back",
        )
        final = wait_for_run_end(namespace, name, 1, timeout=120)
        back_after = time.monotonic() - came_back
        time.sleep(2)
    made = recorder.jobs_made()
    expected = {(name, work_name, 1): 1 for work_name in ["prep", *trainers]}
    expected |= {(name, trainer, 1): 2 for trainer in jobs_deleted}
    record(
        DrillResult(
            "2 running Jobs, 3 running pods, the serve Deployment and Service deleted",
            runs=1,
            disruptions=len(chosen) + 2,
            jobs_made=sum(made.values()),
            jobs_expected=sum(expected.values()),
            recover_seconds=[back_after],
            seconds=time.monotonic() - started,
        )
    )
    assert final["phase"] == "Serving", final
    assert dict(made) == expected, "a deleted Job is made again once; no other Job is made twice"
    by_name = works_by_name(final)
    # A deleted pod is replaced by its Job: that is no failed attempt, so no retry is used up.
    assert {trainer: by_name[trainer]["attempts"] for trainer in pods_deleted} == dict.fromkeys(
        pods_deleted, 1
    )
    failed = {job["metadata"]["name"]: job["status"].get("failed", 0) for job in jobs(namespace)}
    assert not any(failed.values()), failed


def edit_args(namespace: str, name: str, work_index: int, value: str) -> None:
    patch = [{"op": "replace", "path": f"/spec/works/{work_index}/container/args", "value": [value]}]
    until_accepted(
        "patch", "dagflow", name, "--type=json", "-p", json.dumps(patch), namespace=namespace, what="an edit"
    )


def in_threads(*actions: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(action: Callable[[], None]) -> None:
        try:
            action()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors


@pytest.mark.usefixtures("operator")
def test_concurrent_spec_edits_and_third_party_patches_of_labels_annotations_and_status(
    namespace: str,
) -> None:
    name = "edited"
    manifest = layered(name, branches=4, depth=2, duration="2s")
    edited = next(index for index, entry in enumerate(manifest["spec"]["works"]) if entry["name"] == "b0-1")
    rng = random.Random(16)
    edits = 6
    tampered = 0

    def editor(who: str) -> Callable[[], None]:
        def edit() -> None:
            for number in range(edits // 2):
                time.sleep(rng.uniform(0.5, 4))
                edit_args(namespace, name, edited, f"--{who}-{number}")

        return edit

    def third_party() -> None:
        nonlocal tampered
        for number in range(8):
            time.sleep(rng.uniform(0.3, 1.5))
            kubectl("label", "dagflow", name, f"team=t{number}", "--overwrite", namespace=namespace)
            kubectl(
                "annotate",
                "dagflow",
                name,
                f"audit.example.com/seen={number}",
                "--overwrite",
                namespace=namespace,
            )
            for job in jobs(namespace):
                kubectl(
                    "label",
                    "job",
                    job["metadata"]["name"],
                    f"audited=n{number}",
                    "--overwrite",
                    namespace=namespace,
                    check=False,
                )
            # A stray controller writes the flow's status as if it were its own.
            status_patch = {"status": {"phase": "Failed", "message": "tampered", "strayField": number}}
            kubectl(
                "patch",
                "dagflow",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(status_patch),
                namespace=namespace,
            )
            tampered += 1

    started = time.monotonic()
    with recording(namespace) as recorder:
        apply(manifest, namespace=namespace)
        wait_for(lambda: status(namespace, name).get("run") == 1, timeout=60, what="run 1 to start")
        in_threads(editor("alice"), editor("bob"), third_party)
        flow_object = get_json("dagflow", name, namespace=namespace)
        last_args = flow_object["spec"]["works"][edited]["container"]["args"]

        def settled() -> dict[str, Any] | None:
            current = get_json("dagflow", name, namespace=namespace)
            found = current.get("status") or {}
            if found.get("observedGeneration") == current["metadata"]["generation"] and found.get(
                "phase"
            ) in ("Succeeded", "Failed"):
                return found
            return None

        final: dict[str, Any] = wait_for(settled, timeout=240, interval=0.5, what=f"{name} to settle")
        time.sleep(2)
    made = recorder.jobs_made()
    record(
        DrillResult(
            "6 spec edits from 2 clients, 8 rounds of label, annotation and status patches",
            runs=int(final["run"]),
            disruptions=edits + tampered,
            jobs_made=sum(made.values()),
            jobs_expected=len(made),
            seconds=time.monotonic() - started,
        )
    )
    assert final["phase"] == "Succeeded", final
    assert final.get("message") != "tampered", final
    assert set(made.values()) == {1}, {key: count for key, count in made.items() if count != 1}
    last_run = int(final["run"])
    work_names = [entry["name"] for entry in manifest["spec"]["works"]]
    assert {work_name for (_, work_name, run) in made if run == last_run} == set(work_names)
    last_job = get_json("job", f"{name}-{last_run}-b0-1", namespace=namespace)
    assert last_job["metadata"]["labels"]["dagflow.dev/run"] == str(last_run)
    assert last_job["spec"]["template"]["spec"]["containers"][0]["args"] == last_args
    labels = get_json("dagflow", name, namespace=namespace)["metadata"]
    assert labels["labels"]["team"] == "t7" and labels["annotations"]["audit.example.com/seen"] == "7"
