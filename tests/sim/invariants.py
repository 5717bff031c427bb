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

from dagflow.api.models import APPROVAL_ANNOTATION_PREFIX, CACHE_ENTRY_PLURAL, PLURAL, DAGFlowSpec
from dagflow.controller.history import history_limit
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming
from dagflow.rules.approvals import approver_annotation
from tests.sim.apiserver import MAX_OBJECT_BYTES, OPERATOR, controller_uid, object_size
from tests.sim.controllers import COMPLETION_INDEX, MESSAGE_ANNOTATION, termination_message
from tests.sim.world import GATE_PARAMS, NAMESPACE, Violation, World

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
# Why a gate fails without running.
GATE_FAILURES = frozenset({"Rejected", "ApprovalTimedOut"})


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
        # Serve works of the specs the two statuses were planned from: a newer spec the operator has
        # not seen yet may have dropped one, or made it a batch work.
        planned = [
            _spec_of(world, uid, of.get("observedGeneration"), flow["spec"]) for of in (status, before)
        ]
        serve_works = {
            work["name"] for spec in planned for work in spec.get("works") or [] if "serve" in work
        }
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


# -- approval gates --------------------------------------------------------------------------------


def _spec_of(world: World, uid: str, generation: object, default: dict[str, Any]) -> dict[str, Any]:
    """The flow's spec at `generation`, as seen after some step (the flow's spec now when not seen)."""
    try:
        return world.record.specs.get(uid, {}).get(int(str(generation)), default)
    except ValueError:
        return default


def _remember_specs(world: World) -> None:
    for flow in world.flows():
        specs = world.record.specs.setdefault(flow["metadata"]["uid"], {})
        specs[int(flow["metadata"].get("generation") or 1)] = flow["spec"]


def _gates(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {work["name"]: work["approval"] for work in spec.get("works") or [] if work.get("approval")}


def _generation_of(child: Mapping[str, Any]) -> object:
    return ((child.get("metadata") or {}).get("annotations") or {}).get(naming.GENERATION_ANNOTATION)


def _current(entry: Mapping[str, Any]) -> bool:
    """Whether a status entry is of its own run (not an outcome a retry carried over)."""
    return not entry.get("carriedFromRun")


def _text(value: object) -> str:
    # A value that is not a string counts as its JSON text, as a parameter value given anywhere does.
    return value if isinstance(value, str) else json.dumps(value)


def _asked_for(
    value: str, stamp: str | None, run: int, taken: Mapping[str, Any], gate: Mapping[str, Any]
) -> bool:
    """Whether the request `value`, stamped `stamp`, asks for the decision `taken` in run `run`."""
    try:
        request = json.loads(value)
    except json.JSONDecodeError:
        return False
    if not isinstance(request, dict) or not stamp or stamp != taken.get("by"):
        return False
    if type(request.get("run")) is not int or request["run"] != run:
        return False
    if request.get("token") != taken.get("token") or request.get("decision") != taken.get("decision"):
        return False
    given = request.get("params") or {}
    if not isinstance(given, dict) or any(
        name not in (gate.get("params") or []) or text is None or isinstance(text, (dict, list))
        for name, text in given.items()
    ):
        return False
    values = {name: _text(text) for name, text in given.items()}
    return (taken.get("params") or None) == (
        values if values and taken.get("decision") == "Approved" else None
    )


def decisions_come_from_stamped_requests_of_their_run(world: World) -> None:
    """A gate's decision is taken in from a request for its run, of a gate that waited, that the API
    server stamped with who sent it: it names that stamp (never a name typed into the request), and
    the request's decision and values. Once taken in, a decision stands for the rest of its run."""
    record = world.record
    _remember_specs(world)
    for index in range(record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource != PLURAL or write.after is None:
            continue
        uid = write.after["metadata"]["uid"]
        if write.actor != OPERATOR:
            annotations = write.after["metadata"].get("annotations") or {}
            for key, value in annotations.items():
                if key.startswith(APPROVAL_ANNOTATION_PREFIX):
                    work = key.removeprefix(APPROVAL_ANNOTATION_PREFIX)
                    seen = record.approval_requests.setdefault((uid, work), [])
                    if (value, annotations.get(approver_annotation(work))) not in seen:
                        seen.append((value, annotations.get(approver_annotation(work))))
            continue
        status = write.after.get("status") or {}
        run = int(status.get("run") or 0)
        name = write.after["metadata"]["name"]
        gates = _gates(_spec_of(world, uid, status.get("observedGeneration"), write.after["spec"]))
        for entry in status.get("works") or []:
            work = entry["name"]
            if not _current(entry):
                continue
            if entry.get("phase") == "Waiting":
                record.gates_waited.add((uid, run, work))
            approval = entry.get("approval") or {}
            if not approval.get("decision"):
                continue
            taken = {key: approval.get(key) for key in ("decision", "by", "token", "params")}
            earlier = record.decisions.setdefault((uid, run, work), taken)
            if earlier != taken:
                raise Violation(
                    "decisions-come-from-stamped-requests-of-their-run",
                    f"{name}: the decision on gate {work} of run {run} went from {earlier} to {taken}",
                )
            if earlier is not taken:
                continue  # taken in before, and checked then
            if work not in gates or (uid, run, work) not in record.gates_waited:
                raise Violation(
                    "decisions-come-from-stamped-requests-of-their-run",
                    f"{name}: work {work} of run {run} took in {taken} and "
                    + ("is no gate" if work not in gates else "never waited"),
                )
            requests = record.approval_requests.get((uid, work), [])
            if not any(_asked_for(value, stamp, run, taken, gates[work]) for value, stamp in requests):
                raise Violation(
                    "decisions-come-from-stamped-requests-of-their-run",
                    f"{name}: gate {work} of run {run} took in {taken}, which no request for that run"
                    f" stamped with that name asked for (requests and stamps: {requests})",
                )


def gates_start_only_once_approved(world: World) -> None:
    """No Job (or Deployment) of a gate exists in a run unless that run's status records an
    Approved decision for it."""
    _remember_specs(world)
    for flow in world.flows():
        uid = flow["metadata"]["uid"]
        status = flow.get("status") or {}
        run = int(status.get("run") or 0)
        entries = {entry["name"]: entry for entry in status.get("works") or []}
        for resource in ("jobs", "deployments"):
            for child in _owned(world, resource, uid):
                work = _work_of(child)
                if int(_run_of(child) or 0) != run or child["metadata"].get("deletionTimestamp"):
                    continue
                if work not in _gates(_spec_of(world, uid, _generation_of(child), flow["spec"])):
                    continue
                approval = (entries.get(work) or {}).get("approval") or {}
                if approval.get("decision") != "Approved":
                    raise Violation(
                        "gates-start-only-once-approved",
                        f"{flow['metadata']['name']}: {resource} {child['metadata']['name']} of gate {work}"
                        f" exists in run {run}, whose status records {approval or 'no approval'}",
                    )


def _needing(spec: Mapping[str, Any], gate: str) -> set[str]:
    """The works that cannot start in a run where `gate` did not succeed: those that need it, by
    their trigger rule, directly or through other works."""
    needing = {gate}
    works = [work for work in spec.get("works") or [] if work["name"] != gate]
    grown = True
    while grown:
        grown = False
        for work in works:
            depends = set(work.get("dependsOn") or [])
            if work["name"] in needing or not depends:
                continue
            when = work.get("when") or "AllSucceeded"
            if (when == "AllSucceeded" and depends & needing) or (
                when == "AnySucceeded" and depends <= needing
            ):
                needing.add(work["name"])
                grown = True
    return needing


def refused_gates_and_what_needs_them_never_run(world: World) -> None:
    """A gate rejected or timed out stays so for the rest of its run and gets no Job in it, and the
    works that need it (by their trigger rules) neither start nor end as if they had run."""
    record = world.record
    for index in range(record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource != PLURAL or write.actor != OPERATOR or write.after is None:
            continue
        status = write.after.get("status") or {}
        for entry in status.get("works") or []:
            if not _current(entry):
                continue
            key = (write.after["metadata"]["uid"], int(status.get("run") or 0), entry["name"])
            why = record.gates_refused.get(key)
            if why is not None and (entry.get("phase"), entry.get("reason")) != ("Failed", why):
                raise Violation(
                    "refused-gates-and-what-needs-them-never-run",
                    f"{write.name}: gate {entry['name']} of run {key[1]} failed ({why}) and is now"
                    f" {entry.get('phase')} ({entry.get('reason')}: {entry.get('message')})",
                )
            if entry.get("phase") == "Failed" and entry.get("reason") in GATE_FAILURES:
                record.gates_refused[key] = entry["reason"]
    for flow in world.flows():
        uid = flow["metadata"]["uid"]
        status = flow.get("status") or {}
        run = int(status.get("run") or 0)
        refused = {
            gate: why for (of, at, gate), why in record.gates_refused.items() if (of, at) == (uid, run)
        }
        if not refused:
            continue
        spec = _spec_of(world, uid, status.get("observedGeneration"), flow["spec"])
        for gate, why in sorted(refused.items()):
            needing = _needing(spec, gate)
            for resource in ("jobs", "deployments"):
                for child in _owned(world, resource, uid):
                    if int(_run_of(child) or 0) == run and _work_of(child) in needing:
                        raise Violation(
                            "refused-gates-and-what-needs-them-never-run",
                            f"{flow['metadata']['name']}: gate {gate} of run {run} failed ({why}) and"
                            f" {resource} {child['metadata']['name']} of {_work_of(child)} exists",
                        )
            for entry in status.get("works") or []:
                ran = entry.get("phase") in ("Running", "Succeeded", "Serving") or (
                    entry["name"] == gate and entry.get("phase") != "Failed"
                )
                if entry["name"] in needing and _current(entry) and ran:
                    raise Violation(
                        "refused-gates-and-what-needs-them-never-run",
                        f"{flow['metadata']['name']}: gate {gate} of run {run} failed ({why}) and"
                        f" {entry['name']} is {entry.get('phase')}",
                    )


def gates_time_out_only_when_due(world: World) -> None:
    """A gate times out only once it has waited its timeoutSeconds (its times are to the second)."""
    for index in range(world.record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource != PLURAL or write.actor != OPERATOR or write.after is None:
            continue
        status = write.after.get("status") or {}
        uid = write.after["metadata"]["uid"]
        gates = _gates(_spec_of(world, uid, status.get("observedGeneration"), write.after["spec"]))
        for entry in status.get("works") or []:
            requested = (entry.get("approval") or {}).get("requestedAt")
            if entry.get("reason") != "ApprovalTimedOut" or entry["name"] not in gates or not requested:
                continue
            waited = (_time(entry.get("finishedAt") or requested) - _time(requested)).total_seconds()
            if waited < int(gates[entry["name"]].get("timeoutSeconds") or 86400) - 1:
                raise Violation(
                    "gates-time-out-only-when-due",
                    f"{write.name}: gate {entry['name']} of run {status.get('run')} timed out after"
                    f" {waited:g}s of its {gates[entry['name']].get('timeoutSeconds')}s",
                )


def _values_in(job: Mapping[str, Any]) -> dict[str, str]:
    """The parameter values a Job's container was given, as `--NAME VALUE` (a matrix work's are
    behind its launcher, in the command)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    return {
        name: argv[position + 1]
        for name in GATE_PARAMS
        for position, word in enumerate(argv[:-1])
        if word == f"--{name}"
    }


def _ancestry(spec: Mapping[str, Any], work: str) -> set[str]:
    depends = {item["name"]: item.get("dependsOn") or [] for item in spec.get("works") or []}
    seen: set[str] = set()
    todo = [work]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(depends.get(name, []))
    return seen


def gate_values_reach_the_works_after_it(world: World) -> None:
    """A Job gets, for `$(params.NAME)`, the value the approver of a gate set when the Job's work is
    that gate or comes after it (every finally work does), and the run's value otherwise: as its
    run's status tells them once the gates before it that have a Job have their decision recorded
    (a gate's Job before its decision is `gates_start_only_once_approved`'s to tell)."""
    record = world.record
    for index in range(record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource == "jobs" and write.verb == "create" and write.actor == OPERATOR and write.after:
            record.jobs_to_check.append(
                (
                    str(controller_uid(write.after)),
                    int(_run_of(write.after) or 0),
                    _work_of(write.after),
                    write.after,
                )
            )
    if not record.jobs_to_check:
        return
    flows = {flow["metadata"]["uid"]: flow for flow in world.flows()}
    waiting = []
    for uid, run, work, job in record.jobs_to_check:
        flow = flows.get(uid)
        status = (flow or {}).get("status") or {}
        if flow is None or int(status.get("run") or 0) > run:
            continue  # its run has gone by
        if int(status.get("run") or 0) < run:
            waiting.append((uid, run, work, job))
            continue
        spec = _spec_of(world, uid, _generation_of(job), flow["spec"])
        finally_works = {item["name"] for item in spec.get("finally") or []}
        gates = set(_gates(spec))
        before = gates if work in finally_works else _ancestry(spec, work) & gates
        decided = {
            entry["name"]
            for entry in status.get("works") or []
            if (entry.get("approval") or {}).get("decision")
        }
        started = {(_run_of(other), _work_of(other)) for other in _owned(world, "jobs", uid)}
        if any((str(run), gate) in started and gate not in decided for gate in before):
            waiting.append((uid, run, work, job))
            continue
        expected = {param["name"]: param.get("default", "") for param in spec.get("params") or []}
        expected.update(status.get("params") or {})
        approved = {
            entry["name"]: entry["approval"]["params"]
            for entry in status.get("works") or []
            if (entry.get("approval") or {}).get("decision") == "Approved" and entry["approval"].get("params")
        }
        for gate in sorted(before & set(approved)):
            expected.update(approved[gate])
        got = _values_in(job)
        wrong = {name: value for name, value in got.items() if expected.get(name) != value}
        if wrong:
            raise Violation(
                "gate-values-reach-the-works-after-it",
                f"{flow['metadata']['name']}: Job {job['metadata']['name']} of run {run} got {got}, the"
                f" status tells {expected} (approved: {approved})",
            )
    record.jobs_to_check = waiting


def a_waiting_gates_run_goes_on(world: World) -> None:
    """While a gate waits its run is Running (or Stopped, once someone stopped it): never ended. But
    under Continue a serve work that can no longer serve fails the run at once, while what is under
    way goes on, a waiting gate included (it may still be decided)."""
    for index in range(world.record.checked_writes, len(world.server.writes)):
        write = world.server.writes[index]
        if write.resource != PLURAL or write.actor != OPERATOR or write.after is None:
            continue
        status = write.after.get("status") or {}
        waiting = [
            entry["name"]
            for entry in status.get("works") or []
            if entry.get("phase") == "Waiting" and _current(entry)
        ]
        spec = write.after.get("spec") or {}
        phases = {entry.get("name"): entry.get("phase") for entry in status.get("works") or []}
        serve_blocked = spec.get("failurePolicy") == "Continue" and any(
            "serve" in work and phases.get(work.get("name")) in ("Failed", "Skipped", "Stopped")
            for work in spec.get("works") or []
        )
        if serve_blocked and status.get("phase") == "Failed":
            continue
        if waiting and status.get("phase") not in ("Running", "Stopped"):
            raise Violation(
                "a-waiting-gates-run-goes-on",
                f"{write.name}: run {status.get('run')} is {status.get('phase')}"
                f" while gate {waiting[0]} waits",
            )


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
    decisions_come_from_stamped_requests_of_their_run,
    gates_start_only_once_approved,
    refused_gates_and_what_needs_them_never_run,
    gates_time_out_only_when_due,
    gate_values_reach_the_works_after_it,
    a_waiting_gates_run_goes_on,
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


def no_gate_waits_past_its_timeout(world: World) -> None:
    """Once settled, no gate of a flow's current run still waits after its timeout."""
    now = world.clock.wall()
    for flow in world.flows():
        status = flow.get("status") or {}
        if status.get("phase") != "Running":
            continue
        gates = _gates(
            _spec_of(world, flow["metadata"]["uid"], status.get("observedGeneration"), flow["spec"])
        )
        for entry in status.get("works") or []:
            requested = (entry.get("approval") or {}).get("requestedAt")
            if entry.get("phase") != "Waiting" or entry["name"] not in gates or not requested:
                continue
            waited = (now - _time(requested)).total_seconds()
            # A round of settling (5 s) may pass before the pass that fails it.
            if waited > int(gates[entry["name"]].get("timeoutSeconds") or 86400) + 6:
                raise Violation(
                    "no-gate-waits-past-its-timeout",
                    f"{flow['metadata']['name']}: gate {entry['name']} of run {status.get('run')} has waited"
                    f" {waited:g}s of its {gates[entry['name']].get('timeoutSeconds')}s",
                )


SETTLED_INVARIANTS: list[Invariant] = [
    cached_works_ran_no_job,
    status_tells_the_truth,
    finally_works_run_when_a_run_ends,
    serving_only_with_available_pods,
    nothing_of_retired_runs_left,
    no_gate_waits_past_its_timeout,
]


def check_settled(world: World, last_round_writes: int) -> None:
    if last_round_writes:
        raise Violation(
            "settles", f"the operator still wrote {last_round_writes} times in the last round of settling"
        )
    for invariant in SETTLED_INVARIANTS:
        invariant(world)
