"""The kopf wiring: watches, indexes and the admission webhook. Logic lives in `reconciler`.

Run with `dagflow-operator` (or `make run`). Only event handlers are used for DAGFlows, so kopf keeps
no copy of the spec in annotations: a 2,000-work flow reconciles like a small one.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, cast

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import CACHE_ENTRY_PLURAL, GROUP, PLURAL, VERSION
from dagflow.controller import kube as kube_module
from dagflow.controller import metrics
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
from dagflow.controller.peering import ensure_peering, other_live_peers, own_identity, start_priority
from dagflow.controller.reconciler import Reconciler
from dagflow.controller.settings import OperatorSettings
from dagflow.controller.shutdown import (
    arm_exit_deadline_on_signals,
    exit_deadline,
    exit_now,
    in_daemon_thread,
)
from dagflow.controller.status import FlowEvent
from dagflow.controller.webhook import (
    ADMITTED_OPERATIONS,
    CACHE_ENTRY_OPERATIONS,
    CACHE_ENTRY_WEBHOOK_ID,
    FLOW_WEBHOOK_ID,
    STATUS_OPERATIONS,
    STATUS_WEBHOOK_ID,
    AccessReviews,
    LocalQueues,
    WebhookRegistration,
    admission_problem,
    build_webhook_server,
    cache_entry_write_problem,
    may_start_a_run,
    permission_problem,
    queue_problem,
    spec_is_new,
    status_write_problem,
)
from dagflow.rules import naming

logger = logging.getLogger("dagflow")

WEBHOOK_CONFIGURATION = "dagflow.dev"
# kopf's own API calls and watches (seconds), like the operator's own (`kube.REQUEST_TIMEOUT`):
# none may hang forever on an API server that stopped.
CONNECT_TIMEOUT, REQUEST_TIMEOUT = kube_module.REQUEST_TIMEOUT
# A watch that brings nothing this long after the server should have ended it is given up.
WATCH_CLIENT_MARGIN = 30
MANAGED_SELECTOR = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY_VALUE}"
CHILD_FILTER = {naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE}
# Only the pods whose success settles their work: a matrix's pods (thousands, each updated several
# times) and a serve work's would cost the operator CPU for nothing (docs/performance.md).
POD_FILTER = {**CHILD_FILTER, naming.SETTLES_WORK_LABEL: "true"}
# Filtered by the API server, which never sends the rest: kopf's `labels=` on a handler or index only
# filters what it has already received.
WATCH_SELECTORS = {
    ("batch", "jobs"): MANAGED_SELECTOR,
    ("apps", "deployments"): MANAGED_SELECTOR,
    ("", "services"): MANAGED_SELECTOR,
    ("", "configmaps"): MANAGED_SELECTOR,
    ("", "pods"): ",".join(f"{label}={value}" for label, value in POD_FILTER.items()),
}

# The Event on each flow while nothing checks its author's permissions (`dagflow get` shows it).
UNCHECKED_REASON = "PermissionsUnchecked"
UNCHECKED_MESSAGE = (
    "Nothing checks that this flow's author may create what the operator creates for it: the"
    " operator's admission webhook is off and no user-permissions policy is installed, so whoever may"
    " write DAGFlows here can have Jobs made (docs/security.md)"
)

state: dict[str, Any] = {}
LOG_FORMATS = {
    "text": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    "json": '{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "message": %(message)r}',
}


def _reconciler() -> Reconciler:
    reconciler: Reconciler = state["reconciler"]
    return reconciler


def _flow_key(namespace: str | None, body: Mapping[str, Any]) -> FlowKey | None:
    # A pod's owner is its Job: its flow is named on it.
    flow = naming.flow_of(body.get("metadata") or {}) if body.get("kind") == "Pod" else owner_flow(body)
    return (namespace, flow) if namespace and flow else None


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """No last-handled state: the operator has no on.create/on.update handlers that would diff it.

    kopf's own storages deep-copy every object on every event to build that state: a large share
    of the operator's CPU with thousands of Jobs or a 2,000-work flow (docs/performance.md).
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    operator_settings = OperatorSettings()
    state["settings"] = operator_settings
    # Events are posted on purpose, per work transition; kopf's own log lines stay out of them.
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dagflow.dev")
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    for resource, selector in WATCH_SELECTORS.items():
        settings.watching.label_selectors[resource] = selector
    # No call of kopf's own may hang forever on an API server that stopped answering: requests give
    # up, watches are ended by the server and, failing that, by the client, then start again.
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.watching.server_timeout = operator_settings.watch_timeout_seconds
    settings.watching.client_timeout = operator_settings.watch_timeout_seconds + WATCH_CLIENT_MARGIN
    if operator_settings.peering:
        working = await asyncio.to_thread(
            ensure_peering,
            operator_settings.peering,
            operator_settings.namespaces,
            state["identity"],
            state["priority"],
        )
        logger.info(
            "Peering %r as %s: of the operators on this cluster, the one that started first works",
            operator_settings.peering,
            state["identity"],
        )
        if working:
            logger.warning(
                "Standing by: %s started earlier and works on this cluster; this operator takes over"
                " when it stops (kopf then logs 'Resuming operations after the pause')",
                ", ".join(working),
            )
    if operator_settings.webhook_enabled:
        api = kube_module.KubeClient(1).core.api_client
        state["reviews"] = AccessReviews(api)
        state["local_queues"] = LocalQueues(api)
        # Status writes are let through for this user only: the operator itself.
        state["operator_username"] = await asyncio.to_thread(state["reviews"].own_username)
        # The operator registers its webhooks itself rather than through kopf, which would need the
        # permission to create webhook configurations of any name.
        register = None
        if operator_settings.webhook_managed:
            registration = WebhookRegistration(api, WEBHOOK_CONFIGURATION, state["operator_username"])
            state["registration"] = registration

            async def register(config: kopf.WebhookClientConfig) -> None:
                await asyncio.to_thread(registration.apply, config)

        settings.admission.server = build_webhook_server(operator_settings, register)
    if operator_settings.metrics_port:
        try:
            metrics.serve(operator_settings.metrics_port)
        except OSError as error:
            port_taken(error, operator_settings.metrics_port, "DAGFLOW_METRICS_PORT")
    state["unchecked_warnings"] = asyncio.create_task(warn_while_unchecked(operator_settings))
    # The clean-up after SIGTERM is bounded: kopf's own clean-up calls retry for about a minute
    # when the API server is gone. kopf's backstop kills the process a little after the deadline.
    settings.process.ultimate_exiting_timeout = operator_settings.shutdown_timeout_seconds + 3
    await asyncio.sleep(0)
    arm_exit_deadline_on_signals(operator_settings.shutdown_timeout_seconds)


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    operator_settings: OperatorSettings | None = state.get("settings")
    budget = operator_settings.shutdown_timeout_seconds if operator_settings else 5.0
    # kopf's own clean-up (its webhook patches, the peering keep-alive's removal) retries for about a
    # minute when the API server is gone: the process leaves at the deadline whatever is left.
    exit_deadline.extend_to(budget)
    warnings: asyncio.Task[None] | None = state.pop("unchecked_warnings", None)
    if warnings is not None:
        warnings.cancel()
    reconciler: Reconciler | None = state.pop("reconciler", None)
    if reconciler is not None:
        await reconciler.stop()
    if operator_settings and "registration" in state:
        # The webhooks stay registered and fail closed while no operator answers them: no flow gets
        # in unchecked. Only a configuration the operator made itself (a local run without the
        # chart) goes, once no peer replica is left to answer it.
        try:
            await in_daemon_thread(lambda: remove_webhook(operator_settings), timeout=exit_deadline.left())
        except Exception as error:  # shutting down anyway
            logger.warning("Could not delete the ValidatingWebhookConfiguration: %r", error)
            if isinstance(error, (TimeoutError, OSError, urllib3.exceptions.HTTPError)):
                # The API server does not answer: no other clean-up call will get through either.
                exit_deadline.shorten_to(1.0)


def remove_webhook(operator_settings: OperatorSettings) -> None:
    kube = kube_module.KubeClient(1)
    if operator_settings.peering:
        others = other_live_peers(
            kube, operator_settings.peering, operator_settings.namespaces, state["identity"]
        )
        if others:
            logger.info("Leaving the webhook to the live peers %s", ", ".join(others))
            return
    registration: WebhookRegistration = state["registration"]
    if registration.remove_if_own():
        logger.warning(
            "Deleted the ValidatingWebhookConfiguration %s this operator had made: DAGFlows are not"
            " validated at apply until an operator starts again",
            WEBHOOK_CONFIGURATION,
        )
    else:
        logger.info(
            "The ValidatingWebhookConfiguration %s stays: DAGFlow writes are refused until an operator"
            " answers it again",
            WEBHOOK_CONFIGURATION,
        )


def port_taken(error: OSError, port: int, setting: str) -> NoReturn:
    """Leave at once with one line: a taken port does not free itself by retrying."""
    print(
        f"dagflow-operator: port {port} is taken ({error.strerror}); stop what holds it or move this"
        f" operator's port with {setting}",
        file=sys.stderr,
        flush=True,
    )
    # From inside kopf's startup too: no retry, no clean-up of anything this process has not made.
    logging.shutdown()
    os._exit(2)


def check_ports_free(operator_settings: OperatorSettings) -> None:
    """Exit before kopf starts if the metrics or webhook port is held by another process."""
    ports = [(operator_settings.metrics_port, "0.0.0.0", "DAGFLOW_METRICS_PORT")]
    if operator_settings.webhook_enabled:
        address = (
            "0.0.0.0" if operator_settings.webhook_service or operator_settings.webhook_host else "127.0.0.1"
        )
        ports.append((operator_settings.webhook_port, address, "DAGFLOW_WEBHOOK_PORT"))
    for port, address, setting in ports:
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers bind: a port left in TIME_WAIT by an earlier run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    port_taken(error, port, setting)
                raise


def unchecked_permissions(operator_settings: OperatorSettings) -> bool:
    """Whether nothing checks users' permissions: no webhook, and no user-permissions policy."""
    if operator_settings.webhook_enabled:
        return False
    policy = operator_settings.user_permissions_policy
    if not policy:
        return True
    try:
        kube_module.KubeClient(1).admission.read_validating_admission_policy(
            policy, _request_timeout=kube_module.REQUEST_TIMEOUT
        )
    except ApiException as error:
        # Gone: deleted after the install. Any other answer (the operator may not read policies):
        # the setting's word is taken.
        return bool(error.status == 404)
    return False


async def warn_while_unchecked(operator_settings: OperatorSettings) -> None:
    """Say it loudly, at start and every few minutes, while nothing checks users' permissions."""
    while True:
        try:
            unchecked = await asyncio.to_thread(unchecked_permissions, operator_settings)
        except Exception as error:  # the API server may be gone for a while; ask again later
            logger.debug("Could not read the user-permissions policy: %r", error)
        else:
            state["unchecked"] = unchecked
            metrics.USER_PERMISSIONS_UNCHECKED.set(1 if unchecked else 0)
            if unchecked:
                logger.warning(
                    "Users' permissions are NOT checked: the admission webhook is off"
                    " (DAGFLOW_WEBHOOK_ENABLED=false) and no user-permissions policy is installed"
                    " (the chart's userPermissions.enforced). Whoever may write DAGFlows can have this"
                    " operator create Jobs, Deployments, Services and ConfigMaps in their namespace."
                )
                for body in list(state.get("flows", {}).values()):
                    _warn_unchecked(body)
        await asyncio.sleep(operator_settings.unchecked_warning_interval_seconds)


def _warn_unchecked(body: Mapping[str, Any]) -> None:
    kopf.event(cast(kopf.Body, body), type="Warning", reason=UNCHECKED_REASON, message=UNCHECKED_MESSAGE)


# Indexers and handlers are coroutines: kopf runs plain functions in a thread pool, a hop per
# event that costs more than the work they do.
def _index_children(group: str, plural: str, observe: Callable[[kopf.Body], Any], index_id: str) -> None:
    """An index of a kind of child by flow: (namespace, flow name) -> what `observe` makes of each."""

    async def index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[FlowKey, Any] | None:
        key = _flow_key(namespace, body)
        return {key: observe(body)} if key else None

    kopf.index(group, "v1", plural, labels=CHILD_FILTER, id=index_id)(index)


# The handlers below get each index as the keyword of its id.
_index_children("batch", "jobs", observe_job, "flow_jobs")
_index_children("apps", "deployments", observe_deployment, "flow_deployments")
_index_children("", "services", observe_service, "flow_services")
_index_children("", "configmaps", observe_config_map, "flow_config_maps")


POD_ENDS = ("Succeeded", "Failed")


# The pods that settle their work, by the uid of their Job: a work counts as succeeded the moment
# its pod did, a second before the Job controller says so (`observe.settled_by_pod`). A pass looks up
# its Jobs' pods by uid, never regrouping a flow's pods. Pods of Jobs made before the label existed
# are not watched: their works wait for the Job controller, as a matrix's do.
@kopf.index("", "v1", "pods", labels=POD_FILTER)
async def flow_pods(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
    pod = observe_pod(body)
    return {pod.job_uid: pod} if pod and naming.flow_of(body.get("metadata") or {}) else None


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_FILTER)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "services", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "configmaps", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "pods", labels=POD_FILTER)
async def child_changed(
    type: str | None,
    namespace: str | None,
    resource: kopf.Resource,
    body: kopf.Body,
    flow_jobs: kopf.Index[FlowKey, JobObservation],
    flow_deployments: kopf.Index[FlowKey, DeploymentObservation],
    flow_services: kopf.Index[FlowKey, ServiceObservation],
    flow_config_maps: kopf.Index[FlowKey, ConfigMapObservation],
    flow_pods: kopf.Index[str, PodObservation],
    **_: Any,
) -> None:
    key = _flow_key(namespace, body)
    if not key:
        return
    phase = (body.get("status") or {}).get("phase")
    # A pod's creation, scheduling and start change nothing a pass decides (its Job's events tell
    # the same); its end may settle its work, and a success starts the dependents: no reason to wait.
    if resource.plural == "pods" and phase not in POD_ENDS and type != "DELETED":
        return
    _ensure_reconciler(flow_jobs, flow_deployments, flow_services, flow_config_maps, flow_pods).enqueue(
        key, at_once=resource.plural == "pods" and phase == "Succeeded"
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
async def flow_changed(
    type: str | None,
    namespace: str | None,
    name: str | None,
    body: kopf.Body,
    flow_jobs: kopf.Index[FlowKey, JobObservation],
    flow_deployments: kopf.Index[FlowKey, DeploymentObservation],
    flow_services: kopf.Index[FlowKey, ServiceObservation],
    flow_config_maps: kopf.Index[FlowKey, ConfigMapObservation],
    flow_pods: kopf.Index[str, PodObservation],
    **_: Any,
) -> None:
    if not namespace or not name:
        return
    _note_flow((namespace, name), None if type == "DELETED" else body)
    reconciler = _ensure_reconciler(flow_jobs, flow_deployments, flow_services, flow_config_maps, flow_pods)
    reconciler.flow_seen((namespace, name), None if type == "DELETED" else body)


def _note_flow(key: FlowKey, body: Mapping[str, Any] | None) -> None:
    """Keep the flows seen, to warn on each while nothing checks its author's permissions; a flow
    new or changed while unchecked gets its warning at once."""
    flows: dict[FlowKey, Mapping[str, Any]] = state.setdefault("flows", {})
    if body is None:
        flows.pop(key, None)
        return
    metadata = body.get("metadata") or {}
    seen = flows.get(key)
    flows[key] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": dict(metadata)}
    changed = seen is None or (seen.get("metadata") or {}).get("generation") != metadata.get("generation")
    if changed and state.get("unchecked"):
        _warn_unchecked(flows[key])


async def refuse_invalid_flow(
    name: str | None,
    namespace: str | None,
    operation: str | None,
    old: kopf.Body | None,
    new: kopf.Body | None,
    userinfo: kopf.UserInfo,
    **_: Any,
) -> None:
    """What the CRD schema cannot check (cycles, unknown dependencies) is refused here, and so is a
    write that would have the operator create what its author may not create.

    Only a new spec is judged: an update that leaves the spec as it was (labels, annotations,
    finalizers) passes, so a flow that got in while the webhook was absent can still be cleaned up.
    Permissions are checked on the writes that may start a run, as the chart's policy checks them.
    """
    problem = admission_problem(operation, old, new, name)
    if problem:
        raise kopf.AdmissionError(problem, code=422)
    if new is not None and namespace and spec_is_new(operation, old, new):
        queues: LocalQueues = state["local_queues"]
        missing = await asyncio.to_thread(queue_problem, namespace, new.get("spec") or {}, queues.lookup)
        if missing:
            raise kopf.AdmissionError(missing, code=422)
    if new is None or not namespace or not may_start_a_run(operation, old, new):
        return
    reviews: AccessReviews = state["reviews"]
    username = str(userinfo.get("username") or "")

    def may_create(group: str, resource: str) -> bool:
        return reviews.may_create(userinfo, namespace, group, resource)

    refusal = await asyncio.to_thread(
        permission_problem, username, namespace, new.get("spec") or {}, may_create
    )
    if refusal:
        raise kopf.AdmissionError(refusal, code=403)


async def refuse_foreign_cache_entry_write(userinfo: kopf.UserInfo, **_: Any) -> None:
    """Only the operator writes cache entries (the API server does not even ask for its writes)."""
    problem = cache_entry_write_problem(userinfo.get("username"), state["operator_username"])
    if problem:
        raise kopf.AdmissionError(problem, code=403)


async def refuse_foreign_status_write(userinfo: kopf.UserInfo, **_: Any) -> None:
    """Only the operator writes a flow's status (the API server does not even ask for its writes)."""
    problem = status_write_problem(userinfo.get("username"), state["operator_username"])
    if problem:
        raise kopf.AdmissionError(problem, code=403)


@kopf.on.probe(id="flows")
def tracked_flows(**_: Any) -> int:
    reconciler: Reconciler | None = state.get("reconciler")
    return len(reconciler.flows) if reconciler else 0


@kopf.on.probe(id="reconcileStalledSeconds", errors=kopf.ErrorsMode.PERMANENT)
def reconcile_progress(**_: Any) -> float:
    """Liveness fails (HTTP 500) once passes are wanted and none has finished for too long."""
    reconciler: Reconciler | None = state.get("reconciler")
    stalled = reconciler.stalled_seconds() if reconciler else 0.0
    limit = state["settings"].liveness_stall_seconds if "settings" in state else None
    if limit is not None and stalled > limit:
        raise kopf.PermanentError(
            f"no reconcile pass finished for {stalled:.0f}s while flows wait (limit {limit:g}s)"
        )
    return round(stalled, 1)


def _ensure_reconciler(
    jobs: kopf.Index[FlowKey, JobObservation],
    deployments: kopf.Index[FlowKey, DeploymentObservation],
    services: kopf.Index[FlowKey, ServiceObservation],
    config_maps: kopf.Index[FlowKey, ConfigMapObservation],
    pods: kopf.Index[str, PodObservation],
) -> Reconciler:
    # Created on first use, inside kopf's event loop, once the indexes are filled from the lists.
    if "reconciler" not in state:
        settings: OperatorSettings = state["settings"]
        state["reconciler"] = Reconciler(
            settings,
            kube_module.KubeClient(settings.api_concurrency),
            jobs,
            deployments,
            services,
            config_maps,
            _post_event,
            workers=settings.reconcile_workers,
            pods=pods,
        )
    return _reconciler()


def _post_event(body: Mapping[str, Any], transition: FlowEvent) -> None:
    kopf.event(
        cast(kopf.Body, body),
        type=transition.event_type,
        reason=transition.reason,
        message=transition.message,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the operator in the foreground against the cluster of $KUBECONFIG or the pod's account."""
    parser = argparse.ArgumentParser(prog="dagflow-operator", description=main.__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOG_FORMATS[OperatorSettings().log_format],
    )
    if not args.verbose:
        # kopf logs every handled event at INFO; at thousands of Job events that is noise and CPU.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    operator_settings = OperatorSettings()
    check_ports_free(operator_settings)
    namespaces = args.namespace or operator_settings.namespaces
    peering = operator_settings.peering
    state["identity"] = own_identity()
    state["priority"] = start_priority() if peering else 0
    if operator_settings.webhook_enabled:
        # Registered only when served: kopf refuses to start with admission handlers and no server.
        # CREATE and UPDATE only: a DELETE is never refused, whatever the flow's spec.
        kopf.on.validate(GROUP, VERSION, PLURAL, id=FLOW_WEBHOOK_ID, operations=ADMITTED_OPERATIONS)(
            refuse_invalid_flow
        )
        kopf.on.validate(
            GROUP,
            VERSION,
            PLURAL,
            id=STATUS_WEBHOOK_ID,
            operations=STATUS_OPERATIONS,
            subresource="status",
        )(refuse_foreign_status_write)
        kopf.on.validate(
            GROUP, VERSION, CACHE_ENTRY_PLURAL, id=CACHE_ENTRY_WEBHOOK_ID, operations=CACHE_ENTRY_OPERATIONS
        )(refuse_foreign_cache_entry_write)
    kopf.run(
        standalone=peering is None,
        peering_name=peering,
        priority=state["priority"] if peering else None,
        identity=state["identity"],
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    # Clean-up is done. A call still waiting on a hung API server in a worker thread must not keep
    # the process alive until it times out.
    exit_now()


if __name__ == "__main__":
    main()
