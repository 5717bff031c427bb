"""The operator's few writes to Kubernetes, made idempotent and run off the event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dagflow import metrics
from dagflow.api.models import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "dagflow-operator"
# (connect, read) seconds for every call: a hung API server must never hang a reconcile pass or a
# shutdown; the pass fails and is retried instead.
REQUEST_TIMEOUT = (5.0, 30.0)


class NameTakenError(Exception):
    """A child's deterministic name is held by an object this flow does not own."""


class KubeClient:
    """Creates, patches and deletes the objects of flows, at most `concurrency` calls at a time."""

    def __init__(self, concurrency: int) -> None:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = concurrency
        api_client = client.ApiClient(configuration)
        api_client.user_agent = USER_AGENT
        self.batch = client.BatchV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self._slots = asyncio.Semaphore(concurrency)
        # Its own threads: asyncio's default pool has only a handful on a small machine.
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="dagflow-api")

    async def _call(
        self, verb: str, resource: str, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> bytes:
        """Call the API in a worker thread; return the raw response body."""

        async with self._slots:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._threads, partial(read_body, function, *args, **kwargs)
                )
            except ApiException as error:
                if error.status not in (404, 409):
                    metrics.API_ERRORS.labels(verb=verb, resource=resource, code=str(error.status)).inc()
                raise

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create a Job; False when this flow's Job already exists (a restart never duplicates work).

        Raises NameTakenError when an object of another owner holds the name.
        """
        if await self._create("jobs", self.batch.create_namespaced_job, job):
            return True
        metadata = job["metadata"]
        existing = json.loads(
            await self._call(
                "get", "jobs", self.batch.read_namespaced_job, metadata["name"], metadata["namespace"]
            )
        )
        owners = {ref.get("uid") for ref in existing["metadata"].get("ownerReferences") or []}
        if metadata["ownerReferences"][0]["uid"] not in owners:
            raise NameTakenError(f"Job {metadata['name']} already exists and belongs to something else")
        return False

    async def delete_job(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                "delete",
                "jobs",
                self.batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def ensure_service(self, service: dict[str, Any]) -> None:
        """Create the Service, or bring the existing one's labels and ports up to date."""
        if await self._create("services", self.core.create_namespaced_service, service):
            return
        metadata = service["metadata"]
        patch = {"metadata": {"labels": metadata["labels"]}, "spec": {"ports": service["spec"]["ports"]}}
        await self._call(
            "patch",
            "services",
            self.core.patch_namespaced_service,
            metadata["name"],
            metadata["namespace"],
            patch,
            _content_type=MERGE_PATCH,
        )

    async def ensure_deployment(self, deployment: dict[str, Any]) -> None:
        """Create the Deployment, or roll the existing one in place to this template."""
        if await self._create("deployments", self.apps.create_namespaced_deployment, deployment):
            return
        metadata = deployment["metadata"]
        patch = {
            "metadata": {"labels": metadata["labels"], "annotations": metadata["annotations"]},
            "spec": {"replicas": deployment["spec"]["replicas"], "template": deployment["spec"]["template"]},
        }
        await self._call(
            "patch",
            "deployments",
            self.apps.patch_namespaced_deployment,
            metadata["name"],
            metadata["namespace"],
            patch,
            _content_type=MERGE_PATCH,
        )

    async def patch_flow_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._call(
            "patch",
            "dagflows/status",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    def delete_webhook_configurations(self, name: str) -> None:
        """Remove the validating and mutating webhook configurations `name`; gone already is fine."""
        for delete in (
            self.admission.delete_validating_webhook_configuration,
            self.admission.delete_mutating_webhook_configuration,
        ):
            try:
                delete(name, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if error.status != 404:
                    raise

    def peering_status(self, peering: str, namespaces: list[str]) -> list[dict[str, Any]]:
        """The peers recorded in kopf's peering object(s) `peering`: cluster-wide, or one per namespace."""
        if namespaces:
            found = [
                self._read_peering(
                    self.custom.get_namespaced_custom_object, namespace, "kopfpeerings", peering
                )
                for namespace in namespaces
            ]
        else:
            found = [
                self._read_peering(self.custom.get_cluster_custom_object, "clusterkopfpeerings", peering)
            ]
        return [status for status in found if status]

    @staticmethod
    def _read_peering(read: Callable[..., Any], *args: str) -> dict[str, Any]:
        try:
            body = read_body(read, "kopf.dev", "v1", *args)
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        status: dict[str, Any] = json.loads(body).get("status") or {}
        return status

    async def _create(self, resource: str, function: Callable[..., Any], body: dict[str, Any]) -> bool:
        try:
            await self._call("create", resource, function, body["metadata"]["namespace"], body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True


def read_body(function: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """Call the API and return the raw response body.

    Responses are not turned into client models: the operator hardly reads them. The body must
    still be read and the connection released, or every call opens a new one.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    response = function(*args, _preload_content=False, **kwargs)
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


def api_error_message(error: ApiException) -> str:
    """The API server's own words for a refused request."""
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"
