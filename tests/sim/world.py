"""The simulated world: the API server model, its controllers, the operator (the real Reconciler
and KubeClient, fed by modelled watches) and the people acting on flows, driven one step at a time.

A history is a list of `Step`s drawn from a seed. Each step carries its own seed, so dropping steps
(shrinking) leaves what the others do unchanged as far as the state allows; a step that no longer
applies (editing a flow that does not exist) does nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from dagflow.api.models import API_VERSION, KIND, PLURAL
from dagflow.controller.kube import ApiGroups, KubeClient
from dagflow.controller.observe import (
    ConfigMapObservation,
    DeploymentObservation,
    FlowKey,
    JobObservation,
    PodObservation,
    ServiceObservation,
    observe_config_map,
    observe_deployment,
    observe_job,
    observe_pod,
    observe_service,
    owner_flow,
)
from dagflow.controller.reconciler import Reconciler
from dagflow.controller.settings import OperatorSettings
from dagflow.controller.status import FlowEvent
from dagflow.rules import naming
from dagflow.rules.approvals import approval_annotation, approver_annotation
from dagflow.rules.outputs import MAX_OUTPUTS_BYTES
from dagflow.rules.validation import validate_object
from tests.sim.apiserver import (
    OPERATOR,
    ApiServer,
    AppsApi,
    BatchApi,
    Clock,
    CoreApi,
    CustomApi,
    merge_patch,
)
from tests.sim.controllers import (
    MESSAGE_ANNOTATION,
    OUTCOME_ANNOTATION,
    READY_ANNOTATION,
    DeploymentController,
    JobController,
)

NAMESPACE = "sim"
FLOW_NAMES = ("pipe", "flow")
CHILD_RESOURCES = ("jobs", "deployments", "services", "configmaps", "pods")
WATCHED = (PLURAL, *CHILD_RESOURCES)
# The operator takes a Job it made and has not seen for 60 s as gone (UNSEEN_JOB_TTL_SECONDS): its
# watches are late, in bursts, but by less than that (kopf restarts a silent watch after 70 s and
# then lists anew, which the model does not play).
MAX_WATCH_LAG_SECONDS = 30.0
# How often a flow drawn is one of many works with large outputs (a history with one takes
# about a hundred times as long as the others).
WIDE_FLOW_CHANCE = 0.002
WIDE_FLOW_WORKS = 1000
# Within the quiet rounds of settling (QUIET_ROUNDS x 5 s), so that a settled world has listed anew.
RELIST_SECONDS = 60.0
# How often a delivery is followed by a watch cut and a list anew.
WATCH_CUT_CHANCE = 0.05
# Settled: this many rounds of settling in a row (5 s of simulated time each) changed nothing.
QUIET_ROUNDS = 16
# How often a flow drawn has approval gates, and how long they wait: from less than the clock moves
# in one step to longer than a whole history, so that some time out and some are decided.
GATE_CHANCE = 0.3
GATE_TIMEOUTS = (15, 60, 240, 1200)
# The parameters a gate's approver may set, each at one gate at most, and the values they give.
GATE_PARAMS = {"lr": ["0.5", "0.01"], "version": ["v7", "v8"]}
# How often a person acting on a flow with gates decides one rather than doing something else.
DECISION_CHANCE = 0.5
# Who approves, as the API server authenticates them, and a name someone might type into a request.
PEOPLE = ("ada", "grace", "edsger", "barbara")
FORGED_NAME = "mallory"
APPROVAL_POLICY = "dagflow-approvals"
T = TypeVar("T")


def _seen_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return (metadata["namespace"], metadata["name"], metadata["uid"])


class InlineExecutor(Executor):
    """Runs each API call at once in the calling thread: the order of calls is the order of the
    reconciler's awaits, the same at every replay."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to the awaiting coroutine, as a thread pool would
            future.set_exception(error)
        return future


@dataclass(frozen=True)
class Step:
    """One move of the world: `kind` says who moves, `seed` how."""

    kind: str
    seed: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.seed}"


# How often each kind of step is drawn.
STEP_WEIGHTS: dict[str, int] = {
    "user": 6,
    "third-party": 2,
    "deliver": 14,
    "pass": 14,
    "pass-with-fault": 2,
    "jobs": 8,
    "deployments": 4,
    "gc": 3,
    "clock": 5,
    "restart": 1,
}


def generate(seed: int, length: int) -> list[Step]:
    rng = random.Random(seed)
    kinds = list(STEP_WEIGHTS)
    weights = [STEP_WEIGHTS[kind] for kind in kinds]
    steps = [Step("user", rng.randrange(2**32))]  # a flow to begin with
    steps += [Step(rng.choices(kinds, weights)[0], rng.randrange(2**32)) for _ in range(length - 1)]
    return steps


# -- flows a user writes ---------------------------------------------------------------------------


def make_spec(rng: random.Random, gates: bool = True) -> dict[str, Any]:
    """A small flow drawn from the features that meet at the seams: outputs (a null among them),
    static and dynamic matrices, serve works, parameters, failure policies (and approval gates,
    unless `gates` is False)."""
    works: list[dict[str, Any]] = []
    count = rng.randint(1, 4)
    for number in range(count):
        name = f"w{number}"
        earlier = [work["name"] for work in works if "serve" not in work]
        work: dict[str, Any] = {
            "name": name,
            "container": {
                "image": f"example/ml:{rng.randint(1, 3)}",
                "command": ["python", "-m", "work"],
                "args": ["--lr", "$(params.lr)"],
            },
        }
        if earlier and rng.random() < 0.7:
            work["dependsOn"] = rng.sample(earlier, rng.randint(1, min(2, len(earlier))))
        kind = rng.random()
        if kind < 0.2 and number > 0:
            work["serve"] = {"port": 8080, "replicas": 1, "progressDeadlineSeconds": 120}
            work["annotations"] = {READY_ANNOTATION: "false"} if rng.random() < 0.15 else {}
        else:
            outcome = rng.choices(["succeed", "fail", "flaky"], [6, 1, 2])[0]
            work["annotations"] = {OUTCOME_ANNOTATION: outcome}
            work["retries"] = rng.randint(0, 2)
            if rng.random() < 0.5:
                work["outputs"] = [{"name": "score"}, {"name": "shards"}]
                value = rng.choice(["null", '"0.9"', "1", '{"nested": null}'])
                work["annotations"][MESSAGE_ANNOTATION] = (
                    f'{{"score": {value}, "shards": ["a", "b{{index}}"]}}'
                )
            if rng.random() < 0.25:
                work["matrix"] = {"model": ["linear", "forest", "gbr"][: rng.randint(1, 3)]}
                work["container"]["args"] = ["--model", "$(matrix.model)"]
            elif rng.random() < 0.2:
                source = next(
                    (other for other in works if other.get("outputs") and "matrix" not in other), None
                )
                if source is not None:
                    work["matrix"] = {"shard": f"$(works.{source['name']}.outputs.shards)"}
                    work["dependsOn"] = sorted({*work.get("dependsOn", []), source["name"]})
                    work["container"]["args"] = ["--shard", "$(matrix.shard)"]
            if rng.random() < 0.15:
                work["timeoutSeconds"] = rng.choice([30, 300])
        works.append(work)
    spec: dict[str, Any] = {
        "works": works,
        "params": [{"name": "lr", "default": "0.1"}],
        "failurePolicy": rng.choice(["FailFast", "Continue"]),
    }
    if rng.random() < 0.3:
        spec["historyRuns"] = rng.randint(1, 3)
    if rng.random() < 0.1:
        spec["suspend"] = True
    # Drawn last, so that the draws above stay those of the histories kept as regressions.
    if rng.random() < WIDE_FLOW_CHANCE:
        return make_wide_spec(rng)
    if rng.random() < 0.2:
        # Ticks a few simulated minutes apart: a history of 150 steps sees several.
        spec["schedule"] = rng.choice(["*/2 * * * *", "*/5 * * * *", "1-59/3 * * * *"])
        spec["concurrencyPolicy"] = rng.choice(["Forbid", "Replace"])
        if rng.random() < 0.3:
            spec["startingDeadlineSeconds"] = rng.choice([10, 60])
    # Drawn after the rest for the same reason: caching on, so reruns and other flows of the same
    # works take outcomes from entries.
    if rng.random() < 0.3:
        spec["cache"] = {"enabled": True}
    # Drawn after the rest for the same reason: finally works, told how the run ended, reading an
    # output of a work that may not have succeeded.
    if rng.random() < 0.3:
        spec["finally"] = make_finally_works(rng, works)
    # Drawn after the rest for the same reason: approval gates.
    if gates and rng.random() < GATE_CHANCE:
        add_gates(rng, spec)
    return spec


def add_gates(rng: random.Random, spec: dict[str, Any]) -> None:
    """One or two works become gates, with timeouts the simulated clock reaches, some letting the
    approver set a parameter. Every work and finally work shows both parameters in its arguments, so
    that which values its Job got can be read from the Job."""
    spec["params"].append({"name": "version", "default": "v0"})
    for work in [*spec["works"], *spec.get("finally", [])]:
        args = work["container"].setdefault("args", [])
        for name in GATE_PARAMS:
            if f"$(params.{name})" not in args:
                args += [f"--{name}", f"$(params.{name})"]
    settable = list(GATE_PARAMS)
    for gate in rng.sample(spec["works"], rng.randint(1, min(2, len(spec["works"])))):
        approval: dict[str, Any] = {"timeoutSeconds": rng.choice(GATE_TIMEOUTS)}
        if rng.random() < 0.5:
            approval["message"] = f"Go on with {gate['name']}?"
        names = [name for name in settable if rng.random() < 0.5]
        if names:
            approval["params"] = names
            settable = [name for name in settable if name not in names]
        gate["approval"] = approval


def make_finally_works(rng: random.Random, works: list[dict[str, Any]]) -> list[dict[str, Any]]:
    reporting = next((work["name"] for work in works if work.get("outputs") and "matrix" not in work), None)
    args = ["--phase", "$(run.phase)", "--failed", "$(run.failedWorks)"]
    if reporting is not None:
        args += ["--score", f"$(works.{reporting}.outputs.score)"]
    finally_works: list[dict[str, Any]] = [
        {
            "name": "report",
            "container": {"image": "example/report:1", "command": ["report"], "args": args},
            "annotations": {OUTCOME_ANNOTATION: rng.choices(["succeed", "fail", "flaky"], [6, 1, 1])[0]},
            "retries": rng.randint(0, 1),
        }
    ]
    if rng.random() < 0.5:
        finally_works.append(
            {
                "name": "cleanup",
                "dependsOn": ["report"],
                "when": rng.choice(["AllSucceeded", "AllDone"]),
                "container": {"image": "example/cleanup:1", "command": ["cleanup"]},
                "annotations": {OUTCOME_ANNOTATION: "succeed"},
            }
        )
    return finally_works


def make_wide_spec(rng: random.Random) -> dict[str, Any]:
    """A flow of many works, each reporting nearly as much output as a work may: together more than
    one object holds, so the status must keep what it shows within its object."""
    works: list[dict[str, Any]] = []
    # The report's JSON, `{"report": "<number><fill>"}`, just under the most a work may report.
    fill = MAX_OUTPUTS_BYTES - 24
    for number in range(rng.randint(WIDE_FLOW_WORKS + 300, WIDE_FLOW_WORKS + 700)):
        works.append(
            {
                "name": f"w{number}",
                "container": {"image": "example/ml:1", "command": ["python", "-m", "work"]},
                "outputs": [{"name": "report"}],
                "annotations": {
                    OUTCOME_ANNOTATION: rng.choices(["succeed", "fail"], [19, 1])[0],
                    MESSAGE_ANNOTATION: f'{{"report": "{number}{{fill:{fill}}}"}}',
                },
            }
        )
    return {"works": works, "failurePolicy": "Continue"}


def admitted_request(
    annotations: Mapping[str, str], gate: str, value: str, sender: str, policy: bool = True
) -> dict[str, str | None]:
    """The annotations (a merge patch) that a request `value` on `gate` sets, as the API server's
    admission leaves them: the chart's MutatingAdmissionPolicy stamps a request that changed with
    whoever sent it, and one sent unchanged keeps the name it had. Without that policy the
    request comes without a name (`policy` False: the sender's tool clears the one left)."""
    patch: dict[str, str | None] = {approval_annotation(gate): value}
    if not policy:
        patch[approver_annotation(gate)] = None
    elif annotations.get(approval_annotation(gate)) != value:
        patch[approver_annotation(gate)] = sender
    return patch


def admitted(flow: Mapping[str, Any]) -> bool:
    """Whether the admission webhook (and the CRD's schema) let this flow in."""
    return not validate_object({key: value for key, value in flow.items() if key != "status"})


# -- the operator --------------------------------------------------------------------------------


class Operator:
    """One life of the operator: the real Reconciler and KubeClient, with indexes fed by the
    modelled watches. A restart makes a new one, which lists everything afresh."""

    def __init__(self, world: World) -> None:
        self.world = world
        server = world.server
        apis = ApiGroups(
            batch=BatchApi(server),
            apps=AppsApi(server),
            core=CoreApi(server),
            custom=CustomApi(server),
            admission=None,
        )
        self.kube = KubeClient(16, apis, InlineExecutor())
        self.jobs: dict[FlowKey, list[JobObservation]] = {}
        self.deployments: dict[FlowKey, list[DeploymentObservation]] = {}
        self.services: dict[FlowKey, list[ServiceObservation]] = {}
        self.config_maps: dict[FlowKey, list[ConfigMapObservation]] = {}
        self.pods: dict[str, list[PodObservation]] = {}
        # What each watch has brought so far, by resource and (namespace, name, uid): as in kopf's
        # indexes, an object deleted while a watch was cut stays beside the one made again.
        self.seen: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {
            resource: {} for resource in WATCHED
        }
        self.cursors: dict[str, int] = {}
        # The resourceVersion each watch would resume from.
        self.resume: dict[str, str] = {resource: str(world.server.revision) for resource in WATCHED}
        self.reconciler = Reconciler(
            world.settings,
            self.kube,
            self.jobs,
            self.deployments,
            self.services,
            self.config_maps,
            world.post_event,
            workers=0,
            wall_clock=world.clock.wall,
            monotonic=world.clock.monotonic,
            pods=self.pods,
        )
        # As kopf starts: every index filled from a list, then the flows' events.
        for resource in WATCHED:
            self.cursors[resource] = len(server.logs[resource])
            for obj in server.items(resource, NAMESPACE):
                if self._watched(resource, obj):
                    self.seen[resource][_seen_key(obj)] = copy.deepcopy(obj)
        for resource in CHILD_RESOURCES:
            self._reindex(resource)
        for (namespace, name, _), body in sorted(self.seen[PLURAL].items()):
            self.reconciler.flow_seen((namespace, name), body)

    @staticmethod
    def _watched(resource: str, obj: Mapping[str, Any]) -> bool:
        if resource == PLURAL:
            return True
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if resource == "pods" and labels.get(naming.SETTLES_WORK_LABEL) != "true":
            return False  # the operator's pod watch selects only the pods that can settle a work
        return labels.get(naming.MANAGED_BY_LABEL) == naming.MANAGED_BY_VALUE

    def _reindex(self, resource: str) -> None:
        if resource == "pods":
            # A pod's owner is its Job: kopf's index keys it by the Job's uid.
            self.pods.clear()
            for _, body in sorted(self.seen[resource].items()):
                pod = observe_pod(body)
                if pod is not None:
                    self.pods.setdefault(pod.job_uid, []).append(pod)
            return
        index, observe = {
            "jobs": (self.jobs, observe_job),
            "deployments": (self.deployments, observe_deployment),
            "services": (self.services, observe_service),
            "configmaps": (self.config_maps, observe_config_map),
        }[resource]
        index.clear()
        for (namespace, _, _), body in sorted(self.seen[resource].items()):
            flow = owner_flow(body)
            if flow:
                index.setdefault((namespace, flow), []).append(observe(body))  # type: ignore[attr-defined]

    def pending(self, resource: str) -> int:
        return len(self.world.server.logs[resource]) - self.cursors[resource]

    def deliver(self, resource: str, count: int) -> None:
        """The next `count` events of one watch reach the operator."""
        log = self.world.server.logs[resource]
        start = self.cursors[resource]
        events = log[start : start + count]
        self.cursors[resource] = start + len(events)
        for kind, obj in events:
            if not self._watched(resource, obj):
                continue
            key = _seen_key(obj)
            if kind == "DELETED":
                self.seen[resource].pop(key, None)
            else:
                self.seen[resource][key] = copy.deepcopy(obj)
            if events and kind != "DELETED":
                self.resume[resource] = obj["metadata"]["resourceVersion"]
            if resource == PLURAL:
                self.reconciler.flow_seen(key[:2], None if kind == "DELETED" else obj)
        if resource != PLURAL and events:
            self._reindex(resource)

    def cut(self, resource: str) -> None:
        """The watch of `resource` is cut and, by the time it comes back, the API server no longer
        keeps the events since: 410 Gone, so kopf lists anew. What the list brings replaces what
        was seen; nothing is dropped (kopf makes up no deletion for an object gone meanwhile) and
        no flow is told it is gone."""
        server = self.world.server
        try:
            server.watch(resource, NAMESPACE, self.resume.get(resource, "0"))
            return  # still within the server's window: the watch simply resumes
        except ApiException as error:
            if error.status != 410:
                raise
        listing = server.list(resource, NAMESPACE)
        self.cursors[resource] = len(server.logs[resource])
        self.resume[resource] = listing["metadata"]["resourceVersion"]
        for obj in listing["items"]:
            if not self._watched(resource, obj):
                continue
            self.seen[resource][_seen_key(obj)] = obj
            if resource == PLURAL:
                self.reconciler.flow_seen(_seen_key(obj)[:2], obj)
        if resource != PLURAL:
            self._reindex(resource)

    def deliver_all(self) -> None:
        for resource in WATCHED:
            self.deliver(resource, self.pending(resource))

    def run_pass(self, key: FlowKey) -> BaseException | None:
        """One reconcile pass of one flow, as a worker runs it: an error fails the pass only."""
        try:
            self.world.loop.run_until_complete(self.reconciler.reconcile(key))
        except (Exception, asyncio.CancelledError) as error:
            return error
        return None


# -- the world -------------------------------------------------------------------------------------


@dataclass
class Violation(Exception):
    invariant: str
    detail: str
    step: int = -1

    def __str__(self) -> str:
        return f"{self.invariant} (step {self.step}): {self.detail}"


@dataclass
class Record:
    """What the invariants remember between steps."""

    # Last status seen, by flow uid.
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Request tokens that started (or stopped) a run, by (flow uid, kind).
    tokens: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # Who began the deletion of each Job, by Job uid.
    deleted_by: dict[str, str] = field(default_factory=dict)
    # The Jobs made for (flow uid, run, work).
    jobs_made: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    checked_writes: int = 0
    # Each flow's spec at each generation seen, by flow uid.
    specs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    # The flow (key, uid) each operator write was made for, by index in server.writes.
    write_flows: dict[int, tuple[FlowKey, str | None]] = field(default_factory=dict)
    # Every approval request written on a flow, with the name stamped beside it, by (flow uid, gate).
    approval_requests: dict[tuple[str, str], list[tuple[str, str | None]]] = field(default_factory=dict)
    # The gates a stored status showed waiting, by (flow uid, run, gate).
    gates_waited: set[tuple[str, int, str]] = field(default_factory=set)
    # The decision each gate's status took in, by (flow uid, run, gate); and why a gate failed without
    # running (Rejected, ApprovalTimedOut).
    decisions: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)
    gates_refused: dict[tuple[str, int, str], str] = field(default_factory=dict)
    # Jobs the operator made whose parameter values are still to be checked against the status of
    # their run: (flow uid, run, work, Job).
    jobs_to_check: list[tuple[str, int, str, dict[str, Any]]] = field(default_factory=list)


class World:
    """The simulated cluster and everyone acting on it."""

    def __init__(self, seed: int, gates: bool = True) -> None:
        self.seed = seed
        # False: the flows people write have no approval gates, as in the histories found before
        # they were drawn (a gate in one of their flows would change what they replay).
        self.gates = gates
        self.clock = Clock()
        self.server = ApiServer(self.clock)
        self.jobs = JobController(self.server)
        self.deployments = DeploymentController(self.server)
        # Lists anew more often than by default, so that histories meet it. The people's requests
        # are stamped as the chart's admission policies stamp them, and the operator is told so.
        self.settings = OperatorSettings(relist_seconds=RELIST_SECONDS, approval_policy=APPROVAL_POLICY)
        self.next_relist = RELIST_SECONDS
        self.loop = asyncio.new_event_loop()
        # The loop's timers (rechecks, held status patches) run on simulated time.
        self.loop.time = self.clock.monotonic  # type: ignore[method-assign]
        self.events: list[tuple[str, str, str]] = []
        self.record = Record()
        self.refused: list[str] = []
        self.tokens = 0
        self.operator = Operator(self)
        self.pass_flow: tuple[FlowKey, str | None] | None = None

    def close(self) -> None:
        self.loop.close()

    def post_event(self, body: Mapping[str, Any], event: FlowEvent) -> None:
        self.events.append((str(body["metadata"].get("uid")), event.reason, event.message))

    def flows(self) -> list[dict[str, Any]]:
        return list(self.server.items(PLURAL, NAMESPACE))

    # -- steps -----------------------------------------------------------------------------------

    def apply(self, step: Step) -> None:
        rng = random.Random(step.seed)
        getattr(self, "_" + step.kind.replace("-", "_"))(rng)

    def _user(self, rng: random.Random) -> None:
        self.server.actor = "user"
        name = rng.choice(FLOW_NAMES)
        flow = self.server.get(PLURAL, NAMESPACE, name)
        if flow is None:
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": name},
                "spec": make_spec(rng, self.gates),
            }
            if admitted(body):
                self.server.create(PLURAL, NAMESPACE, body)
            return
        if len(flow["spec"]["works"]) > WIDE_FLOW_WORKS and rng.random() < 0.9:
            return  # a big flow is mostly left to run its course
        gates = [work for work in flow["spec"]["works"] if work.get("approval")]
        # Drawn only for a flow with gates, so that the histories of the others stay as they were.
        if gates and rng.random() < DECISION_CHANCE:
            self._decide(rng, flow, gates)
            return
        action = rng.choices(
            ["edit", "delete", "rerun", "retry", "stop", "suspend", "same-token"], [3, 2, 3, 2, 2, 1, 1]
        )[0]
        if action == "delete":
            self.server.delete(PLURAL, NAMESPACE, name)
        elif action == "edit":
            spec = copy.deepcopy(flow["spec"])
            if rng.random() < 0.3:
                spec = make_spec(rng, self.gates)
            else:
                grids = [
                    work
                    for work in spec["works"]
                    if isinstance((work.get("matrix") or {}).get("model"), list)
                ]
                fresh = [
                    model
                    for model in ("svm", "knn", "mlp", "ridge")
                    if grids and model not in grids[0]["matrix"]["model"]
                ]
                if fresh and rng.random() < 0.6:
                    # An instance changed or added: a cached flow's next run takes the others from
                    # the cache, and its Job runs only that one.
                    models = grids[0]["matrix"]["model"]
                    if len(models) > 1 and rng.random() < 0.5:
                        models[rng.randrange(len(models))] = fresh[0]
                    else:
                        models.append(fresh[0])
                else:
                    work = rng.choice(spec["works"])
                    work["container"]["image"] = f"example/ml:{rng.randint(4, 9)}"
            if admitted({**flow, "spec": spec}):
                self.server.replace(PLURAL, {**flow, "spec": spec})
        elif action == "suspend":
            self.server.merge_patch(
                PLURAL, NAMESPACE, name, {"spec": {"suspend": not flow["spec"].get("suspend")}}
            )
        elif action == "same-token":
            # The same request applied again: acted on once.
            annotations = flow["metadata"].get("annotations") or {}
            if annotations:
                self.server.merge_patch(
                    PLURAL, NAMESPACE, name, {"metadata": {"annotations": dict(annotations)}}
                )
        else:
            self.tokens += 1
            annotations = {f"dagflow.dev/{action}": f"t{self.tokens}"}
            if action != "stop" and rng.random() < 0.4:
                annotations["dagflow.dev/params"] = json.dumps({"lr": rng.choice(["0.5", "0.01"])})
            patch = {"metadata": {"annotations": annotations}}
            if admitted(merge_patch(flow, patch)):
                self.server.merge_patch(PLURAL, NAMESPACE, name, patch)

    def _decide(self, rng: random.Random, flow: dict[str, Any], gates: list[dict[str, Any]]) -> None:
        """Someone approves or rejects a gate, mostly one of the current run that waits; now and then
        for another run, a token again, a request the operator cannot read, or one the API server
        did not stamp with who sent it (its admission policy missing)."""
        person = rng.choice(PEOPLE)
        self.server.actor = person
        name = flow["metadata"]["name"]
        status = flow.get("status") or {}
        run = int(status.get("run") or 1)
        waiting = [work["name"] for work in status.get("works") or [] if work.get("phase") == "Waiting"]
        chosen = rng.choice(waiting) if waiting else None
        gate = next((work for work in gates if work["name"] == chosen), None)
        if gate is None or rng.random() < 0.2:
            gate = rng.choice(gates)
        key = approval_annotation(gate["name"])
        annotations = flow["metadata"].get("annotations") or {}
        how = rng.choices(
            ["approve", "reject", "other-run", "same-token", "unreadable", "unstamped"], [6, 2, 1, 2, 1, 1]
        )[0]
        self.tokens += 1
        request: dict[str, Any] = {"run": run, "decision": "Approved", "token": f"a{self.tokens}"}
        if how in ("approve", "unstamped"):
            settable = (gate.get("approval") or {}).get("params") or []
            setting = [param for param in settable if rng.random() < 0.7]
            if setting:
                request["params"] = {param: rng.choice(GATE_PARAMS[param]) for param in setting}
                if rng.random() < 0.2:
                    request["params"][setting[0]] = 0.25  # not a string: taken as its JSON text
        elif how == "reject":
            request.update(decision="Rejected", message="not this one")
        elif how == "other-run":
            # An earlier run's request left behind, or one for the run to come.
            request["run"] = run - 1 if run > 1 and rng.random() < 0.7 else run + 1
            request["decision"] = rng.choice(["Approved", "Rejected"])
        elif how == "same-token":
            earlier = annotations.get(key)
            if earlier is None:
                return
            try:
                request = json.loads(earlier)
            except json.JSONDecodeError:
                return
            if not isinstance(request, dict):
                return
            if rng.random() < 0.5:
                # The same token with another decision: once one is taken in, it stands.
                request["decision"] = "Rejected" if request.get("decision") == "Approved" else "Approved"
        if rng.random() < 0.2:
            request["by"] = FORGED_NAME  # a name in the request counts for nothing
        value = json.dumps(request)
        if how == "unreadable":
            value = rng.choice(
                [
                    "approve it",
                    "[1]",
                    json.dumps({**request, "decision": "Maybe"}),
                    json.dumps({field: item for field, item in request.items() if field != "token"}),
                    json.dumps({**request, "run": str(run)}),
                    json.dumps({**request, "params": ["v7"]}),
                    json.dumps({**request, "params": {"epochs": "3"}}),
                    json.dumps({**request, "params": {"version": None}}),
                ]
            )
        sent = admitted_request(annotations, gate["name"], value, person, policy=how != "unstamped")
        patch = {"metadata": {"annotations": sent}}
        if admitted(merge_patch(flow, patch)):
            self.server.merge_patch(PLURAL, NAMESPACE, name, patch)

    def _third_party(self, rng: random.Random) -> None:
        """Someone else deletes a flow's child, or plants an object under a name the operator will use."""
        self.server.actor = "third-party"
        children = [
            (resource, obj)
            for resource in ("jobs", "configmaps", "services")
            for obj in self.server.items(resource, NAMESPACE)
        ]
        if children and rng.random() < 0.5:
            resource, victim = rng.choice(children)
            self.server.delete(resource, NAMESPACE, victim["metadata"]["name"])
            return
        flow = self.server.get(PLURAL, NAMESPACE, rng.choice(FLOW_NAMES))
        if flow is None:
            return
        run = int((flow.get("status") or {}).get("run") or 0) + rng.randint(0, 1)
        work = rng.choice(flow["spec"]["works"])
        job = naming.job_name(flow["metadata"]["name"], max(run, 1), work["name"])
        name, resource = rng.choice(
            [
                (f"{job}-matrix", "configmaps"),
                (f"{job}-outputs", "configmaps"),
                (naming.serve_name(flow["metadata"]["name"], work["name"]), "services"),
                (job, "jobs"),
            ]
        )
        labels = naming.child_labels(flow["metadata"]["name"], work["name"], max(run, 1))
        metadata: dict[str, Any] = {
            "name": name,
            "labels": labels,
            "annotations": naming.child_annotations(flow["metadata"]["name"], work["name"]),
        }
        body: dict[str, Any] = {"metadata": metadata}
        if resource == "configmaps":
            body.update(
                data={
                    "outputs.json": json.dumps({"score": ["planted"], "shards": ["planted"]}),
                    "values.json": "{}",
                },
                immutable=True,
            )
        elif resource == "services":
            body["spec"] = {"ports": [{"port": 8080}]}
        else:
            body["spec"] = {
                "completions": 1,
                "template": {
                    "metadata": {"annotations": {OUTCOME_ANNOTATION: "succeed"}},
                    "spec": {"containers": [{"name": work["name"]}]},
                },
            }
        if self.server.get(resource, NAMESPACE, name) is None:
            self.server.create(resource, NAMESPACE, body)

    def _deliver(self, rng: random.Random) -> None:
        resource = rng.choice(WATCHED)
        pending = self.operator.pending(resource)
        if pending:
            # Late, one at a time, or in a burst.
            self.operator.deliver(resource, rng.choice([1, 1, 2, pending]))
        # Drawn last, so that the deliveries stay those of the histories kept as regressions.
        if rng.random() < WATCH_CUT_CHANCE:
            # A watch cut: the server lets go of the events so far, so it comes back to a 410.
            self.server.compact()
            self.operator.cut(rng.choice(WATCHED))

    def _pass(self, rng: random.Random, faults: list[str | None] | None = None) -> None:
        keys = sorted(self.operator.reconciler.flows)
        if not keys:
            return
        key = rng.choice(keys)
        known = self.operator.reconciler.flows.get(key)
        self.pass_flow = (key, known["metadata"].get("uid") if known else None)
        self.server.faults.writes = list(faults or [])
        first_write = len(self.server.writes)
        try:
            error = self.operator.run_pass(key)
        finally:
            self.server.faults.writes = []
        for index in range(first_write, len(self.server.writes)):
            if self.server.writes[index].actor == OPERATOR:
                self.record.write_flows[index] = self.pass_flow
        self.pass_flow = None
        if isinstance(error, ApiException) and "request is too large" in (error.body or ""):
            self.refused.append(f"pass of {key}: {error.body}")
        if (
            error is not None
            and not isinstance(error, (ApiException, OSError))
            and "timed out" not in str(error).lower()
        ):
            raise Violation("no-crash", f"the pass of {key} raised {error!r}")

    def _pass_with_fault(self, rng: random.Random) -> None:
        fault = rng.choice(["timeout", "lost"])
        faults: list[str | None] = [None] * rng.randint(0, 3) + [fault]
        self._pass(rng, faults)

    def _jobs(self, rng: random.Random) -> None:
        self.jobs.step(rng)

    def _deployments(self, rng: random.Random) -> None:
        self.deployments.step(rng)

    def _gc(self, rng: random.Random) -> None:
        self.server.actor = "garbage-collector"
        self.server.collect_garbage()

    def _clock(self, rng: random.Random) -> None:
        self.advance(rng.choice([0.05, 0.5, 3, 30, 90]))

    def advance(self, seconds: float) -> None:
        """Move the clock; a watch is late, but never by more than `MAX_WATCH_LAG_SECONDS`."""
        self.clock.advance(seconds)
        if self.clock.seconds >= self.next_relist:
            # The operator's own timer: it lists what its indexes hold and forgets what is gone.
            self.next_relist = self.clock.seconds + self.settings.relist_seconds
            self.loop.run_until_complete(self.operator.reconciler.forget_vanished())
        for resource in WATCHED:
            times = self.server.log_times[resource]
            cursor = self.operator.cursors[resource]
            overdue = 0
            while (
                cursor + overdue < len(times)
                and times[cursor + overdue] < self.clock.seconds - MAX_WATCH_LAG_SECONDS
            ):
                overdue += 1
            self.operator.deliver(resource, overdue)

    def _restart(self, rng: random.Random) -> None:
        self.operator = Operator(self)
        self.next_relist = self.clock.seconds + self.settings.relist_seconds

    # -- settling --------------------------------------------------------------------------------

    def unschedule(self) -> None:
        """The author takes every flow's schedule out (a run-control field: no run starts for it)."""
        self.server.actor = "user"
        for flow in self.flows():
            if flow["spec"].get("schedule"):
                name = flow["metadata"]["name"]
                self.server.merge_patch(PLURAL, NAMESPACE, name, {"spec": {"schedule": None}})

    def settle(self, rounds: int = 200) -> int:
        """No more people or faults: the controllers, the garbage collector, the watches and the
        operator go on until nothing changes. The number of operator writes in the last round."""
        rng = random.Random(self.seed ^ 0x5E771E)
        last, quiet = -1, 0
        for _ in range(rounds):
            before = len(self.server.writes)
            self.jobs.step(rng)
            self.deployments.step(rng, disrupt=False)
            self.server.actor = "garbage-collector"
            self.server.collect_garbage()
            self.advance(5)
            self.operator.deliver_all()
            for key in sorted(self.operator.reconciler.flows):
                self._pass_for(key)
            self.operator.deliver_all()
            last = sum(1 for write in self.server.writes[before:] if write.actor == OPERATOR)
            # Quiet for a while, not just one round that happened to move nothing.
            quiet = quiet + 1 if len(self.server.writes) == before else 0
            if quiet >= QUIET_ROUNDS:
                return 0
        return last

    def _pass_for(self, key: FlowKey) -> None:
        known = self.operator.reconciler.flows.get(key)
        self.pass_flow = (key, known["metadata"].get("uid") if known else None)
        first_write = len(self.server.writes)
        error = self.operator.run_pass(key)
        for index in range(first_write, len(self.server.writes)):
            if self.server.writes[index].actor == OPERATOR:
                self.record.write_flows[index] = self.pass_flow
        self.pass_flow = None
        if error is not None and not isinstance(error, (ApiException, OSError)):
            raise Violation("no-crash", f"the pass of {key} raised {error!r}")


logging.getLogger("dagflow").setLevel(logging.CRITICAL)
