"""How the API server reaches the admission webhook: kopf's server, registered by URL or by Service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import kopf

from dagflow.api.models import PARAMS_ANNOTATION
from dagflow.controller.certs import write_self_signed
from dagflow.controller.settings import OperatorSettings
from dagflow.rules.validation import params_annotation_problems, size_problems, validate_flow

# What the webhook is registered for: a DELETE (of a flow, or of its namespace) is never refused.
ADMITTED_OPERATIONS: list[kopf.Operation] = ["CREATE", "UPDATE"]


def admission_problem(
    operation: str | None,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    name: str | None = None,
) -> str | None:
    """Why the API server should refuse this write of a DAGFlow, or None to let it through.

    Only a spec that is new is judged: a CREATE, or an UPDATE that changes the spec. An UPDATE that
    keeps the spec (labels, annotations, finalizers, a deletion in progress) passes even when that
    spec is invalid (it got in while the webhook was absent), so such a flow can always be cleaned up.
    The parameter values for run requests (annotation dagflow.dev/params) are judged when they or
    the spec change.
    """
    if operation not in ADMITTED_OPERATIONS or new is None:
        return None
    spec = new.get("spec") or {}
    spec_changed = operation != "UPDATE" or old is None or (old.get("spec") or {}) != spec
    checked = dict(spec) if isinstance(spec, Mapping) else spec
    problems = [*validate_flow(checked, flow_name=name), *size_problems(new)] if spec_changed else []
    if not problems and (spec_changed or _params_of(old) != _params_of(new)):
        problems += params_annotation_problems(new)
    return "; ".join(str(problem) for problem in problems[:20]) or None


def _params_of(obj: Mapping[str, Any] | None) -> str | None:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(PARAMS_ANNOTATION)
    return value if isinstance(value, str) else None


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, registered as a Service reference instead of a URL.

    In a cluster the API server reaches webhooks through a Service: it resolves the Service itself
    and checks the certificate against `<name>.<namespace>.svc`. A URL with that host name would
    need the API server to resolve cluster DNS, which it usually cannot.
    """

    def __init__(self, *, service_namespace: str, service_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace = service_namespace
        self.service_name = service_name

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for served in super().__call__(fn):
            service = kopf.WebhookClientConfigService(
                namespace=self.service_namespace,
                name=self.service_name,
                port=self.port,
                # kopf appends "/<handler id>" to this path.
                path=(self.path or "").rstrip("/"),
            )
            config = kopf.WebhookClientConfig(service=service)
            if served.get("caBundle"):
                config["caBundle"] = served["caBundle"]
            yield config


def service_host_names(namespace: str, name: str) -> list[str]:
    """The names an in-cluster client may use for the Service; the first is what the API server checks."""
    return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}", name]


def build_webhook_server(settings: OperatorSettings) -> kopf.WebhookServer:
    """The webhook server the settings ask for, with a self-signed certificate unless one is given."""
    certfile, pkeyfile = settings.webhook_cert_file, settings.webhook_key_file
    if settings.webhook_service:
        namespace, name = settings.webhook_service.split("/")
        if not (certfile and pkeyfile):
            cert_path, key_path = write_self_signed(service_host_names(namespace, name))
            certfile, pkeyfile = str(cert_path), str(key_path)
        return ServiceWebhookServer(
            service_namespace=namespace,
            service_name=name,
            addr="0.0.0.0",
            port=settings.webhook_port,
            certfile=certfile,
            pkeyfile=pkeyfile,
        )
    host = settings.webhook_host or "localhost"
    if not (certfile and pkeyfile):
        cert_path, key_path = write_self_signed([host, "localhost", "127.0.0.1"])
        certfile, pkeyfile = str(cert_path), str(key_path)
    return kopf.WebhookServer(
        addr="0.0.0.0" if settings.webhook_host else "127.0.0.1",
        port=settings.webhook_port,
        host=host,
        certfile=certfile,
        pkeyfile=pkeyfile,
    )
