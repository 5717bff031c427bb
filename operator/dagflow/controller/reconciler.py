"""The reconcile loop: one flow at a time per key, bursts of events coalesced into one pass.

Every pass derives its actions from what is observed now (the flow's spec and status, and the
children in the watch-fed indexes), never from what an earlier pass did, so it can stop at any
moment and the next pass (or the next operator) carries on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException

from dagflow.api.models import (
    FINAL_PHASES,
    NO_CACHE_ANNOTATION,
    PLURAL,
    ApprovalDecision,
    DAGFlowSpec,
    FlowPhase,
    NotificationState,
    RunTrigger,
    WorkPhase,
)
from dagflow.controller import metrics
from dagflow.controller.artifacts import (
    STORE_CONFIG_MAP_NAME,
    ArtifactStore,
    FlowIdentity,
    StoreConfigError,
    artifact_paths,
    needs_store,
    parse_store,
    store_missing_message,
    wiring,
)
from dagflow.controller.awaiting import gather_all
from dagflow.controller.builders import (
    FlowRef,
    build_deployment,
    build_job,
    build_matrix_values,
    build_service,
    build_workspace_claim,
    endpoint_url,
)
from dagflow.controller.caching import Cache, collect_expired
from dagflow.controller.history import JobRetirement, history_limit, retire_jobs, stale_config_maps
from dagflow.controller.kube import FlowReplacedError, KubeClient, NameTakenError, api_error_message
from dagflow.controller.notifications import (
    NOTIFY_CONTAINER,
    WAITING_NOTICE_SECONDS,
    DueNotification,
    build_notification_job,
    due_notifications,
    pending_entry,
    run_event,
    settled_entry,
)
from dagflow.controller.observe import (
    ConfigMapObservation,
    DeploymentObservation,
    FlowKey,
    JobObservation,
    PodObservation,
    ServiceObservation,
    observe_job,
    settled_by_pod,
    starved,
)
from dagflow.controller.orderkeeper import QueuedJobs, QueueOrderKeeper, WaitingRun
from dagflow.controller.planner import (
    DONE,
    STOPPED_MESSAGE,
    Plan,
    defer_start,
    plan_run,
    reject_start,
    serving_runs,
)
from dagflow.controller.queueing import QueueWait, WorkloadObservation, observe_workload, queue_wait
from dagflow.controller.queueorder import StageDemand, queue_order_time, stage_demand
from dagflow.controller.runcontrol import (
    begun_status,
    carried_jobs,
    finally_stop_status,
    referenced_claims,
    stopped_status,
    with_run_control,
)
from dagflow.controller.rundecisions import Notice, RunAction, RunDecision, decide_run, run_fingerprint
from dagflow.controller.settings import OperatorSettings
from dagflow.controller.status import (
    MAX_STORED_OBJECT_BYTES,
    OBJECT_MARGIN_BYTES,
    SERVING_CONDITION,
    FlowEvent,
    Transition,
    build_status,
    fit_in_object,
    invalid_status,
    json_size,
    serving_condition,
    summarize,
    transitions,
)
from dagflow.controller.workdata import WorkData
from dagflow.rules import naming
from dagflow.rules.approvals import RunParams, approval_requests, take_in
from dagflow.rules.params import default_params
from dagflow.rules.substitution import BadReference, Values
from dagflow.rules.times import parse_time, seconds_between, timestamp
from dagflow.rules.validation import topological_order, validate_flow

logger = logging.getLogger("dagflow")
# How long a namespace's artifact store, as read, is used before it is read again.
STORE_REREAD_SECONDS = 10.0


class _Child(Protocol):
    @property
    def uid(self) -> str | None: ...


Child = TypeVar("Child", bound=_Child)

PostEvent = Callable[[Mapping[str, Any], FlowEvent], None]
RETRY_DELAYS = (0.5, 1, 2, 5, 10, 30)
# After this long an unseen Job is taken as gone (deleted before its event came): planned afresh.
UNSEEN_JOB_TTL_SECONDS = 60.0
# A pass for a schedule tick comes this long after it, so the tick is due by then.
TICK_MARGIN_SECONDS = 0.5
# A pass over a flow waits at least this long per work for more events: 0.1 s for 1,000 works.
DELAY_PER_WORK_SECONDS = 0.0001
# A Job without a single pod this long after it started is asked about (its FailedCreate Events),
# and asked again at most this often.
STARVED_AFTER_SECONDS = 3.0
# At most this many Jobs are asked about per pass: a quota that starves a thousand Jobs has one reason.
REFUSAL_LOOKUPS_PER_PASS = 10
# A create the API server refused for now (403: RBAC or quota; 404) is tried again after these
# delays, the last one repeating.
CREATE_RETRY_DELAYS = (1, 2, 4, 8, 15, 30)
# A Service made for a serve work is not made again for this long while the watch catches up.
SERVICE_RECHECK_SECONDS = 2.0
# The Workloads of a flow's queued Jobs are read at most this often (a pass in between uses what
# was read), and read again this often while Jobs wait, so that Kueue's words in the status stay
# current without a watch of every Workload in the cluster.
WORKLOAD_CACHE_SECONDS = 5.0
WORKLOAD_RECHECK_SECONDS = 10.0
# Cache entries older than the longest maxAge of their namespace are looked for this often.
CACHE_COLLECT_SECONDS = 600.0


@dataclass(frozen=True)
class ParsedSpec:
    """A validated spec with its topological order and the fingerprint of what runs, or the
    validator's refusal."""

    spec: DAGFlowSpec | None
    order: list[str]
    problem: str | None
    fingerprint: str | None = None


def just_created(job: Mapping[str, Any], uid: str | None) -> JobObservation:
    """A Job as it is the moment it is created, from its manifest: no pod yet, no outcome, and its
    shape (a matrix work's completions, a deadline) as the watch will show it."""
    return replace(observe_job(job), uid=uid)


def newer_or_same(version: Any, than: Any) -> bool:
    """Whether resourceVersion `version` is not older than `than`.

    resourceVersions are etcd revisions, so they grow; should one ever not be a number, it is
    taken as new, as before this check.
    """
    try:
        return int(version) >= int(than)
    except (TypeError, ValueError):
        return True


def skips_gathering(last_skipped: float | None, now: float, delay: float) -> bool:
    """Whether a pass wanted at once skips the wait that gathers a burst of events: yes, unless a
    pass of the flow skipped it less than `delay` ago (a burst of pod successes is then gathered as
    any other, one pass per delay at most)."""
    return last_skipped is None or now - last_skipped >= delay


def run_outcome(status: Mapping[str, Any]) -> FlowPhase | None:
    """How the current run's works ended, as its status says (flows with finally works only)."""
    found = str(status.get("outcome"))
    return FlowPhase(found) if found in FlowPhase._value2member_map_ else None


def status_hold(last_patch: float | None, now: float, spacing: float, phase: FlowPhase) -> float:
    """Seconds a flow's status must wait before its next patch; 0: patch now.

    Each patch of a big flow costs the API server in proportion to the object's size, so a flow's
    patches are `spacing` apart (`status_interval_per_1000_works` scaled by its works). Its first
    patch and a final phase never wait.
    """
    if last_patch is None or phase in FINAL_PHASES:
        return 0.0
    return max(0.0, last_patch + spacing - now)


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_spec(raw: Mapping[str, Any], flow_name: str) -> ParsedSpec:
    problems = validate_flow(raw, flow_name=flow_name)
    if problems:
        listed = "; ".join(str(problem) for problem in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        return ParsedSpec(None, [], f"invalid flow: {listed}{more}")
    spec = DAGFlowSpec.model_validate(raw)
    return ParsedSpec(spec, topological_order(spec), None, run_fingerprint(spec))


class Reconciler:
    """Keeps every known DAGFlow's children and status in line with its spec."""

    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeClient,
        jobs: Mapping[FlowKey, Iterable[JobObservation]],
        deployments: Mapping[FlowKey, Iterable[DeploymentObservation]],
        services: Mapping[FlowKey, Iterable[ServiceObservation]],
        config_maps: Mapping[FlowKey, Iterable[ConfigMapObservation]],
        post_event: PostEvent,
        workers: int = 4,
        wall_clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        pods: Mapping[str, Iterable[PodObservation]] | None = None,
    ) -> None:
        self.settings = settings
        # The time of day (status timestamps, schedules) and the time between passes.
        self._wall_clock, self._monotonic = wall_clock, monotonic
        self.kube = kube
        self.work_data = WorkData(kube)
        self.cache = Cache(kube, self.work_data)
        self.jobs = jobs
        self.deployments = deployments
        self.services = services
        self.config_maps = config_maps
        # The watched pods by the uid of their Job: a pass looks up its own Jobs' pods, however
        # many pods the flow has.
        self.pods: Mapping[str, Iterable[PodObservation]] = pods if pods is not None else {}
        self.post_event = post_event
        self.flows: dict[FlowKey, dict[str, Any]] = {}
        self._parsed: dict[FlowKey, tuple[str, int, ParsedSpec]] = {}
        self._phases: dict[FlowKey, str] = {}
        self._failures: Counter[FlowKey] = Counter()
        self._last_patch: dict[FlowKey, float] = {}
        self._held: dict[FlowKey, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[FlowKey] = asyncio.Queue()
        self._queued: set[FlowKey] = set()
        self._active: set[FlowKey] = set()
        self._dirty: set[FlowKey] = set()
        # Flows a pod's success wants a pass for at once, and when each last had one without the
        # gathering delay (at most one per delay, so a burst of successes is still gathered).
        self._urgent: set[FlowKey] = set()
        self._last_urgent: dict[FlowKey, float] = {}
        self._last_progress = self._monotonic()
        # Jobs this operator created whose watch event has not reached the index yet, by flow and
        # name, with when they were created: a pass in between must neither create them again nor
        # report their works as not started.
        self._unseen_jobs: dict[FlowKey, dict[str, tuple[JobObservation, float]]] = {}
        # Creates refused for now, by (flow, uid, run, work): failures so far, when to try again, why.
        self._create_backoff: dict[tuple[FlowKey, str, int, str], tuple[int, float, str]] = {}
        # Why the pods of a starved Job are refused, by (flow, Job uid): when asked, the answer.
        self._pod_refusals: dict[tuple[FlowKey, str], tuple[float, str | None]] = {}
        # The Workloads of each flow's queued Jobs as last read: when, the Job uids asked about,
        # the Workloads by Job uid, and whether the cluster serves Kueue's API at all.
        self._workloads: dict[
            FlowKey, tuple[float, frozenset[str], dict[str, WorkloadObservation], bool]
        ] = {}
        # Services made recently, by (flow, name): when.
        self._services_made: dict[tuple[FlowKey, str], float] = {}
        self._rechecks: dict[FlowKey, tuple[float, asyncio.TimerHandle]] = {}
        # Approval requests already told to be unusable (flow, gate, token): told once.
        self._refused_approvals: set[tuple[FlowKey, str, str]] = set()
        # The namespaces' artifact stores as last read, and when (see `_store_of`).
        self._stores: dict[str, tuple[float, ArtifactStore | StoreConfigError | None]] = {}
        # Workspace claims known to exist, by (flow, flow uid, claim): made or found once.
        self._claims_made: set[tuple[FlowKey, str, str]] = set()
        # Children the indexes still hold that a list showed gone, by uid (see `forget_vanished`).
        self.vanished: set[str] = set()
        # Flows a list showed gone while their watch had not told, by uid: an event of theirs that
        # was still on its way must not bring them back.
        self._vanished_flows: set[str] = set()
        # Keeps queued flows in their order in Kueue's ClusterQueues, from what the passes see.
        self.queue_order = QueueOrderKeeper(kube, settings.queue_order == "flow", self._workloads_changed)
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"dagflow-reconciler-{n}") for n in range(workers)
        ]
        if workers:
            self._tasks.append(asyncio.create_task(self._relist_forever(), name="dagflow-relist"))
            self._tasks.append(asyncio.create_task(self._collect_cache_forever(), name="dagflow-cache"))

    # -- feeding -------------------------------------------------------------------------------

    def flow_seen(self, key: FlowKey, body: Mapping[str, Any] | None) -> None:
        """Record the newest state of a flow (None: deleted) and schedule a pass."""
        if body is None:
            self.flows.pop(key, None)
            self._forget(key)
            return
        if body["metadata"].get("uid") in self._vanished_flows:
            return
        if self._remember(key, body):
            self.enqueue(key)

    def _remember(self, key: FlowKey, body: Mapping[str, Any]) -> bool:
        """Keep `body` as the flow's newest known state; False when it is older than the one kept.

        A body older than the last status patch this operator made (an event from before it) has
        an older status and a spec no newer, so it is dropped.
        """
        known = self.flows.get(key)
        if known is not None and known["metadata"].get("uid") == body["metadata"].get("uid"):
            if not newer_or_same(
                body["metadata"].get("resourceVersion"), known["metadata"].get("resourceVersion")
            ):
                return False
        elif known is not None:
            self._forget(key)  # deleted and made again under the same name: another flow
        self.flows[key] = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": dict(body["metadata"]),
            "spec": body.get("spec") or {},
            "status": body.get("status") or {},
        }
        return True

    def _forget(self, key: FlowKey) -> None:
        self._unseen_jobs.pop(key, None)
        self._last_urgent.pop(key, None)
        self._last_patch.pop(key, None)
        held = self._held.pop(key, None)
        if held is not None:
            held.cancel()
        recheck = self._rechecks.pop(key, None)
        if recheck is not None:
            recheck[1].cancel()
        self._create_backoff = {
            entry: value for entry, value in self._create_backoff.items() if entry[0] != key
        }
        self._pod_refusals = {entry: value for entry, value in self._pod_refusals.items() if entry[0] != key}
        self._refused_approvals = {entry for entry in self._refused_approvals if entry[0] != key}
        self._claims_made = {entry for entry in self._claims_made if entry[0] != key}
        self._services_made = {
            entry: value for entry, value in self._services_made.items() if entry[0] != key
        }
        self._parsed.pop(key, None)
        self._workloads.pop(key, None)
        self.queue_order.forget(key)
        self._phases.pop(key, None)
        self._update_phase_gauge()

    def _recheck(self, key: FlowKey, delay: float) -> None:
        """Make sure a pass comes within `delay` seconds, even if no event does."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        scheduled = self._rechecks.get(key)
        if scheduled is not None:
            if scheduled[0] <= due:
                return
            scheduled[1].cancel()

        def fire() -> None:
            self._rechecks.pop(key, None)
            self.enqueue(key)

        self._rechecks[key] = (due, loop.call_at(due, fire))

    def enqueue(self, key: FlowKey, at_once: bool = False) -> None:
        """Ask for a pass of the flow. `at_once`: the news may start dependents (a pod succeeded),
        so the pass skips the wait that gathers a burst of events, unless it skipped it lately."""
        if at_once:
            self._urgent.add(key)
        if not (self._queued or self._active):
            self._last_progress = self._monotonic()  # the stall clock starts with the first wish
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def stalled_seconds(self) -> float:
        """How long passes have been wanted (queued or running) without one finishing; 0: idle.

        A loop stuck on a call that never returns shows here, for the liveness probe.
        """
        if not (self._queued or self._active):
            return 0.0
        return self._monotonic() - self._last_progress

    async def stop(self) -> None:
        await self.queue_order.stop()
        for held in self._held.values():
            held.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relist_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.relist_seconds)
            try:
                await self.forget_vanished()
            except (ApiException, OSError) as error:
                logger.warning("Could not list the flows and their children to check the indexes: %r", error)

    async def _collect_cache_forever(self) -> None:
        while True:
            await asyncio.sleep(CACHE_COLLECT_SECONDS)
            try:
                await self.collect_cache()
            except (ApiException, OSError) as error:
                logger.warning("Could not delete expired cache entries: %r", error)

    async def collect_cache(self) -> None:
        """Delete the cache entries older than the longest maxAge of their namespace's flows, in
        each namespace with a flow that caches."""
        longest: dict[str, int] = {}
        for (namespace, _), (_, _, parsed) in list(self._parsed.items()):
            if parsed.spec is None:
                continue
            for work in parsed.spec.works:
                settings = parsed.spec.cache_of(work)
                if settings.enabled:
                    longest[namespace] = max(longest.get(namespace, 0), settings.max_age_seconds)
        now = self._wall_clock()
        for namespace, max_age in sorted(longest.items()):
            deleted = await collect_expired(self.kube, namespace, max_age, now)
            if deleted:
                logger.info("Deleted %d expired cache entries in namespace %s", deleted, namespace)

    async def forget_vanished(self) -> None:
        """Forget the flows and children deleted while a watch was down.

        A watch that comes back too late to resume lists anew, but kopf makes up no deletion for
        what went meanwhile: its indexes keep such a child for ever (a retired Job would hold its
        ConfigMaps, a Job deleted by someone would run for ever in the status) and a deleted flow
        would still get passes. A uid held before a list and missing from it is gone for good,
        since uids are never used again."""
        indexes: dict[str, Mapping[FlowKey, Iterable[_Child]]] = {
            "jobs": self.jobs,
            "deployments": self.deployments,
            "services": self.services,
            "configmaps": self.config_maps,
        }
        held: set[str] = set()
        for resource, index in indexes.items():
            before = {(key[0], child.uid) for key, children in list(index.items()) for child in children}
            held |= {uid for _, uid in before if uid}
            for namespace in sorted({namespace for namespace, _ in before}):
                listed = await self.kube.listed_uids(resource, namespace)
                self.vanished |= {
                    uid for space, uid in before if space == namespace and uid and uid not in listed
                }
        # The indexes never let go of what vanished: keep only what they still hold.
        self.vanished &= held
        flows = {key: str(body["metadata"].get("uid")) for key, body in self.flows.items()}
        for namespace in sorted({namespace for namespace, _ in flows}):
            listed = await self.kube.listed_uids(PLURAL, namespace)
            for key, uid in flows.items():
                known = self.flows.get(key)
                if (
                    key[0] == namespace
                    and uid not in listed
                    and known
                    and known["metadata"].get("uid") == uid
                ):
                    logger.info("Flow %s/%s was deleted while its watch was down", *key)
                    self._vanished_flows.add(uid)
                    self.flow_seen(key, None)

    def _present(self, children: Iterable[Child] | None) -> list[Child]:
        """The children an index holds for a flow, without those known to be gone."""
        return [child for child in children or [] if child.uid not in self.vanished]

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            # Wait a moment so a burst of child events becomes one pass and one status patch. A pass
            # over a big flow costs more, so it waits longer and so runs less often.
            if not self._skips_gathering(key):
                await asyncio.sleep(self._delay(key))
            self._queued.discard(key)
            self._urgent.discard(key)
            self._active.add(key)
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                await self.reconcile(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bad flow or a flaky API must not stop the loop
                self._failures[key] += 1
                retry_after = RETRY_DELAYS[min(self._failures[key], len(RETRY_DELAYS)) - 1]
                logger.error(
                    "Reconcile of DAGFlow %s/%s failed, retrying in %ss: %s", *key, retry_after, error
                )
            finally:
                metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
                self._active.discard(key)
                self._last_progress = self._monotonic()
            if key in self._dirty:
                self._dirty.discard(key)
                self.enqueue(key)
            elif retry_after is not None:
                asyncio.get_running_loop().call_later(retry_after, self.enqueue, key)

    # -- one pass ------------------------------------------------------------------------------

    async def reconcile(self, key: FlowKey) -> None:
        body = self.flows.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        metadata = body["metadata"]
        generation = int(metadata.get("generation") or 1)
        status: dict[str, Any] = body["status"]
        moment = self._wall_clock().replace(microsecond=0)
        now = timestamp(moment)
        parsed = self._parse(key, metadata, body["spec"])
        if parsed.spec is None:
            assert parsed.problem is not None
            self.queue_order.forget(key)
            await self._write_status(key, body, invalid_status(parsed.problem, status, generation, now))
            return
        spec = parsed.spec
        keep = history_limit(spec, self.settings.history_runs)

        flow = FlowRef.from_body(body)
        # Children are this flow's only if it owns them: a flow deleted and made again under the
        # same name must not take over what the old one left for the garbage collector.
        all_jobs = [job for job in self._present(self.jobs.get(key)) if job.owner_uid == flow.uid]
        all_jobs += self._unseen(key, all_jobs)
        # A Job whose pod succeeded counts as succeeded then, when nothing can fail it any more: its
        # dependents start a second before the Job controller would let them, and a new run keeps
        # it as a finished Job of the run before rather than stopping it.
        all_jobs = [settled_by_pod(job, self.pods, now) for job in all_jobs]
        job_uids = {job.name: job.uid for job in all_jobs}
        # The Jobs of notifications stand apart from the works': a running one is left to finish,
        # whatever run comes, and only the notifications look at them.
        notification_jobs = [job for job in all_jobs if job.notification]
        retired = [job for job in all_jobs if not (job.notification and job.outcome is None)]
        all_jobs = [job for job in all_jobs if not job.notification]
        deployments: dict[str, DeploymentObservation] = {
            deployment.work: deployment
            for deployment in self._present(self.deployments.get(key))
            if deployment.owner_uid == flow.uid and not deployment.deleting
        }
        services = {
            service.work: service
            for service in self._present(self.services.get(key))
            if service.owner_uid == flow.uid and not service.deleting
        }
        config_maps = [
            config_map
            for config_map in self._present(self.config_maps.get(key))
            if config_map.owner_uid == flow.uid
        ]
        decision = decide_run(
            spec,
            status,
            metadata.get("annotations") or {},
            moment,
            generation=generation,
            newest_child_run=max(
                [job.run for job in all_jobs] + [deployment.run for deployment in deployments.values()],
                default=0,
            ),
            spec_hash=parsed.fingerprint,
        )
        if decision.next_schedule_time is not None:
            wait = (decision.next_schedule_time - moment).total_seconds()
            self._recheck(key, max(wait, 0.0) + TICK_MARGIN_SECONDS)
        if decision.action == RunAction.STOP:
            # The stopped run was made from the spec of its own generation: a newer spec (its run
            # comes next) is not yet observed.
            run_spec_current = status.get("runSpecHash") in (None, parsed.fingerprint)
            observed = generation if run_spec_current else int(status.get("observedGeneration") or generation)
            # A stopped run waits for nothing in a queue: newer flows no longer wait behind it.
            self.queue_order.forget(key)
            await self._stop_run(key, body, spec, decision, all_jobs, observed, moment, keep)
            return
        if decision.action == RunAction.START:
            # The status names the new run before any child of it exists and before the old run's
            # Jobs go: a request is then acted on once, whenever the operator stops.
            begun = begun_status(
                status, decision, spec, generation, moment, keep, self._wall_clock(), flow.name
            )
            begun.pop("noCache", None)
            new_run = decision.new_run
            annotations = metadata.get("annotations") or {}
            if (
                new_run
                and new_run.trigger == RunTrigger.RERUN
                and annotations.get(NO_CACHE_ANNOTATION) == "true"
            ):
                begun["noCache"] = True  # this run takes nothing from the cache
            if not await self._write_status(key, body, begun):
                return
            self._announce(body, decision)
            status = body["status"]
        run = decision.run
        retirement = retire_jobs(retired, run, keep, carried_jobs(status.get("works") or []))
        notices = {(job.run, job.work): job for job in notification_jobs}
        if status.get("phase") == FlowPhase.STOPPED.value:
            # A stopped run is not planned again; only the run-control fields move (schedule times,
            # requests that were answered without a run).
            # Its serve works go on serving whichever model they serve: still watched, their Service
            # restored, the Serving condition true to their Deployments.
            referenced = {work.get("outputsConfigMap") for work in status.get("works") or []}
            self.queue_order.forget(key)
            await gather_all(
                self._retire(flow, retirement, job_uids),
                self._collect_config_maps(
                    flow, stale_config_maps(config_maps, all_jobs, run, (), referenced)
                ),
                self._keep_serving(key, flow, spec, set(deployments), deployments, services),
            )
            settled = with_run_control(dict(status), decision, keep)
            await self._notify(body, flow, spec, notices, run, settled, now)
            if any(work.serve is not None for work in spec.works):
                settled["conditions"] = [
                    *(c for c in settled.get("conditions") or [] if c.get("type") != SERVING_CONDITION),
                    self._serving_condition(flow, spec, deployments, status, generation, now),
                ]
            if await self._write_status(key, body, settled):
                self._announce(body, decision)
            return
        current_jobs = {job.work: job for job in all_jobs if job.run == run}
        draining = sum(1 for job in all_jobs if job.run != run and job.outcome is None)
        if status.get("run") == run and not await self._take_in_approvals(key, body, spec, run, now):
            return  # a decision on a gate could not be recorded: nothing acts on it before it is
        status = body["status"]
        previous_works = (
            {work["name"]: work for work in status.get("works") or []} if status.get("run") == run else {}
        )
        refusals = await self._pod_refusals_of(key, current_jobs)
        messages = await self.work_data.termination_messages(flow, spec, current_jobs, previous_works)
        collected = await self.work_data.collect_matrix_outputs(flow, spec, run, current_jobs, previous_works)
        launch_failures = await self.work_data.launch_failures(flow, spec, current_jobs)
        stored = await self.work_data.outputs_for_axes(flow, spec, previous_works, collected)
        queue_waits, queued_jobs = await self._queue_waits(key, flow, spec, current_jobs)
        plan = plan_run(
            flow,
            spec,
            parsed.order,
            run,
            current_jobs,
            deployments,
            previous_works,
            now,
            draining=draining,
            pod_refusals=refusals,
            hold=decision.hold,
            termination_messages=messages,
            matrix_outputs=collected,
            launch_failures=launch_failures,
            stored_outputs=stored,
            queue_waits=queue_waits,
            outcome=run_outcome(status),
        )
        params = RunParams.of_run(
            spec, status.get("params") or default_params(spec), list(previous_works.values())
        )
        if self.cache.wanted(spec) and plan.start:

            def replan(previous: Mapping[str, Mapping[str, Any]]) -> Plan:
                return plan_run(
                    flow,
                    spec,
                    parsed.order,
                    run,
                    current_jobs,
                    deployments,
                    previous,
                    now,
                    draining=draining,
                    pod_refusals=refusals,
                    hold=decision.hold,
                    termination_messages=messages,
                    matrix_outputs=collected,
                    launch_failures=launch_failures,
                    stored_outputs=stored,
                    queue_waits=queue_waits,
                    outcome=run_outcome(status),
                )

            taken = await self.cache.take_hits(
                flow, spec, run, params, plan, previous_works, moment, not status.get("noCache"), replan
            )
            plan = taken.plan
        await self.work_data.keep_outputs_out_of_status(flow, spec, run, plan, previous_works)
        if self.cache.wanted(spec):
            await self.cache.record(flow, spec, run, params, plan, job_uids, moment)
        self._wake_for_gates(key, spec, plan, now)
        if decision.waiting:
            plan.message = "; ".join([*([plan.message] if plan.message else []), *decision.waiting])
        unfinished = {state.name for state in plan.works if state.phase not in DONE}
        referenced = {state.outputs_config_map for state in plan.works if state.outputs_config_map}
        stale = stale_config_maps(config_maps, all_jobs, run, unfinished, referenced)
        # Before its Jobs are made: the place of the works it starts is kept from now on.
        self._keep_place(key, flow, spec, plan, current_jobs, queued_jobs, status.get("startedAt"))
        store = await self._store_of(flow.namespace) if plan.start else None
        if isinstance(store, ArtifactStore):
            # Where the works it starts leave their artifacts and logs, for whoever reads the flow
            # (`dagflow logs` once the pods are gone); carried by every later status of the run.
            body["status"]["artifactStore"] = store.to_dict()
        await gather_all(
            self._start_children(
                key, flow, spec, run, plan, params, deployments, status.get("workspaceClaim"), store
            ),
            self._retire(flow, retirement, job_uids),
            self._stop_failed_run(flow, plan, job_uids),
            self._collect_config_maps(flow, stale),
            self._keep_serving(key, flow, spec, self._restorable(plan), deployments, services),
        )
        hold = self._status_hold(key, len(spec.works), plan.phase)
        if hold > 0:
            # Children are never held back, only the status of a big flow between two patches.
            if key not in self._held:
                self._held[key] = asyncio.get_running_loop().call_later(hold, self._release, key)
            return
        written = await self._publish(
            key, body, plan, previous_works, run, generation, now, decision, keep, (flow, spec, notices)
        )
        if written and decision.action != RunAction.START:
            self._announce(body, decision)

    def _announce(self, body: Mapping[str, Any], decision: RunDecision) -> None:
        """Post the Events of what a run decision did that no status field shows on its own."""
        for notice in decision.notices:
            self.post_event(body, notice)

    async def _stop_run(
        self,
        key: FlowKey,
        body: dict[str, Any],
        spec: DAGFlowSpec,
        decision: RunDecision,
        jobs: Iterable[JobObservation],
        generation: int,
        moment: datetime,
        keep: int,
    ) -> None:
        """Stop the current run: delete its running Jobs, then record it Stopped. Stopped before its
        finally works began (none has left Pending), only its works stop: the finally works run
        next, as cleanup, and the run ends Stopped once they have (its outcome is recorded Stopped
        now).

        The Jobs go first: should the operator stop in between, the next pass finds the request
        still unanswered and stops the run again.
        """
        finally_next = (
            bool(spec.finally_works)
            and not body["status"].get("outcome")
            and all(
                work.get("phase") == WorkPhase.PENDING.value
                for work in body["status"].get("works") or []
                if work.get("finally")
            )
        )
        namespace = body["metadata"]["namespace"]
        running = [
            job
            for job in jobs
            if job.run == decision.run
            and job.outcome is None
            and not job.deleting
            and not (finally_next and spec.is_finally(job.work))
        ]
        await gather_all(
            *(self.kube.delete_job(namespace, job.name, job.uid, wait_for_pods=True) for job in running)
        )
        for job in running:
            logger.info("Deleted Job %s/%s of a stopped run", namespace, job.name)
        if finally_next:
            stopped = finally_stop_status(body["status"], decision, generation, moment, keep)
            said = f"Run {decision.run} {STOPPED_MESSAGE}: its finally works run next"
        else:
            stopped = stopped_status(body["status"], decision, generation, moment, keep)
            said = f"Run {decision.run} {STOPPED_MESSAGE}"
        if await self._write_status(key, body, stopped):
            self._announce(body, decision)
            self.post_event(body, Notice("RunStopped", said))

    async def _publish(
        self,
        key: FlowKey,
        body: dict[str, Any],
        plan: Plan,
        previous_works: Mapping[str, Mapping[str, Any]],
        run: int,
        generation: int,
        now: str,
        decision: RunDecision,
        keep: int,
        notifying: tuple[FlowRef, DAGFlowSpec, Mapping[tuple[int, str], JobObservation]],
    ) -> bool:
        """Write the plan's status (with its notifications, `notifying`: the flow, its spec and
        its notifications' Jobs) and announce the works' moves since the last status written;
        True when the status changed."""
        new_status = with_run_control(
            build_status(plan, body["status"], run, generation, now), decision, keep
        )
        await self._notify(body, *notifying, run, new_status, now)
        if not await self._write_status(key, body, new_status):
            return False
        changed = transitions(previous_works, plan)
        for transition in changed:
            self._observe_duration(plan, transition)
        for event in summarize(changed):
            self.post_event(body, event)
        return True

    async def _notify(
        self,
        body: Mapping[str, Any],
        flow: FlowRef,
        spec: DAGFlowSpec,
        notices: Mapping[tuple[int, str], JobObservation],
        run: int,
        status: dict[str, Any],
        now: str,
    ) -> None:
        """Make the Jobs of the notifications `status`'s phase calls for, and record in it what
        became of each of this run's, and of an earlier run's still being posted (`notices`: their
        Jobs by run and work name)."""
        entries = [
            dict(entry)
            for entry in status.get("notifications") or []
            if entry.get("run") == run or entry.get("state") == NotificationState.PENDING.value
        ]
        phase = str(status.get("phase"))
        if spec.notify and phase in FlowPhase._value2member_map_:
            for due in due_notifications(spec, run, FlowPhase(phase), entries):
                sent = await self._send(flow, spec, run, due, status)
                if sent is not None:
                    entries.append(sent)
        for position, entry in enumerate(entries):
            job = notices.get(
                (int(entry["run"]), naming.notification_work(int(entry["index"]), str(entry["on"])))
            )
            if entry.get("state") != NotificationState.PENDING.value or job is None:
                continue
            if job.outcome is None:
                entries[position] = await self._waiting_notification(flow, entry, job, now)
                continue
            reported = await self.work_data.notification_result(flow, job, NOTIFY_CONTAINER)
            entries[position] = settled = settled_entry(entry, job, reported, now)
            sent = settled["state"] == NotificationState.SENT.value
            what = f"Notification {entry['index']} of run {entry['run']} ({entry['on']})"
            self.post_event(
                body,
                Notice(
                    "NotificationSent" if sent else "NotificationFailed",
                    f"{what} sent (HTTP {settled.get('httpStatus')})"
                    if sent
                    else f"{what} failed: {settled['message']}",
                    warning=not sent,
                ),
            )
        if entries:
            status["notifications"] = entries
        else:
            status.pop("notifications", None)

    async def _take_in_approvals(
        self, key: FlowKey, body: dict[str, Any], spec: DAGFlowSpec, run: int, now: str
    ) -> bool:
        """Record the decisions on the run's waiting gates in the status before anything acts on
        them (a gate never starts on a decision the status does not hold), telling each in an Event,
        and a request that cannot be taken in once. False when a decision could not be recorded."""
        if not any(work.approval is not None for work in spec.works):
            return True
        requests = approval_requests((body.get("metadata") or {}).get("annotations") or {})
        if not requests:
            return True
        status = body["status"]
        works: dict[str, Mapping[str, Any]] = {work["name"]: work for work in status.get("works") or []}
        taken, refused = take_in(spec, run, works, requests, now, self.settings.approval_policy is not None)
        if taken:
            recorded = {**status, "works": [works[work["name"]] for work in status.get("works") or []]}
            if not await self._write_status(key, body, recorded):
                return False
        for request in taken:
            words = f": {request.message}" if request.message else ""
            verb = "approved" if request.decision == ApprovalDecision.APPROVED else "rejected"
            self.post_event(
                body,
                Notice(
                    request.decision.value, f"Work {request.work} of run {run} {verb} by {request.by}{words}"
                ),
            )
        for unusable in refused:
            told = (key, unusable.work, unusable.token)
            if told not in self._refused_approvals:
                self._refused_approvals.add(told)
                self.post_event(
                    body,
                    Notice(
                        "ApprovalIgnored",
                        f"The approval request for work {unusable.work} was ignored: {unusable.why}",
                        warning=True,
                    ),
                )
        return True

    def _wake_for_gates(self, key: FlowKey, spec: DAGFlowSpec, plan: Plan, now: str) -> None:
        """A pass when the first waiting gate's time is up, so that it fails then."""
        timeouts = {
            work.name: work.approval.timeout_seconds for work in spec.works if work.approval is not None
        }
        left = [
            timeouts[state.name] - seconds_between(state.approval["requestedAt"], now)
            for state in plan.works
            if state.phase == WorkPhase.WAITING
            and state.name in timeouts
            and state.approval
            and state.approval.get("requestedAt")
        ]
        if left:
            self._recheck(key, max(min(left), 0.0) + TICK_MARGIN_SECONDS)

    async def _send(
        self, flow: FlowRef, spec: DAGFlowSpec, run: int, due: DueNotification, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Make the Job whose pod posts a due notification; its entry (Pending, or Failed when the
        Job cannot be made), or None when it is to be made on a later pass."""
        event = run_event(flow, run, FlowPhase(status["phase"]), status)
        job = build_notification_job(flow, spec, run, due, event, self.settings)
        entry = pending_entry(run, due, job["metadata"]["name"])
        try:
            await self.kube.create_job(job)
        except NameTakenError as error:
            if error.deleting or (
                error.owner_uid is not None and not self._flow_alive(flow.namespace, error)
            ):
                # Left by a flow deleted under this name, on its way out: made once it is gone.
                self._recheck((flow.namespace, flow.name), 2.0)
                return None
            return {**entry, "state": NotificationState.FAILED.value, "message": str(error)}
        except ApiException as error:
            why = api_error_message(error)
            return {
                **entry,
                "state": NotificationState.FAILED.value,
                "message": f"its Job was refused: {why}",
            }
        logger.info("Created Job %s/%s to post a notification", flow.namespace, job["metadata"]["name"])
        return entry

    async def _waiting_notification(
        self, flow: FlowRef, entry: Mapping[str, Any], job: JobObservation, now: str
    ) -> dict[str, Any]:
        """A notification whose pod has not ended: after a moment, why its pod waits, if it does (a
        Secret or a key that is not there)."""
        started = parse_time(job.started_at)
        if job.uid is None or started is None:
            return dict(entry)
        waited = (parse_time(now) or started) - started
        if waited < timedelta(seconds=WAITING_NOTICE_SECONDS):
            # No event may come while its pod waits: a pass then looks at why.
            self._recheck((flow.namespace, flow.name), WAITING_NOTICE_SECONDS - waited.total_seconds() + 0.5)
            return dict(entry)
        waiting = await self.kube.pod_waiting(flow.namespace, job.uid, NOTIFY_CONTAINER)
        updated = {key: value for key, value in entry.items() if key != "message"}
        if waiting:
            updated["message"] = f"its pod cannot start: {waiting}"[:1024]
        return updated

    def _skips_gathering(self, key: FlowKey) -> bool:
        now = self._monotonic()
        if key not in self._urgent or not skips_gathering(self._last_urgent.get(key), now, self._delay(key)):
            return False
        self._last_urgent[key] = now
        return True

    def _delay(self, key: FlowKey) -> float:
        cached = self._parsed.get(key)
        works = len(cached[2].spec.works) if cached and cached[2].spec else 0
        return max(self.settings.reconcile_delay_seconds, works * DELAY_PER_WORK_SECONDS)

    def _release(self, key: FlowKey) -> None:
        self._held.pop(key, None)
        self.enqueue(key)

    def _status_hold(self, key: FlowKey, works: int, phase: FlowPhase) -> float:
        spacing = self.settings.status_interval_per_1000_works * works / 1000
        return status_hold(self._last_patch.get(key), self._monotonic(), spacing, phase)

    def _parse(self, key: FlowKey, metadata: Mapping[str, Any], raw_spec: Mapping[str, Any]) -> ParsedSpec:
        uid, generation = str(metadata.get("uid")), int(metadata.get("generation") or 1)
        cached = self._parsed.get(key)
        if cached and cached[0] == uid and cached[1] == generation:
            return cached[2]
        parsed = parse_spec(raw_spec, str(metadata["name"]))
        if parsed.problem:
            logger.warning("Refused DAGFlow %s/%s: %s", *key, parsed.problem)
        self._parsed[key] = (uid, generation, parsed)
        return parsed

    def _unseen(self, key: FlowKey, indexed: list[JobObservation]) -> list[JobObservation]:
        """Jobs this operator created for the flow that the watch has not brought yet."""
        unseen = self._unseen_jobs.get(key)
        if not unseen:
            return []
        seen = {job.name for job in indexed}
        deadline = self._monotonic() - UNSEEN_JOB_TTL_SECONDS
        found = []
        for name, (job, created) in list(unseen.items()):
            if name in seen or created < deadline:
                del unseen[name]
            else:
                found.append(job)
        if not unseen:
            del self._unseen_jobs[key]
        return found

    async def _queue_waits(
        self,
        key: FlowKey,
        flow: FlowRef,
        spec: DAGFlowSpec,
        jobs: Mapping[str, JobObservation],
    ) -> tuple[dict[str, QueueWait], QueuedJobs | None]:
        """Why each of this run's Jobs that Kueue holds waits, by work, from its Workload; and the
        Workloads in step with spec.suspend: deactivated while the flow is suspended, active again
        after. The Jobs themselves are Kueue's to suspend and unsuspend.

        Only flows with such Jobs read anything: a list of their Workloads by Job uid, at most every
        WORKLOAD_CACHE_SECONDS, instead of a watch of every Workload in the cluster (Workloads carry
        no label of the operator's to select its own by).
        """
        held = {work: job for work, job in jobs.items() if job.waits_for_kueue and job.uid}
        if not held:
            self._workloads.pop(key, None)
            return {}, ()
        uids = frozenset(str(job.uid) for job in held.values())
        now = self._monotonic()
        cached = self._workloads.get(key)
        if cached is None or now - cached[0] >= WORKLOAD_CACHE_SECONDS or not uids <= cached[1]:
            try:
                listed = await self.kube.workloads_of_jobs(flow.namespace, sorted(uids))
            except ApiException as error:
                if error.status is None or error.status >= 500 or error.status == 429:
                    raise
                logger.warning(
                    "Could not read the Workloads of DAGFlow %s/%s: %s", *key, api_error_message(error)
                )
                listed = []
            observed = [observe_workload(body) for body in listed or []]
            by_job = {workload.job_uid: workload for workload in observed if workload is not None}
            cached = (now, uids, by_job, listed is None)
            self._workloads[key] = cached
        _, _, workloads, missing = cached
        self._recheck(key, WORKLOAD_RECHECK_SECONDS)
        waits = {}
        for work, job in held.items():
            workload = workloads.get(str(job.uid))
            if workload is not None and not workload.admitted:
                workload = await self._follow_suspend(flow, spec.suspend, workload)
                workloads[workload.job_uid] = workload
            waits[work] = queue_wait(job.queue, workload, spec.suspend, missing)
        if missing:
            return waits, None
        return waits, tuple((job, workloads.get(str(job.uid))) for job in held.values())

    def _keep_place(
        self,
        key: FlowKey,
        flow: FlowRef,
        spec: DAGFlowSpec,
        plan: Plan,
        jobs: Mapping[str, JobObservation],
        queued_jobs: QueuedJobs | None,
        started_at: str | None,
    ) -> None:
        """Tell the queue order keeper what this run waits for in Kueue and what it will soon ask."""
        if queued_jobs is None:
            return  # its Workloads could not be read: what was known stays until they can
        demand = StageDemand()
        queued_flow = spec.queue_name is not None or any(work.queue_name for work in spec.works)
        if queued_flow and plan.phase not in FINAL_PHASES:
            phases = {state.name: state.phase for state in plan.works}
            demand = stage_demand(spec, phases, jobs, plan.start, self.settings.gpu_resource)
        if not queued_jobs and not demand.starting and not demand.next_stages:
            self.queue_order.forget(key)
            return
        order = (queue_order_time(started_at), flow.uid)
        waiting = WaitingRun(
            flow.namespace, order, spec.suspend, queued_jobs, demand, spec.priority_class_name
        )
        self.queue_order.update(key, waiting)

    def _workloads_changed(self, key: FlowKey) -> None:
        """The queue order keeper held or released one of the flow's Workloads: read them again."""
        self._workloads.pop(key, None)
        self.enqueue(key)

    async def _follow_suspend(
        self, flow: FlowRef, suspended: bool, workload: WorkloadObservation
    ) -> WorkloadObservation:
        """Deactivate the Workload of a waiting Job while the flow is suspended; activate it again
        after, if the operator deactivated it (one an administrator deactivated stays so)."""
        if suspended and workload.active:
            await self.kube.set_workload_active(flow.namespace, workload.name, False)
            logger.info(
                "Deactivated Workload %s/%s of suspended DAGFlow %s", flow.namespace, workload.name, flow.name
            )
            return replace(workload, active=False, deactivated_by_operator=True)
        if not suspended and not workload.active and workload.deactivated_by_operator:
            await self.kube.set_workload_active(flow.namespace, workload.name, True)
            logger.info(
                "Activated Workload %s/%s of resumed DAGFlow %s", flow.namespace, workload.name, flow.name
            )
            return replace(workload, active=True, deactivated_by_operator=False)
        return workload

    async def _pod_refusals_of(self, key: FlowKey, jobs: Mapping[str, JobObservation]) -> dict[str, str]:
        """Why the API server refuses the pods of this run's Jobs that have none, by work.

        A Job whose pods are refused (Pod Security, quota) changes no more, so no event would ever
        bring the reason: the Job's FailedCreate Events are asked for, and asked again later.
        """
        found: dict[str, str] = {}
        budget = REFUSAL_LOOKUPS_PER_PASS
        now, wall = self._monotonic(), self._wall_clock()
        starved_uids = set()
        for work, job in jobs.items():
            if not job.uid or not job.started_at or not starved(job, self.pods):
                continue
            starved_uids.add(job.uid)
            age = (wall - datetime.fromisoformat(job.started_at.replace("Z", "+00:00"))).total_seconds()
            if age < STARVED_AFTER_SECONDS:
                self._recheck(key, STARVED_AFTER_SECONDS - age + 0.1)
                continue
            asked = self._pod_refusals.get((key, job.uid))
            if (asked is None or now - asked[0] >= STARVED_AFTER_SECONDS) and budget > 0:
                budget -= 1
                asked = (now, await self.kube.pod_refusal(key[0], job.uid))
                self._pod_refusals[(key, job.uid)] = asked
            if asked and asked[1]:
                found[work] = asked[1]
            self._recheck(key, STARVED_AFTER_SECONDS)
        for entry in [
            entry for entry in self._pod_refusals if entry[0] == key and entry[1] not in starved_uids
        ]:
            del self._pod_refusals[entry]
        return found

    async def _start_children(
        self,
        key: FlowKey,
        flow: FlowRef,
        spec: DAGFlowSpec,
        run: int,
        plan: Plan,
        params: RunParams,
        deployments: Mapping[str, DeploymentObservation],
        workspace_claim: str | None = None,
        store: ArtifactStore | StoreConfigError | None = None,
    ) -> None:
        async def start(work_name: str, create: Callable[[], Awaitable[None]]) -> None:
            backoff_key = (key, flow.uid, run, work_name)
            backoff = self._create_backoff.get(backoff_key)
            if backoff is not None and backoff[1] > self._monotonic():
                defer_start(plan, spec, work_name, backoff[2])
                self._recheck(key, backoff[1] - self._monotonic())
                return
            try:
                await create()
                self._create_backoff.pop(backoff_key, None)
            except ApiException as error:
                if error.status in (403, 404):
                    # Forbidden (RBAC, a quota) or not found (yet): may pass later, so it is asked
                    # again with growing pauses while the work waits and says why.
                    failures = (backoff[0] if backoff else 0) + 1
                    delay = CREATE_RETRY_DELAYS[min(failures, len(CREATE_RETRY_DELAYS)) - 1]
                    message = (
                        f"waiting: the API server refused its child ({api_error_message(error)}); retrying"
                    )
                    self._create_backoff[backoff_key] = (failures, self._monotonic() + delay, message)
                    defer_start(plan, spec, work_name, message)
                    self._recheck(key, delay)
                    return
                if error.status is None or not 400 <= error.status < 500 or error.status == 429:
                    raise
                # An invalid object (400, 422): the API server will refuse it every time.
                refuse(work_name, f"rejected by the API server: {api_error_message(error)}")
            except ValueError as error:  # the client's own checks of the manifest
                refuse(work_name, f"invalid child object: {error}")
            except NameTakenError as error:
                owner_gone = error.owner_uid is not None and not self._flow_alive(key[0], error)
                if owner_gone or error.deleting:
                    why = "left by a deleted flow" if owner_gone else "still being deleted"
                    defer_start(
                        plan, spec, work_name, f"waiting for {error.kind} {error.name}, {why}, to be removed"
                    )
                    self._recheck(key, 2.0)
                else:
                    refuse(work_name, str(error))

        def refuse(work_name: str, message: str) -> None:
            reject_start(plan, spec, work_name, message)
            logger.warning(
                "Refused the child of work %s in DAGFlow %s/%s: %s",
                work_name,
                flow.namespace,
                flow.name,
                message,
            )

        outputs = await self.work_data.outputs_for(flow, plan) if plan.start else {}
        paths = artifact_paths(spec, outputs) if plan.start else {}
        identity = FlowIdentity(flow.namespace, flow.name, flow.uid)
        tasks = []
        for work in list(plan.start):
            is_finally = spec.is_finally(work.name)
            if not isinstance(store, ArtifactStore) and needs_store(work):
                refuse(work.name, store_missing_message(flow.namespace, work, store))
                continue
            values = Values(
                run=run,
                flow=flow.name,
                work=work.name,
                params=params.of(work.name),
                outputs=outputs,
                run_phase=plan.outcome.value if is_finally and plan.outcome else None,
                failed_works=tuple(plan.failed_works) if is_finally else (),
                outputs_optional=is_finally,
                artifact_paths=paths,
            )
            instances = plan.instances.get(work.name)
            claim = workspace_claim if spec.mounts_workspace(work) else None
            wired = (
                wiring(store, identity, spec, work, run, outputs)
                if isinstance(store, ArtifactStore)
                else None
            )
            try:
                if work.serve is None:
                    job = build_job(flow, spec, work, run, self.settings, values, instances, claim, wired)
                else:
                    serving = deployments[work.name].serving_run if work.name in deployments else None
                    rolled_from = serving if serving != run else None
                    deployment = build_deployment(
                        flow, spec, work, run, self.settings, values, rolled_from, claim, wired
                    )
            except BadReference as error:
                refuse(work.name, str(error))
                continue
            create: Callable[[], Awaitable[None]]
            if work.serve is None and instances is not None:
                # The pods mount the values, so they exist before the Job does.
                matrix_values = build_matrix_values(
                    flow,
                    work,
                    run,
                    plan.combinations[work.name],
                    plan.cached_outputs.get(work.name),
                    instances.job_indexes,
                )
                create = partial(self._create_matrix_job, matrix_values, partial(self._create_job, key, job))
            elif work.serve is None:
                create = partial(self._create_job, key, job)
            else:
                create = partial(self._create_serving, key, deployment, build_service(flow, work, run))
            if claim is not None:
                # The claim exists before the pods that mount it: a pod whose claim is missing is
                # not scheduled until the scheduler looks again.
                create = partial(self._make_workspace, key, flow, spec, run, claim, create)
            tasks.append(start(work.name, create))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]

    async def _store_of(self, namespace: str) -> ArtifactStore | StoreConfigError | None:
        """The namespace's artifact store: its ConfigMap's, else the operator's; a broken one as the
        error that says why. Read again at most every STORE_REREAD_SECONDS."""
        known = self._stores.get(namespace)
        if known is not None and self._monotonic() - known[0] < STORE_REREAD_SECONDS:
            return known[1]
        found: ArtifactStore | StoreConfigError | None
        try:
            data = await self.kube.read_users_config_map(namespace, STORE_CONFIG_MAP_NAME)
            where = f"ConfigMap {namespace}/{STORE_CONFIG_MAP_NAME}"
            if data is None and self.settings.artifact_store is not None:
                data, where = self.settings.artifact_store, "the operator's artifactStore setting"
            found = parse_store(data, where) if data is not None else None
        except StoreConfigError as error:
            found = error
        except ApiException as error:
            found = StoreConfigError(
                f"the artifact store of namespace {namespace} could not be read: {api_error_message(error)}"
            )
        self._stores[namespace] = (self._monotonic(), found)
        return found

    async def _make_workspace(
        self,
        key: FlowKey,
        flow: FlowRef,
        spec: DAGFlowSpec,
        run: int,
        claim: str,
        create_child: Callable[[], Awaitable[None]],
    ) -> None:
        """Make the run's workspace claim unless it is known to exist, then the work's child."""
        if (key, flow.uid, claim) not in self._claims_made:
            if await self.kube.create_claim(build_workspace_claim(flow, spec, run, claim)):
                metrics.CHILDREN_CREATED.labels(kind="PersistentVolumeClaim").inc()
                logger.info("Created PersistentVolumeClaim %s/%s", flow.namespace, claim)
            self._claims_made.add((key, flow.uid, claim))
        await create_child()

    async def _delete_dropped_claims(self, key: FlowKey, body: Mapping[str, Any], dropped: set[str]) -> None:
        """Delete the workspace claims a status write let go of: no run it keeps uses them any more.
        Pods still using one keep it until they end (the API server's storage-object-in-use
        protection)."""
        metadata = body["metadata"]
        for claim in sorted(dropped):
            self._claims_made.discard((key, str(metadata.get("uid")), claim))
            try:
                await self.kube.delete_claim(metadata["namespace"], claim, str(metadata.get("uid")))
            except ApiException as error:
                logger.warning(
                    "Could not delete PersistentVolumeClaim %s/%s of DAGFlow %s: %s",
                    metadata["namespace"],
                    claim,
                    metadata["name"],
                    api_error_message(error),
                )
            else:
                logger.info(
                    "Deleted PersistentVolumeClaim %s/%s, which no kept run uses",
                    metadata["namespace"],
                    claim,
                )

    def _flow_alive(self, namespace: str, error: NameTakenError) -> bool:
        """Whether the DAGFlow that owns the object in the way still exists."""
        owner = self.flows.get((namespace, error.owner_name or ""))
        return owner is not None and owner["metadata"].get("uid") == error.owner_uid

    async def _create_job(self, key: FlowKey, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        created, uid = await self.kube.create_job(job)
        if created:
            metrics.CHILDREN_CREATED.labels(kind="Job").inc()
            logger.info("Created Job %s/%s", job["metadata"]["namespace"], name)
        if key in self.flows:
            self._unseen_jobs.setdefault(key, {})[name] = (
                just_created(job, uid),
                self._monotonic(),
            )

    async def _create_matrix_job(
        self, matrix_values: dict[str, Any], create_job: Callable[[], Awaitable[None]]
    ) -> None:
        await self.kube.create_config_map(matrix_values)
        await create_job()

    async def _create_serving(
        self, key: FlowKey, deployment: dict[str, Any], service: dict[str, Any]
    ) -> None:
        await self.kube.ensure_service(service)
        self._services_made[(key, service["metadata"]["name"])] = self._monotonic()
        await self.kube.ensure_deployment(deployment)
        logger.info(
            "Rolled out Deployment %s/%s", deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        )

    @staticmethod
    def _restorable(plan: Plan) -> set[str]:
        """The serve works whose deleted Service a pass brings back: those serving or rolling out,
        not those whose Deployment this pass makes (it makes their Service too)."""
        starting = {work.name for work in plan.start}
        return {
            state.name
            for state in plan.works
            if state.phase in (WorkPhase.RUNNING, WorkPhase.SERVING) and state.name not in starting
        }

    def _serving_condition(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        deployments: Mapping[str, DeploymentObservation],
        status: Mapping[str, Any],
        generation: int,
        now: str,
    ) -> dict[str, Any]:
        serve_works = [work.name for work in spec.works if work.serve is not None]
        endpoints = {work.name: url for work in spec.works if (url := endpoint_url(flow, work))}
        return serving_condition(
            serve_works, serving_runs(spec, deployments), endpoints, status, generation, now
        )

    async def _restore_service(self, flow: FlowRef, service: dict[str, Any]) -> None:
        """Make a serve work's deleted Service again, unless something else took its name meanwhile:
        that one is left alone, and the pass goes on."""
        name = service["metadata"]["name"]
        try:
            await self.kube.ensure_service(service)
        except NameTakenError as error:
            logger.warning("Could not restore Service %s/%s: %s", flow.namespace, name, error)
            return
        logger.info("Restored Service %s/%s", flow.namespace, name)

    async def _stop_failed_run(self, flow: FlowRef, plan: Plan, uids: Mapping[str, str | None]) -> None:
        """Delete the Jobs of a run that failed under FailFast: it holds no nodes or GPUs."""
        await gather_all(
            *(
                self.kube.delete_job(flow.namespace, name, uids.get(name), wait_for_pods=True)
                for name in plan.stop
            )
        )
        for name in plan.stop:
            logger.info("Deleted Job %s/%s of a failed run (FailFast)", flow.namespace, name)

    async def _keep_serving(
        self,
        key: FlowKey,
        flow: FlowRef,
        spec: DAGFlowSpec,
        restorable: set[str],
        deployments: Mapping[str, DeploymentObservation],
        services: Mapping[str, ServiceObservation],
    ) -> None:
        """Bring back the deleted Service of a serve work in `restorable`; remove the Deployment and
        Service of a work that is no longer a serve work (removed from the spec, or now a batch work)."""
        serve_works = {work.name: work for work in spec.works if work.serve is not None}
        calls = []
        now = self._monotonic()
        for name, work in serve_works.items():
            if name not in restorable or name in services or name not in deployments:
                continue
            made = self._services_made.get((key, naming.serve_name(flow.name, name)))
            if made is not None and now - made < SERVICE_RECHECK_SECONDS:
                self._recheck(key, made + SERVICE_RECHECK_SECONDS - now)
                continue
            service = build_service(flow, work, deployments[name].run)
            self._services_made[(key, service["metadata"]["name"])] = now
            calls.append(self._restore_service(flow, service))
        # Each only where this flow owns it (both maps hold only this flow's): a Service of someone
        # else's under the same name stays.
        for work_name in sorted(deployments.keys() - serve_works.keys()):
            deployment = deployments[work_name]
            logger.info(
                "Deleted Deployment %s/%s of a work that no longer serves", flow.namespace, deployment.name
            )
            calls.append(self.kube.delete_deployment(flow.namespace, deployment.name, deployment.uid))
        for work_name in sorted(services.keys() - serve_works.keys()):
            orphan = services[work_name]
            logger.info("Deleted Service %s/%s of a work that no longer serves", flow.namespace, orphan.name)
            calls.append(self.kube.delete_service(flow.namespace, orphan.name, orphan.uid))
        await gather_all(*calls)

    async def _retire(self, flow: FlowRef, retirement: JobRetirement, uids: Mapping[str, str | None]) -> None:
        """Stop the running Jobs of earlier runs; delete finished ones beyond the kept history.

        A running Job is deleted in the foreground: it stays, being deleted, until its pods are
        gone, so the new run waits for them (see `draining` in the planner). Its ConfigMaps go in a
        later pass, once it is gone (`stale_config_maps`).
        """
        # By uid: a Job made since under the same name by someone else is never deleted.
        calls = [
            self.kube.delete_job(flow.namespace, name, uids.get(name), wait_for_pods=True)
            for name in retirement.stop
        ]
        calls += [self.kube.delete_job(flow.namespace, name, uids.get(name)) for name in retirement.delete]
        await gather_all(*calls)

    async def _collect_config_maps(self, flow: FlowRef, stale: Iterable[ConfigMapObservation]) -> None:
        """Delete the flow's ConfigMaps that nothing uses any more, each by its uid."""
        calls = []
        for config_map in stale:
            logger.info(
                "Deleted ConfigMap %s/%s, which nothing uses any more", flow.namespace, config_map.name
            )
            calls.append(self.kube.delete_config_map(flow.namespace, config_map.name, config_map.uid))
        await gather_all(*calls)

    async def _write_status(self, key: FlowKey, body: dict[str, Any], status: dict[str, Any]) -> bool:
        """Patch the status if it changed; True when it did."""
        previous: dict[str, Any] = body["status"]
        if status == previous:
            return False
        room = MAX_STORED_OBJECT_BYTES - OBJECT_MARGIN_BYTES - json_size({**body, "status": None})
        status = fit_in_object(status, room)
        if status == previous:
            return False
        metadata = body["metadata"]
        try:
            written = await self.kube.replace_flow_status(
                metadata["namespace"], metadata["name"], str(metadata.get("uid")), status
            )
        except FlowReplacedError:
            return False  # deleted meanwhile; the new flow of that name has passes of its own
        except ApiException as error:
            if error.status == 404:  # deleted meanwhile
                return False
            raise
        # Later passes must see this status before the watch brings it back, or they would
        # announce the same transitions again; and no event from before this patch may bring the
        # old status back (see `_remember`).
        body["status"] = status
        dropped = referenced_claims(previous) - referenced_claims(status)
        if dropped:
            await self._delete_dropped_claims(key, body, dropped)
        if key in self.flows:  # not deleted meanwhile
            self._remember(key, written)
        self._last_patch[key] = self._monotonic()
        self._phases[key] = status["phase"]
        self._update_phase_gauge()
        return True

    def _update_phase_gauge(self) -> None:
        counts = Counter(self._phases.values())
        for phase in FlowPhase:
            metrics.FLOWS.labels(phase=phase.value).set(counts.get(phase.value, 0))

    @staticmethod
    def _observe_duration(plan: Plan, transition: Transition) -> None:
        if transition.phase not in (WorkPhase.SUCCEEDED, WorkPhase.FAILED):
            return
        state = next(state for state in plan.works if state.name == transition.work)
        if state.started_at and state.finished_at:
            started = datetime.fromisoformat(state.started_at.replace("Z", "+00:00"))
            finished = datetime.fromisoformat(state.finished_at.replace("Z", "+00:00"))
            metrics.WORK_DURATION.labels(outcome=transition.phase.value).observe(
                max((finished - started).total_seconds(), 0)
            )
