"""The dashboard's web server: the page and its bundled code, a JSON API, and a stream
of server-sent events per namespace fed by the shared watch (`hub`).

Every read is made with the identity of the person behind the request (`access`). The one write is
a decision on an approval gate, made with that person's identity too (the API server records who
approves, and refuses one who may not), from the dashboard's own page only: it needs the token
`api/config` gives, in a header another site's page cannot send. Every request passes `guard` first
(its host, its origin), and every answer carries its security headers.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dagflow.api.models import ApprovalDecision
from dagflow.client.archive import ArchiveUnavailable, archived_logs
from dagflow.client.flowclient import ClusterError, FlowClient, Target
from dagflow.rules.approvals import ApprovalError
from dagflow.rules.naming import is_dns1123_label
from dagflow.ui import views
from dagflow.ui.access import Access, AuthMode, Unauthenticated, may_watch_flows
from dagflow.ui.guard import RequestGuard
from dagflow.ui.hub import Hub
from dagflow.ui.stream import RECHECK_SECONDS, reader_events

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
LOG_LINES = 500
CSRF_HEADER = "X-DAGFlow-CSRF"
MAX_SUBDOMAIN_LENGTH = 253
_DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def create_app(
    access: Access,
    default_namespace: str,
    allowed_hosts: Iterable[str] = (),
    check_host: bool = True,
    recheck_seconds: float = RECHECK_SECONDS,
) -> Starlette:
    """The dashboard's application. `check_host`: answer only to loopback names, IP addresses and
    `allowed_hosts` (see `guard`)."""
    hub = Hub(access.watcher)
    # Sent back by the page with each decision: only a page that could read api/config has it.
    csrf_token = secrets.token_urlsafe(32)

    def user(request: Request) -> FlowClient:
        return access.client_for(request, request.path_params["namespace"])

    def run_of(request: Request, flow: dict[str, Any]) -> int | None:
        """The run a request asks about (`?run=N`), else the flow's current one (none before its first)."""
        asked = request.query_params.get("run")
        current: int | None = (flow.get("status") or {}).get("run")
        return int(asked) if asked and asked.isdigit() else current

    def config(request: Request) -> JSONResponse:
        access.authenticate(request, default_namespace)
        return JSONResponse(
            {"namespace": default_namespace, "auth": access.mode.value, "csrfToken": csrf_token},
            headers={"Cache-Control": "no-store"},
        )

    def flows(request: Request) -> JSONResponse:
        found = user(request).list_flows()
        return JSONResponse({"flows": [views.flow_row(flow) for flow in found]})

    def flow(request: Request) -> JSONResponse:
        client = user(request)
        found = client.read(request.path_params["name"])
        graph = views.flow_graph(found)
        run = run_of(request, found)
        graph["shownRun"] = run
        if run is not None and run != graph["run"]:
            jobs = client.jobs(found["metadata"]["name"], run=run)
            states = views.run_states(found, run, jobs)
            for node in graph["nodes"]:
                node.update(states.get(node["id"]) or {})
        return JSONResponse(graph)

    def work(request: Request) -> JSONResponse:
        client = user(request)
        found = client.read(request.path_params["name"])
        name, work_name = found["metadata"]["name"], request.path_params["work"]
        if work_name not in {entry["name"] for entry in views.spec_works(found)}:
            return JSONResponse({"error": f"DAGFlow {name} has no work {work_name}"}, status_code=404)
        run = run_of(request, found)
        details = views.work_details(
            found,
            work_name,
            run,
            client.jobs(name, work_name, run),
            client.pods(name, work_name, run),
            _events_or_none(client),
        )
        gate = details.get("approval")
        if gate is not None and gate["waiting"]:
            # The buttons are shown to those the API server would let decide: the approve verb on
            # this flow, and the patch that carries the decision.
            gate["mayDecide"] = all(
                client.may("dagflow.dev", "dagflows", verb, name) for verb in ("approve", "patch")
            )
        return JSONResponse(details)

    async def decide(request: Request) -> Response:
        """Approve or reject a waiting gate as the person behind the request."""
        given = request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(given.encode(), csrf_token.encode()):
            return JSONResponse(
                {"error": f"a decision needs the {CSRF_HEADER} header of this page"}, status_code=403
            )
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "a decision is sent as application/json"}, status_code=415)
        try:
            body = await request.json()
            decision = ApprovalDecision(body.get("decision"))
            params = body.get("params") or {}
            message = body.get("message") or None
            if not isinstance(params, dict) or not (message is None or isinstance(message, str)):
                raise ValueError("params is an object of names to values, message a string")
        except (ValueError, AttributeError) as error:
            return JSONResponse({"error": f"not a decision: {error}"}, status_code=400)
        client = user(request)
        try:
            run, token = await run_in_threadpool(
                client.decide,
                request.path_params["name"],
                request.path_params["work"],
                decision,
                params,
                message,
            )
        except ApprovalError as error:
            return JSONResponse({"error": str(error)}, status_code=409)
        return JSONResponse({"run": run, "token": token, "decision": decision.value})

    def logs(request: Request) -> JSONResponse:
        client = user(request)
        found = client.read(request.path_params["name"])
        run = run_of(request, found)
        pods = client.pods(found["metadata"]["name"], request.path_params["work"], run)
        shown = []
        for pod in pods:
            container = pod["spec"]["containers"][0]["name"]
            entry: dict[str, Any] = {"pod": pod["metadata"]["name"], "container": container}
            try:
                entry["lines"] = list(client.logs(pod, container))[-LOG_LINES:]
            except ClusterError as error:
                entry["error"] = str(error)
            shown.append(entry)
        if shown:
            return JSONResponse({"run": run, "pods": shown})
        # The pods are gone: their logs as the launcher archived them, read with the reader's rights.
        try:
            archived = archived_logs(client, found, request.path_params["work"], int(run or 0))
        except ArchiveUnavailable as error:
            return JSONResponse({"run": run, "pods": [], "note": f"The pods are gone: {error}."})
        pods = [
            {"pod": log.pod, "container": "", "lines": log.lines[-LOG_LINES:], "archived": True}
            for log in archived
        ]
        note = "The pods are gone: their logs as archived in the artifact store."
        return JSONResponse({"run": run, "pods": pods, "note": note if pods else f"{note} None was found."})

    async def stream(request: Request) -> Response:
        namespace = request.path_params["namespace"]
        reader = user(request)
        if not await run_in_threadpool(may_watch_flows, reader):
            return _forbidden(namespace)
        token_expiry = access.token_expiry(request)
        # On the monotonic clock: a change of the machine's time neither ends nor prolongs a stream.
        expires_at = None if token_expiry is None else time.monotonic() + token_expiry - time.time()
        watch, subscriber = hub.subscribe(namespace)

        async def still_allowed() -> bool:
            try:
                return await run_in_threadpool(may_watch_flows, reader)
            except ClusterError as error:  # a revoked token, an API server away: the stream ends
                log.info("Stream of namespace %s ends: %s", namespace, error)
                return False

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                if watch.synced.is_set():
                    yield watch.snapshot()
                async for message in reader_events(
                    subscriber.queue, still_allowed, expires_at, recheck_seconds=recheck_seconds
                ):
                    yield message
            finally:
                hub.unsubscribe(watch, subscriber)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def hub_stats(request: Request) -> JSONResponse:
        """The watched namespaces; with bearer tokens, only those the reader may watch."""
        reader = access.authenticate(request, default_namespace)
        stats = hub.stats()
        if access.mode is AuthMode.BEARER:
            stats = {ns: entry for ns, entry in stats.items() if may_watch_flows(reader.in_namespace(ns))}
        return JSONResponse(stats)

    def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def healthz(request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    namespaced = "/api/namespaces/{namespace}"
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/api/config", _guarded(config)),
        Route("/api/hub", _guarded(hub_stats)),
        Route(f"{namespaced}/flows", _guarded(flows)),
        Route(f"{namespaced}/flows/{{name}}", _guarded(flow)),
        Route(f"{namespaced}/flows/{{name}}/works/{{work}}", _guarded(work)),
        Route(f"{namespaced}/flows/{{name}}/works/{{work}}/logs", _guarded(logs)),
        Route(
            f"{namespaced}/flows/{{name}}/works/{{work}}/decision", _guarded_async(decide), methods=["POST"]
        ),
        Route(f"{namespaced}/stream", _guarded_async(stream)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        hub.stop()

    guard = Middleware(RequestGuard, allowed_hosts=allowed_hosts, check_host=check_host)
    return Starlette(routes=routes, lifespan=lifespan, middleware=[guard])


def serve(target: Target, address: str, port: int, mode: AuthMode, allowed_hosts: Iterable[str] = ()) -> None:
    """Serve the dashboard until interrupted. With the kubeconfig's identity every request is
    checked for its host (a page that rebinds its domain to this address gets nothing); with bearer
    tokens a rebinding page has no token to send, and hosts are checked where some are given."""
    server_client = FlowClient(target, field_manager="dagflow-ui")
    allowed_hosts = tuple(allowed_hosts)
    app = create_app(
        Access(server_client, mode),
        server_client.namespace,
        allowed_hosts,
        check_host=mode is AuthMode.KUBECONFIG or bool(allowed_hosts),
    )
    url = f"http://{address if ':' not in address else f'[{address}]'}:{port}/#/ns/{server_client.namespace}"
    print(f"Serving the DAGFlow dashboard at {url}", flush=True)
    uvicorn.run(app, host=address, port=port, log_level="warning", access_log=False)


def _events_or_none(client: FlowClient) -> list[dict[str, Any]]:
    """The namespace's Events, or none where the reader may not list them."""
    try:
        return client.events()
    except ClusterError as error:
        if error.status in (401, 403):
            return []
        raise


def _forbidden(namespace: str) -> JSONResponse:
    return JSONResponse({"error": f"you may not read DAGFlows in namespace {namespace}"}, status_code=403)


def _failure(error: Exception) -> JSONResponse:
    if isinstance(error, Unauthenticated):
        return JSONResponse({"error": str(error)}, status_code=401)
    assert isinstance(error, ClusterError)
    status = error.status if error.status in (401, 403, 404, 422) else 502
    return JSONResponse({"error": str(error)}, status_code=status)


def _bad_name(request: Request) -> JSONResponse | None:
    """A 400 for a namespace, flow or work in the URL that Kubernetes could not have named so;
    such a value never reaches the API server (in a path, a field or label selector)."""
    params = request.path_params
    checks = [
        ("namespace", is_dns1123_label, "a DNS-1123 label"),
        ("work", is_dns1123_label, "a DNS-1123 label"),
        ("name", _is_dns1123_subdomain, "a DNS-1123 subdomain"),
    ]
    for key, valid, what in checks:
        value = params.get(key)
        if value is not None and not valid(value):
            shown = "flow" if key == "name" else key
            return JSONResponse({"error": f"{shown} {value!r} is not {what}"}, status_code=400)
    return None


def _is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= MAX_SUBDOMAIN_LENGTH and bool(_DNS_1123_SUBDOMAIN.match(value))


def _guarded(endpoint: Callable[[Request], Response]) -> Callable[[Request], Any]:
    """The endpoint run in a thread (the kubernetes client blocks), its refusals as JSON errors."""

    async def guarded(request: Request) -> Response:
        refusal = _bad_name(request)
        if refusal is not None:
            return refusal
        try:
            return await run_in_threadpool(endpoint, request)
        except (ClusterError, Unauthenticated) as error:
            return _failure(error)

    return guarded


def _guarded_async(endpoint: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def guarded(request: Request) -> Response:
        refusal = _bad_name(request)
        if refusal is not None:
            return refusal
        try:
            response: Response = await endpoint(request)
            return response
        except (ClusterError, Unauthenticated) as error:
            return _failure(error)

    return guarded
