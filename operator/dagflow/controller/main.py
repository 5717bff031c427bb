"""The kopf wiring: watches, indexes and the admission webhook. Logic lives in `reconciler`.

Run with `dagflow-operator` (or `make run`). Only event handlers are used for DAGFlows, so kopf keeps
no copy of the spec in annotations: a 2,000-work flow reconciles like a small one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
import urllib3

from dagflow.api.models import GROUP, PLURAL, VERSION
from dagflow.controller import kube as kube_module
from dagflow.controller import metrics
from dagflow.controller.observe import (
    ConfigMapObservation,
    DeploymentObservation,
    FlowKey,
    JobObservation,
    ServiceObservation,
    observe_config_map,
    observe_deployment,
    observe_job,
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
from dagflow.controller.webhook import ADMITTED_OPERATIONS, admission_problem, build_webhook_server
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

state: dict[str, Any] = {}
LOG_FORMATS = {
    "text": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    "json": '{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "message": %(message)r}',
}


def _reconciler() -> Reconciler:
    reconciler: Reconciler = state["reconciler"]
    return reconciler


def _flow_key(namespace: str | None, body: Mapping[str, Any]) -> FlowKey | None:
    flow = owner_flow(body)
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
    settings.watching.label_selectors["batch", "jobs"] = MANAGED_SELECTOR
    settings.watching.label_selectors["apps", "deployments"] = MANAGED_SELECTOR
    settings.watching.label_selectors["", "services"] = MANAGED_SELECTOR
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
        settings.admission.server = build_webhook_server(operator_settings)
        if operator_settings.webhook_managed:
            settings.admission.managed = WEBHOOK_CONFIGURATION
    if operator_settings.metrics_port:
        metrics.serve(operator_settings.metrics_port)
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
    reconciler: Reconciler | None = state.pop("reconciler", None)
    if reconciler is not None:
        await reconciler.stop()
    if operator_settings and operator_settings.webhook_enabled and operator_settings.webhook_managed:
        # Without the operator nobody answers the webhook; leave DAGFlows writable, unless a peer
        # replica is still there to answer it.
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
    kube.delete_webhook_configurations(WEBHOOK_CONFIGURATION)


# Indexers and handlers are coroutines: kopf runs plain functions in a thread pool, a hop per
# event that costs more than the work they do.
@kopf.index("batch", "v1", "jobs", labels=CHILD_FILTER)
async def flow_jobs(namespace: str | None, body: kopf.Body, **_: Any) -> dict[FlowKey, Any] | None:
    key = _flow_key(namespace, body)
    return {key: observe_job(body)} if key else None


@kopf.index("apps", "v1", "deployments", labels=CHILD_FILTER)
async def flow_deployments(namespace: str | None, body: kopf.Body, **_: Any) -> dict[FlowKey, Any] | None:
    key = _flow_key(namespace, body)
    return {key: observe_deployment(body)} if key else None


@kopf.index("", "v1", "services", labels=CHILD_FILTER)
async def flow_services(namespace: str | None, body: kopf.Body, **_: Any) -> dict[FlowKey, Any] | None:
    key = _flow_key(namespace, body)
    return {key: observe_service(body)} if key else None


@kopf.index("", "v1", "configmaps", labels=CHILD_FILTER)
async def flow_config_maps(namespace: str | None, body: kopf.Body, **_: Any) -> dict[FlowKey, Any] | None:
    key = _flow_key(namespace, body)
    return {key: observe_config_map(body)} if key else None


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_FILTER)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "services", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "configmaps", labels=CHILD_FILTER)
async def child_changed(
    namespace: str | None,
    body: kopf.Body,
    flow_jobs: kopf.Index[FlowKey, JobObservation],
    flow_deployments: kopf.Index[FlowKey, DeploymentObservation],
    flow_services: kopf.Index[FlowKey, ServiceObservation],
    flow_config_maps: kopf.Index[FlowKey, ConfigMapObservation],
    **_: Any,
) -> None:
    key = _flow_key(namespace, body)
    if key:
        _ensure_reconciler(flow_jobs, flow_deployments, flow_services, flow_config_maps).enqueue(key)


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
    **_: Any,
) -> None:
    if not namespace or not name:
        return
    reconciler = _ensure_reconciler(flow_jobs, flow_deployments, flow_services, flow_config_maps)
    reconciler.flow_seen((namespace, name), None if type == "DELETED" else body)


def refuse_invalid_flow(
    name: str | None,
    operation: str | None,
    old: kopf.Body | None,
    new: kopf.Body | None,
    **_: Any,
) -> None:
    """What the CRD schema cannot check (cycles, unknown dependencies) is refused here.

    Only a new spec is judged: an update that leaves the spec as it was (labels, annotations,
    finalizers) passes, so a flow that got in while the webhook was absent can still be cleaned up.
    """
    problem = admission_problem(operation, old, new, name)
    if problem:
        raise kopf.AdmissionError(problem, code=422)


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
    namespaces = args.namespace or operator_settings.namespaces
    peering = operator_settings.peering
    state["identity"] = own_identity()
    state["priority"] = start_priority() if peering else 0
    if operator_settings.webhook_enabled:
        # Registered only when served: kopf refuses to start with admission handlers and no server.
        # CREATE and UPDATE only: a DELETE is never refused, whatever the flow's spec.
        kopf.on.validate(GROUP, VERSION, PLURAL, id="validate-dagflow", operations=ADMITTED_OPERATIONS)(
            refuse_invalid_flow
        )
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
