"""The invariants of the simulation, each a function named for what it holds, in one place.

`STEP_INVARIANTS` hold after every step of a history; `SETTLED_INVARIANTS` once the world has
settled after the last action of anyone but the operator and its controllers (`World.settle`).
Each raises `Violation` with what it saw. To add one: write a function of the world here and put it
in the list it belongs to (docs/testing.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from dagflow.api.models import CACHE_ENTRY_PLURAL, PLURAL, DAGFlowSpec
from dagflow.controller.history import history_limit
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming
from tests.sim.apiserver import MAX_OBJECT_BYTES, OPERATOR, controller_uid, object_size
from tests.sim.controllers import COMPLETION_INDEX, MESSAGE_ANNOTATION, termination_message
from tests.sim.world import NAMESPACE, Violation, World

Invariant = Callable[[World], None]

DONE_PHASES = frozenset({"Succeeded", "Failed", "Skipped", "Serving", "Stopped"})
WORK_PHASE_RANK = {
    "Pending": 0,
    "Running": 1,
    "Serving": 2,
    "Succeeded": 3,
    "Failed": 3,
    "Skipped": 3,
    "Stopped": 3,
}
FLOW_PHASE_RANK = {"Pending": 0, "Running": 1, "Serving": 2, "Succeeded": 3, "Failed": 3, "Stopped": 4}


def _run_of(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(naming.RUN_LABEL, ""))


def _work_of(obj: Mapping[str, Any]) -> str:
    return naming.work_of(obj.get("metadata") or {})


def _finished(job: Mapping[str, Any]) -> str | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return None


def one_job_per_run_and_work(world: World) -> None:
    """Never two Jobs for one (flow uid, run, work): a Job is made again for the same run only after
    someone other than the operator deleted the one before."""
    record = world.record
    for index in range(record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource != "jobs":
            continue
        if write.after is None or (
            write.after["metadata"].get("deletionTimestamp") and write.before is not None
        ):
            uid = (write.before or {}).get("metadata", {}).get("uid")
            if uid and uid not in record.deleted_by:
                record.deleted_by[uid] = write.actor
                record.deleted_by[write.name] = write.actor
            continue
        if write.verb != "create" or write.actor != OPERATOR:
            continue
        key = (str(controller_uid(write.after)), _run_of(write.after), _work_of(write.after))
        made = record.jobs_made.setdefault(key, [])
        if made:
            earlier = made[-1]
            by = record.deleted_by.get(earlier)
            if by is None or by == OPERATOR:
                raise Violation(
                    "one-job-per-run-and-work",
                    f"Job {write.name} made again for {key}: the one before ({earlier}) was "
                    + ("still there" if by is None else "deleted by the operator itself"),
                )
        made.append(write.after["metadata"]["uid"])


def only_owned_objects_changed(world: World) -> None:
    """Never a change to an object the flow does not own (by uid), whatever its name: what the
    operator creates is the flow's, what it patches, applies or deletes was the flow's before."""
    record = world.record
    for index in range(record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.actor != OPERATOR:
            continue
        flow_key, flow_uid = record.write_flows.get(index, (None, None))
        if write.resource == PLURAL:
            uid = (write.before or {}).get("metadata", {}).get("uid")
            if uid != flow_uid:
                raise Violation(
                    "only-owned-objects-changed",
                    f"status of {write.name} (uid {uid}) written for {flow_key} uid {flow_uid}",
                )
            continue
        if write.resource == CACHE_ENTRY_PLURAL:
            # Entries belong to no flow (they outlive it): a pass only creates them, for its own flow.
            recorded = ((write.after or {}).get("spec") or {}).get("flow")
            if write.verb != "create" or flow_key is None or recorded != flow_key[1]:
                raise Violation(
                    "only-owned-objects-changed",
                    f"{write.verb} of cache entry {write.name} (of flow {recorded}) by a pass of {flow_key}",
                )
            continue
        target = write.after if write.verb == "create" else write.before
        owner = controller_uid(target or {})
        if owner != flow_uid:
            raise Violation(
                "only-owned-objects-changed",
                f"{write.verb} of {write.resource}/{write.name} owned by {owner},"
                f" by a pass of {flow_key} (uid {flow_uid})",
            )


def flow_fits_and_no_write_refused(world: World) -> None:
    """The flow object always fits in etcd, and the operator never has a write refused for its size."""
    for flow in world.flows():
        if object_size(flow) > MAX_OBJECT_BYTES:
            raise Violation("flow-fits", f"{flow['metadata']['name']} is {object_size(flow)} bytes")
    if world.refused:
        raise Violation("flow-fits", f"a write refused for its size: {world.refused[0]}")


def phases_move_forward(world: World) -> None:
    """Within a run, the flow's and each batch work's phase only move forward; observedGeneration
    and run never go back."""
    for flow in world.flows():
        uid = flow["metadata"]["uid"]
        status = flow.get("status") or {}
        before = world.record.statuses.get(uid)
        world.record.statuses[uid] = status
        if not before or not status:
            continue
        name = flow["metadata"]["name"]
        for field in ("run", "observedGeneration"):
            if int(status.get(field) or 0) < int(before.get(field) or 0):
                raise Violation(
                    "phases-move-forward",
                    f"{name}: {field} went from {before.get(field)} to {status.get(field)}",
                )
        if status.get("run") != before.get("run"):
            continue
        old, new = before.get("phase"), status.get("phase")
        if (
            old
            and new
            and old != new
            and FLOW_PHASE_RANK.get(new, 0) < FLOW_PHASE_RANK.get(old, 0)
            and old != "Serving"
        ):
            raise Violation(
                "phases-move-forward", f"{name}: run {status.get('run')} went from {old} to {new}"
            )
        serve_works = {work["name"] for work in flow["spec"].get("works") or [] if "serve" in work}
        earlier = {work["name"]: work for work in before.get("works") or []}
        for work in status.get("works") or []:
            if work["name"] in serve_works or work["name"] not in earlier:
                continue
            was, now = earlier[work["name"]].get("phase") or "Pending", work.get("phase") or "Pending"
            # A work whose Job someone else deleted starts again from Pending.
            lost = world.record.deleted_by.get(earlier[work["name"]].get("job") or "") not in (None, OPERATOR)
            if WORK_PHASE_RANK.get(now, 0) < WORK_PHASE_RANK.get(was, 0) and not (lost and was == "Running"):
                raise Violation(
                    "phases-move-forward",
                    f"{name}: work {work['name']} of run {status.get('run')} went from {was} to {now}",
                )


def finally_works_after_the_works(world: World) -> None:
    """A finally work starts only once every work of its run has ended."""
    for flow in world.flows():
        status = flow.get("status") or {}
        works = status.get("works") or []
        begun = [
            work["name"]
            for work in works
            if work.get("finally") and work.get("phase") not in (None, "Pending")
        ]
        # A serve work that served may lose its pods later: only batch works are held to it. A work
        # whose Job someone else deleted runs again, and the works after it wait again (its end may
        # not have been recorded yet): the run's works are then not held to it.
        serve_works = {work["name"] for work in flow["spec"].get("works") or [] if "serve" in work}
        run = int(status.get("run") or 0)
        lost = any(
            world.record.deleted_by.get(naming.job_name(flow["metadata"]["name"], run, work["name"]))
            not in (None, OPERATOR)
            for work in works
        )
        unfinished = [
            work["name"]
            for work in works
            if not work.get("finally")
            and work["name"] not in serve_works
            and work.get("phase") not in DONE_PHASES
        ]
        if begun and unfinished and not lost and status.get("phase") != "Stopped":
            raise Violation(
                "finally-works-after-the-works",
                f"{flow['metadata']['name']}: finally work {begun[0]} of run {status.get('run')} began"
                f" while {unfinished[0]} is {next(w['phase'] for w in works if w['name'] == unfinished[0])}",
            )


def request_acted_on_once(world: World) -> None:
    """Every request token is acted on once: no two runs begin (or stops happen) for one token."""
    for flow in world.flows():
        uid = flow["metadata"]["uid"]
        status = flow.get("status") or {}
        before = world.record.statuses.get(uid) or {}
        if int(status.get("run") or 0) <= int(before.get("run") or 0):
            continue
        runs = status.get("runs") or []
        trigger = runs[-1].get("trigger") if runs else None
        kind = {"Rerun": "rerun", "Retry": "retry"}.get(str(trigger))
        token = (status.get("handledRequests") or {}).get(kind) if kind else None
        if token is None:
            continue
        used = world.record.tokens.setdefault((uid, kind or ""), set())
        if token in used:
            raise Violation(
                "request-acted-on-once",
                f"{flow['metadata']['name']}: {kind} {token} began run {status.get('run')} too",
            )
        used.add(token)


def outputs_kept_exactly(world: World) -> None:
    """A work's outputs in the status are what its pod reported, value for value (JSON null too)."""
    for flow in world.flows():
        status = flow.get("status") or {}
        if status.get("observedGeneration") != flow["metadata"].get("generation"):
            continue  # the status may still be of the spec before
        works = {work["name"]: work for work in flow["spec"].get("works") or []}
        for work in status.get("works") or []:
            spec = works.get(work["name"])
            if spec is None or "outputs" not in work or "matrix" in spec:
                continue
            if work.get("cachedFrom"):
                # Taken from the cache: the outputs of the run that ran it, as its entry of the
                # work's key keeps them (`cache_entries_record_what_pods_reported` checks those).
                # The entry may be another work's of the same key: a work's name is not in its key.
                source = work["cachedFrom"]
                kept = [
                    entry["spec"].get("outputs")
                    for entry in world.server.items(CACHE_ENTRY_PLURAL, NAMESPACE)
                    if (entry["spec"]["flow"], entry["spec"]["run"], entry["spec"]["key"])
                    == (source["flow"], source["run"], work.get("cacheKey"))
                ]
                if kept and work["outputs"] not in kept:
                    raise Violation(
                        "outputs-kept-exactly",
                        f"{flow['metadata']['name']}: cached work {work['name']} has outputs"
                        f" {work['outputs']}, its entries keep {kept}",
                    )
                continue
            message = termination_message((spec.get("annotations") or {}).get(MESSAGE_ANNOTATION, ""), "0")
            reported = json.loads(message) if message else {}
            expected = {output["name"]: reported.get(output["name"]) for output in spec.get("outputs") or []}
            if work["outputs"] != expected:
                raise Violation(
                    "outputs-kept-exactly",
                    f"{flow['metadata']['name']}: work {work['name']} has outputs {work['outputs']},"
                    f" its pod reported {expected}",
                )


def cache_entries_record_what_pods_reported(world: World) -> None:
    """An entry the operator writes keeps what the pod of the Job it names reported, value for value."""
    for index in range(world.record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource != CACHE_ENTRY_PLURAL or write.verb != "create" or write.after is None:
            continue
        spec = write.after["spec"]
        job = world.server.get("jobs", NAMESPACE, spec.get("job") or "")
        if job is None:
            continue
        # A matrix work's entry holds the instances its Job ran, in the Job's index order: its
        # position p is what the pod of index p reported (when one entry holds them all).
        matrix = spec.get("instances") is not None
        if matrix and len(spec.get("instanceKeys") or []) != int(job["spec"].get("completions") or 1):
            continue
        uid = job["metadata"]["uid"]
        for pod in world.server.items("pods", NAMESPACE):
            if (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/controller-uid") != uid:
                continue
            if (pod.get("status") or {}).get("phase") != "Succeeded":
                continue
            statuses = pod["status"].get("containerStatuses") or []
            message = statuses[0]["state"]["terminated"].get("message") if statuses else ""
            reported = json.loads(message) if message else {}
            kept = spec.get("outputs") or {}
            if matrix:
                position = int((pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX, "0"))
                kept = {name: values[position] for name, values in kept.items()}
            expected = {name: reported.get(name) for name in kept}
            if kept != expected:
                raise Violation(
                    "cache-entries-record-what-pods-reported",
                    f"entry {write.name} keeps {kept}, the pod of Job {spec.get('job')} reported {expected}",
                )


def only_owned_config_maps_used(world: World) -> None:
    """A Job the operator makes mounts, and a status it writes names, only ConfigMaps the flow owns:
    an object planted under the name must never feed its pods or its outputs."""
    for index in range(world.record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.actor != OPERATOR or write.after is None:
            continue
        _, flow_uid = world.record.write_flows.get(index, (None, None))
        if write.resource == "jobs" and write.verb == "create":
            volumes = write.after["spec"]["template"]["spec"].get("volumes") or []
            names = [volume["configMap"]["name"] for volume in volumes if "configMap" in volume]
        elif write.resource == PLURAL:
            names = [
                work["outputsConfigMap"]
                for work in (write.after.get("status") or {}).get("works") or []
                if work.get("outputsConfigMap")
            ]
            previous = {
                work.get("outputsConfigMap")
                for work in ((write.before or {}).get("status") or {}).get("works") or []
            }
            names = [name for name in names if name not in previous]
        else:
            continue
        for name in names:
            config_map = world.server.get("configmaps", NAMESPACE, name)
            if config_map is not None and controller_uid(config_map) != flow_uid:
                raise Violation(
                    "only-owned-config-maps-used",
                    f"{write.resource}/{write.name} uses ConfigMap {name},"
                    f" owned by {controller_uid(config_map)}"
                    f" and not by the flow (uid {flow_uid})",
                )


def schedule_ticks_start_one_run_each(world: World) -> None:
    """A scheduled run begins for a tick that has come and that no run began for before; with
    `Forbid`, never in place of a run still active. `lastScheduleTime` never goes back."""
    now = world.clock.wall()
    for flow in world.flows():
        status = flow.get("status") or {}
        name = flow["metadata"]["name"]
        uid = flow["metadata"]["uid"]
        before = world.record.statuses.get(uid) or {}
        # The operator decides from the spec it has seen, which may be older than the flow's now.
        specs = world.record.specs.setdefault(uid, {})
        specs[int(flow["metadata"].get("generation") or 1)] = flow["spec"]
        decided_from = specs.get(int(status.get("observedGeneration") or 0), flow["spec"])
        last, earlier = status.get("lastScheduleTime"), before.get("lastScheduleTime")
        if last and _time(last) > now:
            raise Violation("schedule-ticks-start-one-run-each", f"{name}: last tick {last} is still to come")
        if last and earlier and _time(last) < _time(earlier):
            raise Violation(
                "schedule-ticks-start-one-run-each", f"{name}: last tick went back from {earlier} to {last}"
            )
        runs = status.get("runs") or []
        if int(status.get("run") or 0) <= int(before.get("run") or 0) or not runs:
            continue
        if runs[-1].get("trigger") != "Schedule":
            continue
        if not last or (earlier and _time(last) <= _time(earlier)):
            raise Violation(
                "schedule-ticks-start-one-run-each",
                f"{name}: scheduled run {status.get('run')} began without a new tick (last {last})",
            )
        replaced = [
            summary
            for summary in runs[:-1]
            if summary.get("phase") == "Stopped" and summary.get("finishedAt") == runs[-1].get("startedAt")
        ]
        was_active = before.get("phase") in ("Pending", "Running") and before.get("run")
        if (decided_from.get("concurrencyPolicy") or "Forbid") == "Forbid" and replaced and was_active:
            raise Violation(
                "schedule-ticks-start-one-run-each",
                f"{name}: scheduled run {status.get('run')} replaced active run {before.get('run')}"
                " under Forbid",
            )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


STEP_INVARIANTS: list[Invariant] = [
    one_job_per_run_and_work,
    cache_entries_record_what_pods_reported,
    only_owned_config_maps_used,
    outputs_kept_exactly,
    only_owned_objects_changed,
    flow_fits_and_no_write_refused,
    request_acted_on_once,  # these two before phases_move_forward, which records the statuses
    schedule_ticks_start_one_run_each,
    finally_works_after_the_works,
    phases_move_forward,
]


def check_step(world: World) -> None:
    for invariant in STEP_INVARIANTS:
        invariant(world)
    world.record.checked_writes = len(world.server.writes)


# -- once settled ------------------------------------------------------------------------------


def _owned(world: World, resource: str, uid: str) -> list[dict[str, Any]]:
    return [obj for obj in world.server.items(resource, NAMESPACE) if controller_uid(obj) == uid]


def cached_works_ran_no_job(world: World) -> None:
    """A work taken from the cache has no Job in its run: it ran nothing."""
    for flow in world.flows():
        status = flow.get("status") or {}
        run = status.get("run")
        if not run:
            continue
        jobs = {
            (
                job["metadata"]["labels"].get("dagflow.dev/run"),
                job["metadata"]["annotations"].get("dagflow.dev/work-name"),
            )
            for job in _owned(world, "jobs", flow["metadata"]["uid"])
        }
        for work in status.get("works") or []:
            if work.get("cachedFrom") and (str(run), work["name"]) in jobs:
                raise Violation(
                    "cached-works-ran-no-job",
                    f"{flow['metadata']['name']}: work {work['name']} was taken from the cache in run {run}"
                    " and has a Job of that run",
                )


def status_tells_the_truth(world: World) -> None:
    """Each work's phase matches its Job: a finished Job's outcome, a running Job's Running."""
    for flow in world.flows():
        status = flow.get("status") or {}
        if status.get("phase") in (None, "Stopped") or not status.get("run"):
            continue
        jobs = {job["metadata"]["name"]: job for job in _owned(world, "jobs", flow["metadata"]["uid"])}
        serve_works = {work["name"] for work in flow["spec"].get("works") or [] if "serve" in work}
        for work in status.get("works") or []:
            job = jobs.get(work.get("job") or "")
            if job is None and work.get("phase") == "Running" and work["name"] not in serve_works:
                raise Violation(
                    "status-tells-the-truth",
                    f"{flow['metadata']['name']}: work {work['name']} is Running"
                    f" with no Job ({work.get('job')})",
                )
            if job is None or work.get("carriedFromRun") or job["metadata"].get("deletionTimestamp"):
                continue
            outcome, phase = _finished(job), work.get("phase")
            if phase == "Stopped" and status.get("outcome") == "Stopped":
                # Stopped by request while its finally works run: a Job that ended another way
                # before its deletion landed does not change that (as in a run that ended Stopped).
                continue
            wrong = (
                (outcome == "Complete" and phase not in ("Succeeded", "Failed"))
                or (outcome == "Failed" and phase not in ("Failed", "Stopped"))
                or (outcome is None and phase not in ("Running", "Stopped"))
            )
            if wrong:
                raise Violation(
                    "status-tells-the-truth",
                    f"{flow['metadata']['name']}: work {work['name']} is {phase}"
                    f" while its Job {job['metadata']['name']} is {outcome or 'running'}",
                )


def finally_works_run_when_a_run_ends(world: World) -> None:
    """A run that has ended (Succeeded, Failed, Serving, or Stopped before them) ran its finally
    works: none is left Pending."""
    for flow in world.flows():
        status = flow.get("status") or {}
        invalid = any(c.get("reason") == "Invalid" for c in status.get("conditions") or [])
        if status.get("phase") not in ("Succeeded", "Failed", "Serving", "Stopped") or invalid:
            continue
        waiting = [
            work["name"]
            for work in status.get("works") or []
            if work.get("finally") and work.get("phase") == "Pending"
        ]
        if waiting:
            raise Violation(
                "finally-works-run-when-a-run-ends",
                f"{flow['metadata']['name']}: run {status.get('run')} is {status['phase']} and its finally"
                f" work {waiting[0]} never ran",
            )


def serving_only_with_available_pods(world: World) -> None:
    """The Serving condition is True exactly when every serve work's Deployment has available pods."""
    for flow in world.flows():
        conditions = {c.get("type"): c for c in (flow.get("status") or {}).get("conditions") or []}
        serving = conditions.get("Serving")
        if serving is None:
            continue
        serve_works = [work["name"] for work in flow["spec"].get("works") or [] if "serve" in work]
        deployments = {_work_of(d): d for d in _owned(world, "deployments", flow["metadata"]["uid"])}
        available = all(
            name in deployments
            and any(
                c.get("type") == "Available" and c.get("status") == "True"
                for c in (deployments[name].get("status") or {}).get("conditions") or []
            )
            and int((deployments[name].get("status") or {}).get("availableReplicas") or 0) > 0
            for name in serve_works
        )
        if (serving.get("status") == "True") != (available and bool(serve_works)):
            raise Violation(
                "serving-only-with-available-pods",
                f"{flow['metadata']['name']}: Serving is {serving.get('status')} ({serving.get('message')})"
                f" while the serve works' Deployments are {'available' if available else 'not available'}",
            )


def nothing_of_retired_runs_left(world: World) -> None:
    """Once settled, no Job of an earlier run still runs, no finished Job beyond the kept history is
    left, and every ConfigMap of an earlier run belongs to a Job still there or to the status."""
    settings = OperatorSettings()
    for flow in world.flows():
        status = flow.get("status") or {}
        run = int(status.get("run") or 0)
        if not run:
            continue
        uid = flow["metadata"]["uid"]
        keep = history_limit(DAGFlowSpec.model_validate(flow["spec"]), settings.history_runs)
        carried = {
            str(work.get("carriedFromRun"))
            for work in status.get("works") or []
            if work.get("carriedFromRun")
        }
        jobs = _owned(world, "jobs", uid)
        for job in jobs:
            job_run = int(_run_of(job) or 0)
            if job_run == run or job["metadata"].get("deletionTimestamp"):
                continue
            if _finished(job) is None:
                raise Violation(
                    "nothing-of-retired-runs-left",
                    f"Job {job['metadata']['name']} of run {job_run} still runs in run {run}",
                )
            if job_run <= run - keep and str(job_run) not in carried:
                raise Violation(
                    "nothing-of-retired-runs-left",
                    f"Job {job['metadata']['name']} of run {job_run} kept past the history of run {run}",
                )
        # A Job uses the values its pods mount, and the ConfigMap its instances' outputs went to.
        used = {
            volume["configMap"]["name"]
            for job in jobs
            for volume in job["spec"]["template"]["spec"].get("volumes") or []
            if volume.get("configMap")
        } | {naming.matrix_config_maps(job["metadata"]["name"])[1] for job in jobs}
        referenced = {work.get("outputsConfigMap") for work in status.get("works") or []}
        for config_map in _owned(world, "configmaps", uid):
            name = config_map["metadata"]["name"]
            # The current run's may wait for a work yet to start (immutable, they are used as they are).
            if (
                int(_run_of(config_map) or 0) != run
                and name not in referenced
                and name not in used
                and not config_map["metadata"].get("deletionTimestamp")
            ):
                raise Violation("nothing-of-retired-runs-left", f"ConfigMap {name} is left, used by nothing")


SETTLED_INVARIANTS: list[Invariant] = [
    cached_works_ran_no_job,
    status_tells_the_truth,
    finally_works_run_when_a_run_ends,
    serving_only_with_available_pods,
    nothing_of_retired_runs_left,
]


def check_settled(world: World, last_round_writes: int) -> None:
    if last_round_writes:
        raise Violation(
            "settles", f"the operator still wrote {last_round_writes} times in the last round of settling"
        )
    for invariant in SETTLED_INVARIANTS:
        invariant(world)
