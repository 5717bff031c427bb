"""The cache as a pass uses it: looks up the works about to start by key, takes hits, records the
outcomes of cached works that succeeded, and deletes entries past every maxAge of their namespace.

Entries are DAGFlowCacheEntry objects in the flow's namespace, written only by the operator (its
admission webhook refuses anyone else's create or update). A lookup is a list by the key's label,
never a list of all entries: it costs the same with 100,000 entries in the namespace.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dagflow.api.models import (
    API_VERSION,
    CACHE_ENTRY_KIND,
    CacheEntrySpec,
    DAGFlowSpec,
    Work,
    WorkPhase,
)
from dagflow.controller.awaiting import gather_all
from dagflow.controller.builders import FlowRef, MatrixInstances
from dagflow.controller.instances import InstanceCounts, combinations_of, format_indexes
from dagflow.controller.kube import KubeClient
from dagflow.controller.observe import parse_indexes
from dagflow.controller.planner import Plan, WorkState
from dagflow.controller.workdata import WorkData
from dagflow.rules import naming
from dagflow.rules.approvals import RunParams
from dagflow.rules.cachekey import (
    KEY_LABEL,
    CacheKey,
    MatrixKeys,
    instance_outputs,
    match_instances,
    matrix_work_keys,
    run_unique_key,
    work_cache_key,
)
from dagflow.rules.matrix import MatrixError
from dagflow.rules.store import artifact_paths
from dagflow.rules.substitution import BadReference, Values
from dagflow.rules.times import parse_time, timestamp

logger = logging.getLogger("dagflow")

# Rounds of lookups in one pass: a hit lets its dependents start, which are looked up in the next
# round, so a chain of cached works ends in one pass (a longer one goes on in the next).
MAX_ROUNDS = 50
# An entry bigger than this (outputs of a huge matrix work) is not written: it would not fit in etcd.
MAX_ENTRY_BYTES = 512 * 1024
# The outputs of a partly cached matrix work's cached instances are kept beside its Job's values, in
# one ConfigMap (at most 1 MiB): past this, all of its instances run.
MAX_CACHED_OUTPUTS_BYTES = 512 * 1024
# An entry of a matrix work's instances leaves this much room for its other fields.
ENTRY_OVERHEAD_BYTES = 16 * 1024
# Which works' entries were written, remembered so that a pass does not ask again (a restart asks
# once more, and the API server answers that it exists).
RECORDED_KEPT = 100_000


def entry_name(work: str, key: str, flow_uid: str, run: int) -> str:
    """An entry's name, the same for a work's success in one run whoever writes it: a second write is
    a 409, not a second entry."""
    digest = hashlib.sha256(f"{key}/{flow_uid}/{run}".encode()).hexdigest()[:20]
    return f"{work[:40]}-{digest}"


def newest_valid(
    entries: list[dict[str, Any]], key: str, now: datetime, max_age_seconds: int
) -> dict[str, Any] | None:
    """The newest entry of exactly this key written within max age; None when there is none."""
    best: tuple[datetime, dict[str, Any]] | None = None
    for entry in entries:
        spec = entry.get("spec") or {}
        created = parse_time(spec.get("createdAt"))
        if spec.get("key") != key or created is None:
            continue
        if now - created > timedelta(seconds=max_age_seconds):
            continue
        if best is None or created > best[0]:
            best = (created, entry)
    return best[1] if best else None


WorkKeys = CacheKey | MatrixKeys
# The instances of a matrix work the cache had, by index: the entry and the position in it.
Found = dict[int, tuple[Mapping[str, Any], int]]


def key_value(keys: WorkKeys) -> str:
    """The key a work's dependents and its status see: a matrix work's over all its instances."""
    return keys.work.value if isinstance(keys, MatrixKeys) else keys.value


@dataclass
class CacheRound:
    """What a pass took from the cache: the plan after the hits, the hits by work."""

    plan: Plan
    hits: dict[str, dict[str, Any]]


class Cache:
    """Lookups, hits and records of one operator."""

    def __init__(self, kube: KubeClient, work_data: WorkData) -> None:
        self.kube = kube
        self.work_data = work_data
        self._recorded: OrderedDict[tuple[str, int, str], None] = OrderedDict()

    @staticmethod
    def wanted(spec: DAGFlowSpec) -> bool:
        return any(spec.caches(work) for work in spec.works)

    def keys(
        self, flow: FlowRef, spec: DAGFlowSpec, run: int, params: RunParams, plan: Plan
    ) -> Callable[[Work, Mapping[str, Mapping[str, Any]]], WorkKeys | None]:
        """The key of a cached work in this run, from the keys in the plan's states of the works it
        depends on; None when a reference cannot be resolved (its Job is refused for that anyway)."""
        states = {state.name: state for state in plan.works}
        works = {work.name: work for work in spec.works}

        def upstream_key(name: str, outputs: Mapping[str, Mapping[str, Any]]) -> str:
            state = states[name]
            work = works[name]
            if spec.caches(work) and state.phase == WorkPhase.SUCCEEDED:
                if state.cache_key:
                    return state.cache_key
                computed = key_of(work, outputs)
                if computed is not None:
                    return key_value(computed)
            return run_unique_key(flow.uid, state.carried_from_run or run, name)

        def key_of(work: Work, outputs: Mapping[str, Mapping[str, Any]]) -> WorkKeys | None:
            upstream = {name: upstream_key(name, outputs) for name in dict.fromkeys(work.depends_on)}
            values = Values(
                run=run,
                flow=flow.name,
                work=work.name,
                params=params.of(work.name),
                outputs=outputs,
                artifact_paths=artifact_paths(spec, outputs),
            )
            try:
                if work.matrix is not None:
                    return matrix_work_keys(spec, work, values, upstream, combinations_of(work, outputs))
                return work_cache_key(spec, work, values, upstream)
            except (BadReference, MatrixError):
                return None

        return key_of

    async def take_hits(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        run: int,
        params: RunParams,
        plan: Plan,
        previous: Mapping[str, Mapping[str, Any]],
        now: datetime,
        look_up: bool,
        replan: Callable[[Mapping[str, Mapping[str, Any]]], Plan],
    ) -> CacheRound:
        """Look up the cached works the plan starts; a hit succeeds at once, and the plan is made
        again with it, so that its dependents start in this pass too. Every cached work started
        carries its key in its state (its dependents' keys are made from it). A matrix work is
        looked up instance by instance: when the cache has only some, its Job runs the others."""
        hits: dict[str, dict[str, Any]] = {}
        keys: dict[str, str] = {}
        partial: dict[str, tuple[MatrixKeys, Found]] = {}
        for _ in range(MAX_ROUNDS):
            candidates = [
                work
                for work in plan.start
                if work.serve is None and work.name not in keys and spec.caches(work)
            ]
            if not candidates:
                break
            outputs = await self.work_data.outputs_for(flow, plan)
            key_of = self.keys(flow, spec, run, params, plan)
            looked = await gather_all(
                *(self._look_up(flow, spec, work, key_of(work, outputs), now, look_up) for work in candidates)
            )
            found: dict[str, dict[str, Any]] = {}
            for work, (key, hit, some) in zip(candidates, looked, strict=True):
                if key is not None:
                    keys[work.name] = key
                if hit is not None:
                    found[work.name] = hit
                if some is not None:
                    partial[work.name] = some
            if not found:
                break
            hits.update(found)
            plan = replan({**previous, **hits})
        started = {work.name for work in plan.start}
        for state in plan.works:
            # Started now: Running, or Pending while its Job waits for Kueue.
            if state.name in keys and state.name not in hits and state.name in started:
                state.cache_key = keys[state.name]
            if state.name in partial and state.name in started and state.name in plan.combinations:
                take_instances(plan, state, spec, *partial[state.name])
        for name in hits:
            logger.info("Took work %s of DAGFlow %s/%s from the cache", name, flow.namespace, flow.name)
        return CacheRound(plan, hits)

    async def _look_up(
        self, flow: FlowRef, spec: DAGFlowSpec, work: Work, key: WorkKeys | None, now: datetime, look_up: bool
    ) -> tuple[str | None, dict[str, Any] | None, tuple[MatrixKeys, Found] | None]:
        """A work's key and, on a hit, its status taken from the newest valid entry of that key; for
        a matrix work the cache has only some instances of, those it has. One list per work, by
        label, however many instances a matrix work has."""
        if key is None:
            return None, None, None
        if not look_up:
            return key_value(key), None, None
        max_age = spec.cache_of(work).max_age_seconds
        if isinstance(key, MatrixKeys):
            entries = await self.kube.cache_entries(flow.namespace, f"{KEY_LABEL}={key.template.label}")
            found = match_instances(entries, key, now, max_age)
            if found and len(found) == len(key.instances):
                return key.work.value, matrix_hit_status(work, key, found, timestamp(now)), None
            return key.work.value, None, (key, found) if found else None
        entries = await self.kube.cache_entries(flow.namespace, f"{KEY_LABEL}={key.label}")
        entry = newest_valid(entries, key.value, now, max_age)
        status = hit_status(work, key.value, entry, timestamp(now)) if entry is not None else None
        return key.value, status, None

    async def record(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        run: int,
        params: RunParams,
        plan: Plan,
        job_uids: Mapping[str, str | None],
        now: datetime,
    ) -> None:
        """Write the entries of this run's cached works that succeeded by running, once their outputs
        are in: each once (a second write finds it there)."""
        works = {work.name: work for work in spec.works}
        due: list[tuple[Work, WorkState]] = []
        for state in plan.works:
            if state.is_finally:
                continue
            work = works[state.name]
            if state.phase != WorkPhase.SUCCEEDED or not spec.caches(work):
                continue
            if state.cached_from or state.carried_from_run or not state.job:
                continue
            if work.outputs and state.outputs is None and not state.outputs_config_map:
                continue
            if (flow.uid, run, work.name) in self._recorded:
                continue
            due.append((work, state))
        if not due:
            return
        outputs = await self.work_data.outputs_for(flow, plan, [work for work, _ in due])
        key_of = self.keys(flow, spec, run, params, plan)

        async def write(work: Work, state: WorkState) -> None:
            key = key_of(work, outputs)
            if key is None:
                return
            if state.cache_key and state.cache_key != key_value(key):
                logger.warning(
                    "Work %s of DAGFlow %s/%s changed key while it ran", work.name, flow.namespace, flow.name
                )
                return
            found = await self._outputs_of(flow, work, state)
            if found is None:
                return
            uid = job_uids.get(state.job or "")
            image_id = await self.kube.image_id(flow.namespace, uid, work.container_name) if uid else None
            if isinstance(key, MatrixKeys):
                made = await gather_all(
                    *(
                        self.kube.create_cache_entry(entry)
                        for entry in build_instance_entries(flow, work, run, state, key, found, image_id, now)
                    )
                )
                if any(made):
                    logger.info(
                        "Cached the instances work %s of DAGFlow %s/%s ran",
                        work.name,
                        flow.namespace,
                        flow.name,
                    )
                self._remember(flow, run, work)
                return
            entry = build_entry(flow, work, run, state, key, found, image_id, now)
            if len(json.dumps(entry)) > MAX_ENTRY_BYTES:
                logger.warning(
                    "Did not cache work %s of DAGFlow %s/%s: its outputs are too big",
                    work.name,
                    flow.namespace,
                    flow.name,
                )
            elif await self.kube.create_cache_entry(entry):
                logger.info("Cached work %s of DAGFlow %s/%s", work.name, flow.namespace, flow.name)
            self._remember(flow, run, work)

        await gather_all(*(write(work, state) for work, state in due))

    def _remember(self, flow: FlowRef, run: int, work: Work) -> None:
        self._recorded[(flow.uid, run, work.name)] = None
        while len(self._recorded) > RECORDED_KEPT:
            self._recorded.popitem(last=False)

    async def _outputs_of(self, flow: FlowRef, work: Work, state: WorkState) -> dict[str, Any] | None:
        """The outputs an entry keeps: from the status, or from the ConfigMap they went to. {}: none
        declared; None: not readable."""
        if not work.outputs:
            return {}
        if state.outputs is not None:
            return dict(state.outputs)
        assert state.outputs_config_map
        stored = await self.work_data.read_stored(flow, {work.name: state.outputs_config_map})
        return dict(stored[work.name]) if work.name in stored else None


def hit_status(work: Work, key: str, entry: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The status of a work taken from the cache: Succeeded now, with its entry's outputs."""
    spec = CacheEntrySpec.model_validate(entry["spec"])
    cached_from: dict[str, Any] = {"flow": spec.flow, "run": spec.run}
    if spec.job:
        cached_from["job"] = spec.job
    if spec.finished_at:
        cached_from["finishedAt"] = timestamp(spec.finished_at)
    status: dict[str, Any] = {
        "name": work.name,
        "phase": WorkPhase.SUCCEEDED.value,
        "startedAt": now,
        "finishedAt": now,
        "cacheKey": key,
        "cachedFrom": cached_from,
    }
    if work.outputs:
        status["outputs"] = dict(spec.outputs or {})
    if work.matrix is not None and spec.instances is not None:
        status["instances"] = spec.instances
        status["instanceCounts"] = {"Succeeded": spec.instances}
    return status


def matrix_hit_status(work: Work, keys: MatrixKeys, found: Found, now: str) -> dict[str, Any]:
    """The status of a matrix work all of whose instances the cache had: Succeeded now, with their
    outputs gathered in index order, `cachedFrom` the newest entry it took instances from."""
    newest = max((entry for entry, _ in found.values()), key=lambda entry: entry["spec"]["createdAt"])
    status = hit_status(work, keys.work.value, newest, now)
    count = len(keys.instances)
    names = [output.name for output in work.outputs]
    if names:
        by_index = instance_outputs(found, names)
        status["outputs"] = {name: [by_index[name][index] for index in range(count)] for name in names}
    status.update(instances=count, instanceCounts={"Succeeded": count}, cachedInstances=count)
    return status


def take_instances(plan: Plan, state: WorkState, spec: DAGFlowSpec, keys: MatrixKeys, found: Found) -> None:
    """A matrix work about to start some of whose instances the cache has: its Job runs only the
    others (index i of the Job the i-th of them), and the cached ones count as succeeded."""
    work = next(work for work in plan.start if work.name == state.name)
    combinations = plan.combinations[state.name]
    if len(combinations) != len(keys.instances):
        return  # expanded from other outputs than the keys were: run them all
    names = [output.name for output in work.outputs]
    by_index = instance_outputs(found, names)
    cached_outputs = {
        name: [by_index[name].get(index) for index in range(len(combinations))] for name in names
    }
    if len(json.dumps(cached_outputs, separators=(",", ":"))) > MAX_CACHED_OUTPUTS_BYTES:
        return  # they would not fit beside the values in their ConfigMap: run them all
    missing = [index for index in range(len(combinations)) if index not in found]
    plan.combinations[state.name] = [combinations[index] for index in missing]
    before = plan.instances[state.name]
    state.cached_instances, state.job_indexes = len(found), format_indexes(missing)
    plan.instances[state.name] = MatrixInstances(
        count=len(missing),
        parallelism=max(min(before.parallelism, len(missing)), 1),
        cached=len(found),
        job_indexes=state.job_indexes,
    )
    state.instance_counts = InstanceCounts(
        total=len(combinations), succeeded=len(found), failed=0, running=0
    ).to_status()
    plan.cached_outputs[state.name] = cached_outputs
    logger.info(
        "Took %d of the %d instances of work %s from the cache", len(found), len(combinations), state.name
    )


def build_instance_entries(
    flow: FlowRef,
    work: Work,
    run: int,
    state: WorkState,
    keys: MatrixKeys,
    outputs: Mapping[str, Any],
    image_id: str | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The entries of the instances a matrix work ran in this run (all, or those its Job ran when
    the cache had the others), under its template key: as few as fit, each under MAX_ENTRY_BYTES."""
    ran = parse_indexes(state.job_indexes) if state.job_indexes else list(range(len(keys.instances)))
    names = [output.name for output in work.outputs]
    chunks: list[list[int]] = [[]]
    size = 0
    for index in ran:
        item = len(keys.instances[index]) + 4
        item += sum(len(json.dumps(_at(outputs.get(name), index))) + 2 for name in names)
        if item > MAX_ENTRY_BYTES - ENTRY_OVERHEAD_BYTES:
            continue  # an instance whose outputs alone would not fit is not cached: it runs each time
        if chunks[-1] and size + item > MAX_ENTRY_BYTES - ENTRY_OVERHEAD_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += item
    entries = []
    for number, chunk in enumerate(chunks):
        if not chunk:
            continue
        chunk_outputs = {name: [_at(outputs.get(name), index) for index in chunk] for name in names}
        entry = build_entry(flow, work, run, state, keys.template, chunk_outputs, image_id, now)
        entry["metadata"]["name"] = entry_name(work.name, f"{keys.template.value}/{number}", flow.uid, run)
        entry["spec"]["instanceKeys"] = [keys.instances[index] for index in chunk]
        entry["spec"]["instances"] = len(chunk)
        entries.append(entry)
    return entries


def _at(values: Any, index: int) -> Any:
    return values[index] if isinstance(values, list) and index < len(values) else None


def build_entry(
    flow: FlowRef,
    work: Work,
    run: int,
    state: WorkState,
    key: CacheKey,
    outputs: Mapping[str, Any],
    image_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    spec = CacheEntrySpec(
        key=key.value,
        work=work.name,
        flow=flow.name,
        run=run,
        job=state.job,
        finished_at=parse_time(state.finished_at),
        created_at=now,
        image=str(work.container.get("image") or ""),
        image_id=image_id,
        parts=key.short_parts(),
        outputs=dict(outputs) if work.outputs else None,
        instances=state.instances,
    )
    labels = naming.child_labels(flow.name, work.name)
    labels[KEY_LABEL] = key.label
    return {
        "apiVersion": API_VERSION,
        "kind": CACHE_ENTRY_KIND,
        "metadata": {
            "name": entry_name(work.name, key.value, flow.uid, run),
            "namespace": flow.namespace,
            "labels": labels,
            "annotations": naming.child_annotations(flow.name, work.name),
        },
        "spec": spec.to_dict(),
    }


async def collect_expired(kube: KubeClient, namespace: str, max_age_seconds: int, now: datetime) -> int:
    """Delete the entries of a namespace older than `max_age_seconds` (its longest maxAge), page by
    page; how many went."""
    deleted = 0
    token: str | None = None
    while True:
        items, token = await kube.cache_entry_page(namespace, token)
        expired: list[Awaitable[None]] = []
        for entry in items:
            created = parse_time((entry.get("spec") or {}).get("createdAt"))
            if created is not None and now - created > timedelta(seconds=max_age_seconds):
                metadata = entry["metadata"]
                expired.append(kube.delete_cache_entry(namespace, metadata["name"], metadata.get("uid")))
        await gather_all(*expired)
        deleted += len(expired)
        if token is None:
            return deleted
