"""`dagflow plan`: which works of a flow the cache would serve, and for a miss which part of the key
changed since the newest entry of that work. Reads entries only; creates nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dagflow.api.models import DAGFlowSpec
from dagflow.rules import naming
from dagflow.rules.cachekey import (
    KEY_LABEL,
    CacheKey,
    MatrixKeys,
    explain_miss,
    instance_outputs,
    is_digest,
    match_instances,
    matrix_work_keys,
    run_unique_key,
    work_cache_key,
)
from dagflow.rules.matrix import MatrixError, expand, parse_matrix
from dagflow.rules.store import artifact_paths
from dagflow.rules.substitution import BadReference, Values, container_references
from dagflow.rules.validation import topological_order

# Lists the cache entries of the flow's namespace that carry these labels.
EntryLookup = Callable[[str], list[dict[str, Any]]]

HIT, MISS, RUNS = "hit", "miss", "runs"


@dataclass
class WorkPlan:
    """What a run would do with one work."""

    work: str
    verdict: str  # hit, miss, or runs (not cached)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cached_from: str | None = None


def _created(entry: Mapping[str, Any]) -> datetime | None:
    text = (entry.get("spec") or {}).get("createdAt")
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def _newest(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    dated = [(created, entry) for entry in entries if (created := _created(entry)) is not None]
    return max(dated, key=lambda pair: pair[0])[1] if dated else None


def plan_cache(
    spec: DAGFlowSpec,
    flow: str,
    params: Mapping[str, str],
    look_up: EntryLookup,
    now: datetime,
    run: int = 1,
) -> list[WorkPlan]:
    """Each work's fate in a new run of `flow` with these parameter values, in topological order."""
    works = {work.name: work for work in spec.all_works}
    keys: dict[str, str | None] = {}
    outputs: dict[str, Mapping[str, Any]] = {}
    planned: list[WorkPlan] = []
    for name in topological_order(spec):
        work = works[name]
        settings = spec.cache_of(work)
        if not settings.enabled:
            why = "a serve work is never cached" if work.serve is not None else "caching is off"
            if spec.is_finally(name):
                why = "a finally work always runs"
            elif work.approval is not None:
                why = "a gate: someone decides in every run"
            planned.append(WorkPlan(name, RUNS, [why]))
            keys[name] = run_unique_key("plan", run, name)
            continue
        unknown = [dep for dep in work.depends_on if keys.get(dep) is None]
        if unknown:
            reasons = [f"upstream {dep} re-runs: its key is known once it ran" for dep in unknown]
            planned.append(WorkPlan(name, MISS, reasons))
            keys[name] = None
            continue
        unread = sorted(
            {
                reference.work
                for _, reference in container_references(work.container)
                if reference.kind == "works" and reference.work not in outputs
            }
        )
        if unread:
            reasons = [f"upstream {dep} re-runs: its outputs are known once it ran" for dep in unread]
            planned.append(WorkPlan(name, MISS, reasons))
            keys[name] = None
            continue
        upstream = {dep: str(keys[dep]) for dep in dict.fromkeys(work.depends_on)}
        values = Values(
            run=run,
            flow=flow,
            work=name,
            params=params,
            outputs=outputs,
            artifact_paths=artifact_paths(spec, outputs),
        )
        try:
            matrix_keys: MatrixKeys | None = None
            if work.matrix is not None:
                parsed = parse_matrix(work.matrix)
                resolved = {
                    axis: outputs[reference.work][reference.name]
                    for axis, reference in parsed.dynamic.items()
                    if reference.name in outputs.get(reference.work, {})
                }
                matrix_keys = matrix_work_keys(spec, work, values, upstream, expand(parsed, resolved))
                key: CacheKey = matrix_keys.template
            else:
                key = work_cache_key(spec, work, values, upstream)
        except (BadReference, MatrixError) as error:
            planned.append(WorkPlan(name, MISS, [f"its inputs are known once its upstream ran ({error})"]))
            keys[name] = None
            continue
        keys[name] = matrix_keys.work.value if matrix_keys is not None else key.value
        image = str(work.container.get("image") or "")
        if matrix_keys is not None:
            entries = look_up(f"{KEY_LABEL}={key.label}")
            found = match_instances(entries, matrix_keys, now, settings.max_age_seconds)
            total = len(matrix_keys.instances)
            if found and len(found) == total:
                by_index = instance_outputs(found, [output.name for output in work.outputs])
                outputs[name] = {
                    output: [values_of[index] for index in range(total)]
                    for output, values_of in by_index.items()
                }
                latest = max(
                    (entry for entry, _ in found.values()), key=lambda entry: entry["spec"]["createdAt"]
                )
                source = f"run {latest['spec'].get('run')} of {latest['spec'].get('flow')}"
                plan = WorkPlan(
                    name, HIT, cached_from=f"{total} of {total} instances hit; newest from {source}"
                )
                if not is_digest(image):
                    plan.warnings.append(f"image {image} is a tag: a tag moved to another image is not seen")
                planned.append(plan)
                continue
            if found:
                running = total - len(found)
                job = "one Job of 1 completion" if running == 1 else f"one Job of {running} completions"
                planned.append(
                    WorkPlan(name, MISS, [f"{len(found)} of {total} instances hit; {running} run as {job}"])
                )
                continue
            same = [entry for entry in entries if (entry.get("spec") or {}).get("key") == key.value]
            if any(
                (made := _created(entry)) is not None
                and now - made <= timedelta(seconds=settings.max_age_seconds)
                for entry in same
            ):
                planned.append(
                    WorkPlan(name, MISS, [f"none of its {total} instances hit: their values changed"])
                )
                continue
            if same:
                planned.append(WorkPlan(name, MISS, ["its instances' entries are older than maxAge"]))
                continue
        candidates = [
            entry
            for entry in (look_up(f"{KEY_LABEL}={key.label}") if matrix_keys is None else [])
            if (entry.get("spec") or {}).get("key") == key.value
        ]
        newest = _newest(candidates)
        created = _created(newest) if newest else None
        if newest is not None and created and now - created <= timedelta(seconds=settings.max_age_seconds):
            entry_spec = newest["spec"]
            outputs[name] = entry_spec.get("outputs") or {}
            plan = WorkPlan(name, HIT, cached_from=f"run {entry_spec.get('run')} of {entry_spec.get('flow')}")
            if not is_digest(image):
                ran = entry_spec.get("imageID") or "an image the entry does not name"
                plan.warnings.append(
                    f"image {image} is a tag: a tag moved to another image is not seen (the entry ran {ran})"
                )
            planned.append(plan)
            continue
        if newest is not None:
            planned.append(
                WorkPlan(name, MISS, [f"its entry is older than maxAge ({created:%Y-%m-%d %H:%M})"])
            )
            continue
        selector = (
            f"{naming.FLOW_LABEL}={naming.label_value(flow)},{naming.WORK_LABEL}={naming.label_value(name)}"
        )
        before = _newest(
            [
                entry
                for entry in look_up(selector)
                if (entry.get("spec") or {}).get("work") == name
                and (entry.get("spec") or {}).get("flow") == flow
            ]
        )
        if before is None:
            planned.append(WorkPlan(name, MISS, ["no entry of this work yet"]))
            continue
        reasons = explain_miss(key.parts, before["spec"].get("parts") or {}) or ["its key changed"]
        planned.append(WorkPlan(name, MISS, reasons))
    return planned
