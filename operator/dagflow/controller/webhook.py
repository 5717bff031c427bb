"""The admission webhook: what it refuses, how it is registered, and its certificate.

It refuses invalid specs, writes that would have the operator create what the requesting user may
not create (the same questions as the chart's ValidatingAdmissionPolicy, asked by SubjectAccessReview),
and status writes by anyone but the operator.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import (
    CACHE_ENTRY_PLURAL,
    GROUP,
    PARAMS_ANNOTATION,
    PLURAL,
    RERUN_ANNOTATION,
    RETRY_ANNOTATION,
    VERSION,
    DAGFlowSpec,
)
from dagflow.controller.certs import VALIDITY, write_self_signed
from dagflow.controller.kube import MERGE_PATCH, api_error_message, names_an_object, read_body
from dagflow.controller.queueing import KUEUE_GROUP, KUEUE_VERSIONS
from dagflow.controller.settings import OperatorSettings
from dagflow.rules.validation import params_annotation_problems, size_problems, validate_flow

logger = logging.getLogger("dagflow")

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


# The webhooks the operator registers in its ValidatingWebhookConfiguration: the flows themselves,
# and their status subresource, which only the operator writes.
FLOW_WEBHOOK_ID = "validate-dagflow"
STATUS_WEBHOOK_ID = "validate-dagflow-status"
STATUS_OPERATIONS: list[kopf.Operation] = ["UPDATE"]
# Cache entries: what a later run takes instead of running a work, so only the operator writes them.
# Anyone allowed to may delete one: the work then runs again.
CACHE_ENTRY_WEBHOOK_ID = "validate-dagflow-cache-entry"
CACHE_ENTRY_OPERATIONS: list[kopf.Operation] = ["CREATE", "UPDATE"]
# Marks a configuration the operator made itself (no chart made one): only such a one is deleted
# when the operator stops.
CREATED_BY_LABEL = "dagflow.dev/created-by"
CREATED_BY_VALUE = "dagflow-operator"
# After a renewed certificate's CA is registered, how long the API servers get to load it before the
# server switches to the new certificate (both CAs are trusted meanwhile).
TRUST_PROPAGATION_SECONDS = 3.0
REGISTRATION_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class PermissionCheck:
    """One question the chart's ValidatingAdmissionPolicy asks, and the words of its refusal."""

    what: str
    resources: tuple[tuple[str, str], ...]  # (API group, resource) the user must be allowed to create
    purpose: str


JOBS_CHECK = PermissionCheck("Jobs", (("batch", "jobs"),), "which the operator would create for this DAGFlow")
SERVE_CHECK = PermissionCheck(
    "Deployments and Services",
    (("apps", "deployments"), ("", "services")),
    "which the operator would create for the serve works of this DAGFlow",
)
DATA_CHECK = PermissionCheck(
    "ConfigMaps",
    (("", "configmaps"),),
    "which the operator would create for the matrix works and the outputs of this DAGFlow",
)

WORKSPACE_CHECK = PermissionCheck(
    "PersistentVolumeClaims",
    (("", "persistentvolumeclaims"),),
    "which the operator would create for the workspace of this DAGFlow",
)


def may_start_a_run(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> bool:
    """Whether this write may start a run, as the chart's policy decides it (its matchCondition).

    A new flow, a new spec, or a changed run request (rerun, retry, or the parameter values they
    carry). Labels, other annotations, finalizers and a stop request start nothing.
    """
    if operation == "CREATE":
        return True
    if operation != "UPDATE" or new is None:
        return False
    if old is None or (old.get("spec") or {}) != (new.get("spec") or {}):
        return True
    return any(_annotation(old, key) != _annotation(new, key) for key in RUN_ANNOTATIONS)


RUN_ANNOTATIONS = (RERUN_ANNOTATION, RETRY_ANNOTATION, PARAMS_ANNOTATION)


def _annotation(obj: Mapping[str, Any], key: str) -> str:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(key) or "")


def permission_checks(spec: Mapping[str, Any]) -> list[PermissionCheck]:
    """What the author of `spec` must be allowed to create, in the order the policy asks."""
    works = spec.get("works") if isinstance(spec, Mapping) else None
    works = [work for work in works if isinstance(work, Mapping)] if isinstance(works, list) else []
    checks = [JOBS_CHECK]
    if any("serve" in work for work in works):
        checks.append(SERVE_CHECK)
    # A matrix work's values and outputs, and outputs past the status's budget, are ConfigMaps.
    if any("matrix" in work or work.get("outputs") for work in works):
        checks.append(DATA_CHECK)
    if isinstance(spec, Mapping) and spec.get("workspace") is not None:
        checks.append(WORKSPACE_CHECK)
    return checks


def permission_problem(
    username: str, namespace: str, spec: Mapping[str, Any], may_create: Callable[[str, str], bool]
) -> str | None:
    """Why `username` may not have the operator act on `spec`, in the policy's words, or None.

    `may_create(group, resource)` answers whether the user may create that in the flow's namespace.
    """
    for check in permission_checks(spec):
        if not all(may_create(group, resource) for group, resource in check.resources):
            return f"{username} may not create {check.what} in namespace {namespace}, {check.purpose}"
    return None


QUEUE_FOUND, QUEUE_MISSING, NO_KUEUE = "found", "missing", "no-kueue"


def spec_is_new(operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether this write brings a spec the webhook has not judged: a CREATE, or an UPDATE of the spec."""
    if new is None or operation not in ADMITTED_OPERATIONS:
        return False
    return operation != "UPDATE" or old is None or (old.get("spec") or {}) != (new.get("spec") or {})


def queue_problem(namespace: str, spec: Mapping[str, Any], lookup: Callable[[str, str], str]) -> str | None:
    """Why the LocalQueues a valid spec names cannot take its Jobs, or None.

    `lookup(namespace, name)` answers QUEUE_FOUND, QUEUE_MISSING or NO_KUEUE. A Job labelled with a
    queue that does not exist would wait for ever, suspended: better refused at apply.
    """
    named = DAGFlowSpec.model_validate(spec).named_queues()
    for where, queue in named.items():
        found = lookup(namespace, queue)
        if found == NO_KUEUE:
            return (
                f"{where} names LocalQueue {queue!r}, but Kueue is not installed on this cluster (the API "
                f"server serves no {KUEUE_GROUP} LocalQueues): install Kueue, or leave queueName out"
            )
        if found == QUEUE_MISSING:
            return (
                f"{where} names LocalQueue {queue!r}, which does not exist in namespace {namespace} "
                f"(kubectl get localqueues -n {namespace}): create it, or name another"
            )
    return None


class LocalQueues:
    """Asks the API server whether a LocalQueue exists, and whether Kueue is installed at all."""

    def __init__(self, api: Any) -> None:
        self.custom = client.CustomObjectsApi(api)

    def lookup(self, namespace: str, name: str) -> str:
        for version in KUEUE_VERSIONS:
            try:
                read_body(
                    self.custom.get_namespaced_custom_object,
                    KUEUE_GROUP,
                    version,
                    namespace,
                    "localqueues",
                    name,
                )
            except ApiException as error:
                if error.status != 404:
                    # Not for the webhook to decide (RBAC, an API server in trouble): the work's
                    # status will tell what Kueue says.
                    logger.warning(
                        "Could not look up LocalQueue %s/%s: %s", namespace, name, api_error_message(error)
                    )
                    return QUEUE_FOUND
                if names_an_object(error):
                    return QUEUE_MISSING
                continue
            return QUEUE_FOUND
        return NO_KUEUE


def status_write_problem(username: str | None, operator_username: str) -> str | None:
    """Only the operator writes a flow's status: runs and what its pods read are decided from it."""
    if username == operator_username:
        return None
    return (
        f"{username or 'an anonymous user'} may not write the status of a DAGFlow: only the operator"
        f" ({operator_username}) does, as runs and the data its pods read are decided from it"
    )


def cache_entry_write_problem(username: str | None, operator_username: str) -> str | None:
    """Only the operator writes cache entries: a later run takes a work's outputs from one instead of
    running the work."""
    if username == operator_username:
        return None
    return (
        f"{username or 'an anonymous user'} may not write DAGFlow cache entries: only the operator"
        f" ({operator_username}) does, as later runs take works' outputs from them instead of running"
        " the works (deleting one is allowed)"
    )


class AccessReviews:
    """Asks the API server's authorizer about users (SubjectAccessReview) and about itself."""

    def __init__(self, api: Any) -> None:
        self.authorization = client.AuthorizationV1Api(api)
        self.authentication = client.AuthenticationV1Api(api)

    def may_create(self, userinfo: Mapping[str, Any], namespace: str, group: str, resource: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": userinfo.get("username"),
                "uid": userinfo.get("uid"),
                "groups": list(userinfo.get("groups") or []),
                "extra": {key: list(values) for key, values in (userinfo.get("extra") or {}).items()},
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "create",
                    "group": group,
                    "resource": resource,
                },
            },
        }
        answer = json.loads(read_body(self.authorization.create_subject_access_review, review))
        return bool((answer.get("status") or {}).get("allowed"))

    def own_username(self) -> str:
        """Who the operator is to the API server (SelfSubjectReview, open to every authenticated user)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        answer = json.loads(read_body(self.authentication.create_self_subject_review, review))
        return str(answer["status"]["userInfo"]["username"])


def registered_webhooks(client_config: Mapping[str, Any], operator_username: str) -> list[dict[str, Any]]:
    """The webhooks of the operator's ValidatingWebhookConfiguration for this client config.

    Both fail closed (failurePolicy Fail): while nothing answers, no flow gets in unchecked. The
    status webhook is not even called for the operator's own writes (matchConditions), so they never
    wait for its server.
    """

    def webhook(handler_id: str, resource: str, operations: list[kopf.Operation]) -> dict[str, Any]:
        config = copy.deepcopy(dict(client_config))
        if "url" in config:
            config["url"] = f"{config['url'].rstrip('/')}/{handler_id}"
        if "service" in config:
            config["service"] = {
                **config["service"],
                "path": f"{config['service'].get('path', '')}/{handler_id}",
            }
        return {
            "name": f"{handler_id}.{GROUP}",
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [resource],
                    "operations": list(operations),
                    "scope": "Namespaced",
                }
            ],
            "clientConfig": config,
            "timeoutSeconds": 30,
            "admissionReviewVersions": ["v1"],
        }

    status = webhook(STATUS_WEBHOOK_ID, f"{PLURAL}/status", STATUS_OPERATIONS)
    status["matchConditions"] = [
        {
            "name": "not-the-operator",
            "expression": f"request.userInfo.username != {json.dumps(operator_username)}",
        }
    ]
    entries = webhook(CACHE_ENTRY_WEBHOOK_ID, CACHE_ENTRY_PLURAL, CACHE_ENTRY_OPERATIONS)
    entries["matchConditions"] = copy.deepcopy(status["matchConditions"])
    return [webhook(FLOW_WEBHOOK_ID, PLURAL, ADMITTED_OPERATIONS), status, entries]


class WebhookRegistration:
    """Keeps the operator's webhooks in the ValidatingWebhookConfiguration `name`.

    Where it exists (the chart makes it), it is only patched: the operator's role may get and patch
    that one configuration and create none. Where it does not (a local run), the operator creates it,
    labelled as its own.
    """

    def __init__(self, api: Any, name: str, operator_username: str) -> None:
        self.admission = client.AdmissionregistrationV1Api(api)
        self.name = name
        self.operator_username = operator_username

    def apply(self, client_config: Mapping[str, Any]) -> None:
        webhooks = registered_webhooks(client_config, self.operator_username)
        try:
            read_body(
                self.admission.patch_validating_webhook_configuration,
                self.name,
                {"webhooks": webhooks},
                _content_type=MERGE_PATCH,
            )
            return
        except ApiException as error:
            if error.status != 404:
                raise
        configuration = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.name, "labels": {CREATED_BY_LABEL: CREATED_BY_VALUE}},
            "webhooks": webhooks,
        }
        read_body(self.admission.create_validating_webhook_configuration, configuration)

    def remove_if_own(self) -> bool:
        """Delete the configuration if the operator made it itself; a chart's one stays (fail closed)."""
        try:
            found = json.loads(read_body(self.admission.read_validating_webhook_configuration, self.name))
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        if ((found.get("metadata") or {}).get("labels") or {}).get(CREATED_BY_LABEL) != CREATED_BY_VALUE:
            return False
        uid = found["metadata"]["uid"]
        read_body(
            self.admission.delete_validating_webhook_configuration,
            self.name,
            body={"preconditions": {"uid": uid}},
        )
        return True


Register = Callable[[kopf.WebhookClientConfig], Awaitable[None]]


def _plain_server(
    server: kopf.WebhookServer, fn: kopf.WebhookFn
) -> AsyncGenerator[kopf.WebhookClientConfig, None]:
    """kopf's server generator itself: closing it stops its site at once. kopf wraps `__call__` in a
    generator that only forwards, and closing that one leaves the inner one (and its port) open."""
    unwrapped = kopf.WebhookServer.__call__.__wrapped__  # type: ignore[attr-defined]
    return cast(AsyncGenerator[kopf.WebhookClientConfig, None], unwrapped(server, fn))


class DagflowWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server, which registers its own client config and renews its own certificate.

    `service`: registered as a reference to that Service (namespace, name) instead of a URL. In a
    cluster the API server reaches webhooks through a Service: it resolves the Service itself and
    checks the certificate against `<name>.<namespace>.svc`.

    `hostnames` (no certificate files given): a self-signed certificate for them, made again and
    registered when a third of `certificate_lifetime` is left. The new CA is registered next to the
    old one before the server switches, so the API server trusts whichever it reaches meanwhile.
    With certificate files (cert-manager), kopf reads them again when they change.
    """

    def __init__(
        self,
        *,
        service: tuple[str, str] | None = None,
        hostnames: list[str] | None = None,
        certificate_lifetime: datetime.timedelta | None = None,
        register: Register | None = None,
        trust_propagation_seconds: float = TRUST_PROPAGATION_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.trust_propagation_seconds = trust_propagation_seconds
        self.service = service
        self.hostnames = hostnames or []
        self.certificate_lifetime = certificate_lifetime or VALIDITY
        self.register = register
        self.self_signed = not (self.certfile and self.pkeyfile)

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        if not self.self_signed:
            async for served in super().__call__(fn):
                config = self._client_config(served)
                await self._register(config)
                yield config
            return
        serving: AsyncGenerator[kopf.WebhookClientConfig, None] | None = None
        previous_ca = b""
        try:
            while True:
                cert_path, key_path = write_self_signed(self.hostnames, lifetime=self.certificate_lifetime)
                new_ca = cert_path.read_bytes()
                if serving is not None:
                    both = await self._with_ca(self._current, new_ca + previous_ca)
                    await self._register(both)
                    yield both
                    await asyncio.sleep(self.trust_propagation_seconds)
                self.certfile, self.pkeyfile = str(cert_path), str(key_path)
                # kopf's server binds with SO_REUSEPORT: the new one listens before the old one stops.
                replacement = _plain_server(self, fn)
                served = await anext(replacement)
                if serving is not None:
                    await serving.aclose()
                serving, previous_ca = replacement, new_ca
                self._current = self._client_config(served)
                await self._register(self._current)
                yield self._current
                renewal = self.certificate_lifetime.total_seconds() * 2 / 3
                logger.info(
                    "Webhook certificate valid for %s; renewed in %.0f s", self.certificate_lifetime, renewal
                )
                await asyncio.sleep(max(renewal - self.trust_propagation_seconds, 0.1))
        finally:
            if serving is not None:
                await serving.aclose()

    _current: kopf.WebhookClientConfig

    @staticmethod
    async def _with_ca(config: kopf.WebhookClientConfig, bundle: bytes) -> kopf.WebhookClientConfig:
        updated = kopf.WebhookClientConfig(**config)
        updated["caBundle"] = base64.b64encode(bundle).decode("ascii")
        return updated

    def _client_config(self, served: kopf.WebhookClientConfig) -> kopf.WebhookClientConfig:
        if self.service is None:
            return served
        namespace, name = self.service
        service = kopf.WebhookClientConfigService(
            namespace=namespace,
            name=name,
            port=self.port,
            # The handler's id is appended to this path.
            path=(self.path or "").rstrip("/"),
        )
        config = kopf.WebhookClientConfig(service=service)
        if served.get("caBundle"):
            config["caBundle"] = served["caBundle"]
        return config

    async def _register(self, config: kopf.WebhookClientConfig) -> None:
        """Patch the configuration; tried again until it works, as nothing is validated without it."""
        while self.register is not None:
            try:
                await self.register(config)
                return
            except Exception as error:  # the API server may be briefly gone; the webhook must get in
                logger.error(
                    "Could not register the admission webhook (%s); trying again in %.0f s",
                    api_error_message(error) if isinstance(error, ApiException) else repr(error),
                    REGISTRATION_RETRY_SECONDS,
                )
                await asyncio.sleep(REGISTRATION_RETRY_SECONDS)


def service_host_names(namespace: str, name: str) -> list[str]:
    """The names an in-cluster client may use for the Service; the first is what the API server checks."""
    return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}", name]


def build_webhook_server(
    settings: OperatorSettings, register: Register | None = None
) -> DagflowWebhookServer:
    """The webhook server the settings ask for, with a self-signed certificate unless one is given."""
    lifetime = datetime.timedelta(seconds=settings.webhook_certificate_lifetime_seconds)
    files: dict[str, Any] = {}
    if settings.webhook_cert_file and settings.webhook_key_file:
        files = {"certfile": settings.webhook_cert_file, "pkeyfile": settings.webhook_key_file}
    if settings.webhook_service:
        namespace, name = settings.webhook_service.split("/")
        return DagflowWebhookServer(
            service=(namespace, name),
            hostnames=service_host_names(namespace, name),
            certificate_lifetime=lifetime,
            register=register,
            addr="0.0.0.0",
            port=settings.webhook_port,
            **files,
        )
    host = settings.webhook_host or "localhost"
    return DagflowWebhookServer(
        hostnames=[host, "localhost", "127.0.0.1"],
        certificate_lifetime=lifetime,
        register=register,
        addr="0.0.0.0" if settings.webhook_host else "127.0.0.1",
        port=settings.webhook_port,
        host=host,
        **files,
    )
