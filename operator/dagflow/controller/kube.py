"""The operator's few writes to Kubernetes, made idempotent and run off the event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import CACHE_ENTRY_PLURAL, GROUP, PLURAL, VERSION
from dagflow.controller import metrics
from dagflow.controller.queueing import (
    DEACTIVATED_ANNOTATION,
    HELD_ANNOTATION,
    JOB_UID_LABEL,
    KUEUE_GROUP,
    KUEUE_VERSIONS,
)
from dagflow.rules import naming

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
USER_AGENT = "dagflow-operator"
# (connect, read) seconds for every call: a hung API server must never hang a reconcile pass or a
# shutdown; the pass fails and is retried instead.
REQUEST_TIMEOUT = (5.0, 30.0)


APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "dagflow-operator"


class NameTakenError(Exception):
    """A child's deterministic name is held by an object this flow does not own.

    `owner_uid`/`owner_name` name the DAGFlow that controls the object, if one does; `deleting`
    says the object is on its way out already.
    """

    def __init__(
        self, kind: str, name: str, owner_name: str | None, owner_uid: str | None, deleting: bool
    ) -> None:
        self.kind, self.name = kind, name
        self.owner_name, self.owner_uid, self.deleting = owner_name, owner_uid, deleting
        owner = f"DAGFlow {owner_name} (uid {owner_uid})" if owner_name else "something else"
        super().__init__(f"{kind} {name} already exists and belongs to {owner}")


class FlowReplacedError(Exception):
    """The flow of that name is no longer the one of `uid`: deleted, and maybe made again."""

    def __init__(self, namespace: str, name: str, uid: str) -> None:
        super().__init__(f"DAGFlow {namespace}/{name} is no longer the one of uid {uid}")


def check_owner(kind: str, existing: dict[str, Any], uid: str) -> None:
    """Raise NameTakenError unless the DAGFlow of `uid` controls `existing`."""
    metadata = existing.get("metadata") or {}
    controller = next(
        (
            ref
            for ref in metadata.get("ownerReferences") or []
            if ref.get("controller") and ref.get("kind") == "DAGFlow"
        ),
        None,
    )
    if controller is not None and controller.get("uid") == uid:
        return
    raise NameTakenError(
        kind,
        str(metadata.get("name")),
        controller.get("name") if controller else None,
        controller.get("uid") if controller else None,
        metadata.get("deletionTimestamp") is not None,
    )


@dataclass(frozen=True)
class ApiGroups:
    """The API groups the operator calls, as the kubernetes client's classes (or anything with
    their methods)."""

    batch: Any
    apps: Any
    core: Any
    custom: Any
    admission: Any

    @classmethod
    def from_kubeconfig(cls, concurrency: int) -> ApiGroups:
        """The groups of the cluster the operator runs in, else of the kubeconfig."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = concurrency
        api_client = client.ApiClient(configuration)
        api_client.user_agent = USER_AGENT
        return cls(
            batch=client.BatchV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            core=client.CoreV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
            admission=client.AdmissionregistrationV1Api(api_client),
        )


class KubeClient:
    """Creates, patches and deletes the objects of flows, at most `concurrency` calls at a time.

    `apis` and `executor` default to the configured cluster and a pool of `concurrency` threads.
    """

    def __init__(
        self, concurrency: int, apis: ApiGroups | None = None, executor: Executor | None = None
    ) -> None:
        apis = apis or ApiGroups.from_kubeconfig(concurrency)
        self.batch = apis.batch
        self.apps = apis.apps
        self.core = apis.core
        self.custom = apis.custom
        self.admission = apis.admission
        self._slots = asyncio.Semaphore(concurrency)
        # The Kueue API version this cluster serves, once a call found it.
        self._kueue_version: str | None = None
        # Its own threads: asyncio's default pool has only a handful on a small machine.
        self._threads = executor or ThreadPoolExecutor(concurrency, thread_name_prefix="dagflow-api")

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

    async def create_job(self, job: dict[str, Any]) -> tuple[bool, str | None]:
        """Create a Job: whether it was made now (False: this flow's Job already exists, so a restart
        never duplicates work), and the Job's uid, by which it is deleted later.

        Raises NameTakenError when an object of another owner holds the name.
        """
        created = await self._create("jobs", self.batch.create_namespaced_job, job)
        if created is not None:
            return True, created["metadata"].get("uid")
        metadata = job["metadata"]
        existing = json.loads(
            await self._call(
                "get", "jobs", self.batch.read_namespaced_job, metadata["name"], metadata["namespace"]
            )
        )
        check_owner("Job", existing, metadata["ownerReferences"][0]["uid"])
        return False, existing["metadata"].get("uid")

    async def delete_job(
        self, namespace: str, name: str, uid: str | None, wait_for_pods: bool = False
    ) -> None:
        """Delete the Job of that uid only (another made since under the name stays); `wait_for_pods`:
        the Job stays (being deleted) until its pods are gone."""
        policy = "Foreground" if wait_for_pods else "Background"
        delete = self.batch.delete_namespaced_job
        await self._delete_exactly("jobs", delete, name, namespace, uid, propagation_policy=policy)

    async def create_config_map(self, config_map: dict[str, Any]) -> None:
        """Create a ConfigMap of a flow's. One of this flow's that exists already is kept (it was made
        from the same spec and outputs, and is immutable); one that this flow does not own raises
        NameTakenError, exactly as for a Job: whoever made it first must not feed another user's pods.
        """
        if await self._create("configmaps", self.core.create_namespaced_config_map, config_map) is not None:
            return
        metadata = config_map["metadata"]
        existing = await self._read_owned_config_map(
            metadata["namespace"], metadata["name"], metadata["ownerReferences"][0]["uid"]
        )
        if existing is None:
            raise NameTakenError("ConfigMap", metadata["name"], None, None, deleting=True)  # gone since

    async def create_claim(self, claim: dict[str, Any]) -> bool:
        """Create a run's workspace claim: whether it was made now (False: this flow's exists already).
        One this flow does not own raises NameTakenError, as for a Job: the works of one flow never
        read or write another's files."""
        if await self._create(
            "persistentvolumeclaims", self.core.create_namespaced_persistent_volume_claim, claim
        ):
            return True
        metadata = claim["metadata"]
        existing = json.loads(
            await self._call(
                "get",
                "persistentvolumeclaims",
                self.core.read_namespaced_persistent_volume_claim,
                metadata["name"],
                metadata["namespace"],
            )
        )
        check_owner("PersistentVolumeClaim", existing, metadata["ownerReferences"][0]["uid"])
        if existing["metadata"].get("deletionTimestamp"):
            # Ours, but on its way out (a run that left the history used it): wait until it is gone.
            raise NameTakenError("PersistentVolumeClaim", metadata["name"], None, None, deleting=True)
        return False

    async def delete_claim(self, namespace: str, name: str, owner_uid: str) -> None:
        """Delete the flow's (of `owner_uid`) claim of that name, if it has one: a claim of that name
        that another owns is left alone."""
        read = self.core.read_namespaced_persistent_volume_claim
        try:
            existing = json.loads(await self._call("get", "persistentvolumeclaims", read, name, namespace))
        except ApiException as error:
            if error.status == 404:
                return
            raise
        try:
            check_owner("PersistentVolumeClaim", existing, owner_uid)
        except NameTakenError:
            return
        if existing["metadata"].get("deletionTimestamp"):
            return
        delete = self.core.delete_namespaced_persistent_volume_claim
        await self._delete_exactly(
            "persistentvolumeclaims", delete, name, namespace, existing["metadata"].get("uid")
        )

    async def read_users_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """The data of a ConfigMap a user made for the operator to read (the namespace's artifact
        store); None when there is none."""
        read = self.core.read_namespaced_config_map
        try:
            found = json.loads(await self._call("get", "configmaps", read, name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {str(key): str(value) for key, value in (found.get("data") or {}).items()}

    async def read_config_map(self, namespace: str, name: str, owner_uid: str) -> dict[str, str] | None:
        """The data of the flow's ConfigMap; None when it does not exist. NameTakenError when it is
        not the flow's (of `owner_uid`), whose data is never read."""
        existing = await self._read_owned_config_map(namespace, name, owner_uid)
        return None if existing is None else dict(existing.get("data") or {})

    async def _read_owned_config_map(
        self, namespace: str, name: str, owner_uid: str
    ) -> dict[str, Any] | None:
        try:
            existing: dict[str, Any] = json.loads(
                await self._call("get", "configmaps", self.core.read_namespaced_config_map, name, namespace)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        check_owner("ConfigMap", existing, owner_uid)
        return existing

    async def delete_config_map(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete the ConfigMap of that uid only: one made since under the name is left alone."""
        await self._delete_exactly("configmaps", self.core.delete_namespaced_config_map, name, namespace, uid)

    async def delete_deployment(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete the Deployment of that uid only."""
        await self._delete_exactly(
            "deployments", self.apps.delete_namespaced_deployment, name, namespace, uid
        )

    async def delete_service(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete the Service of that uid only."""
        await self._delete_exactly("services", self.core.delete_namespaced_service, name, namespace, uid)

    async def ensure_service(self, service: dict[str, Any]) -> None:
        """Create the Service, or make the existing one of this flow exactly what it should be."""
        await self._apply_owned(
            "services", self.core.read_namespaced_service, self.core.patch_namespaced_service, service
        )

    async def ensure_deployment(self, deployment: dict[str, Any]) -> None:
        """Create the Deployment, or roll the existing one of this flow in place to this one.

        Server-side apply: what the new manifest leaves out (a GPU limit, a volume, a label) is
        removed from the object, which a merge patch would keep.
        """
        await self._apply_owned(
            "deployments",
            self.apps.read_namespaced_deployment,
            self.apps.patch_namespaced_deployment,
            deployment,
        )

    async def _apply_owned(
        self, resource: str, read: Callable[..., Any], patch: Callable[..., Any], body: dict[str, Any]
    ) -> None:
        """Server-side apply `body`, unless an object of that name exists that its flow does not own
        (NameTakenError)."""
        metadata = body["metadata"]
        try:
            existing = json.loads(
                await self._call("get", resource, read, metadata["name"], metadata["namespace"])
            )
        except ApiException as error:
            if error.status != 404:
                raise
        else:
            owner = metadata["ownerReferences"][0]
            check_owner(body["kind"], existing, owner["uid"])
            if existing["metadata"].get("deletionTimestamp"):
                # This flow's own, on its way out: made again once it is gone.
                raise NameTakenError(
                    body["kind"], metadata["name"], owner["name"], owner["uid"], deleting=True
                )
        await self._call(
            "apply",
            resource,
            patch,
            metadata["name"],
            metadata["namespace"],
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        )

    async def pod_refusal(self, namespace: str, job_uid: str) -> str | None:
        """The newest reason the Job controller gave for not creating the Job's pods, if any."""
        listing = json.loads(
            await self._call(
                "list",
                "events",
                self.core.list_namespaced_event,
                namespace,
                field_selector=f"involvedObject.uid={job_uid},reason=FailedCreate",
            )
        )
        events = listing.get("items") or []
        if not events:
            return None
        newest = max(events, key=lambda event: event.get("lastTimestamp") or event.get("eventTime") or "")
        return str(newest.get("message") or "")

    async def termination_messages_by_index(
        self, namespace: str, job_uid: str, container: str
    ) -> dict[int, str]:
        """The termination messages of `container` in the Indexed Job's succeeded pods, by completion
        index; read a page at a time, so a big Job's pods are never all in memory at once."""
        found: dict[int, str] = {}
        token: str | None = None
        while True:
            listing = await self._pods_of_job(
                namespace, job_uid, limit=LIST_PAGE_SIZE, **({"_continue": token} if token else {})
            )
            for pod in listing.get("items") or []:
                status = pod.get("status") or {}
                index = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
                if status.get("phase") != "Succeeded" or index is None:
                    continue
                for container_status in status.get("containerStatuses") or []:
                    if container_status.get("name") == container:
                        terminated = (container_status.get("state") or {}).get("terminated") or {}
                        found[int(index)] = str(terminated.get("message") or "")
            token = (listing.get("metadata") or {}).get("continue")
            if not token:
                return found

    async def failed_pods(self, namespace: str, job_uid: str, limit: int) -> list[dict[str, Any]]:
        """At most `limit` of the Job's failed pods."""
        listing = await self._pods_of_job(
            namespace, job_uid, field_selector="status.phase=Failed", limit=limit
        )
        return list(listing.get("items") or [])

    async def _pods_of_job(self, namespace: str, job_uid: str, **options: Any) -> dict[str, Any]:
        """A list of the Job's pods (a page of them, by `options`), as the API server answers it."""
        selector = f"batch.kubernetes.io/controller-uid={job_uid}"
        response = await self._call(
            "list", "pods", self.core.list_namespaced_pod, namespace, label_selector=selector, **options
        )
        listing: dict[str, Any] = json.loads(response)
        return listing

    async def pod_waiting(self, namespace: str, job_uid: str, container: str) -> str | None:
        """Why `container` of the Job's pod waits to start, as the kubelet says (`CreateContainerConfigError:
        secret "hook" not found`); None when it does not wait or there is no pod."""
        listing = await self._pods_of_job(namespace, job_uid, limit=1)
        for pod in listing.get("items") or []:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if status.get("name") == container and waiting.get("reason") not in (
                    None,
                    "ContainerCreating",
                ):
                    return f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
        return None

    async def image_id(self, namespace: str, job_uid: str, container: str) -> str | None:
        """The image the kubelet ran `container` from (its imageID) in a succeeded pod of the Job;
        None when no such pod is left or it tells none."""
        listing = await self._pods_of_job(
            namespace, job_uid, field_selector="status.phase=Succeeded", limit=1
        )
        for pod in listing.get("items") or []:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if status.get("name") == container and status.get("imageID"):
                    return str(status["imageID"])
        return None

    async def cache_entries(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The cache entries of a namespace that carry these labels (a lookup by key: never all of them)."""
        listing = json.loads(
            await self._call(
                "list",
                CACHE_ENTRY_PLURAL,
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                CACHE_ENTRY_PLURAL,
                label_selector=label_selector,
            )
        )
        items: list[dict[str, Any]] = listing.get("items") or []
        return items

    async def cache_entry_page(
        self, namespace: str, token: str | None, limit: int = 500
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a namespace's cache entries, and the token of the next (None: the last)."""
        listing = json.loads(
            await self._call(
                "list",
                CACHE_ENTRY_PLURAL,
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                CACHE_ENTRY_PLURAL,
                limit=limit,
                **({"_continue": token} if token else {}),
            )
        )
        return listing.get("items") or [], (listing.get("metadata") or {}).get("continue") or None

    async def create_cache_entry(self, entry: dict[str, Any]) -> bool:
        """Create a cache entry; False when one of its name exists already (written before)."""
        try:
            await self._call(
                "create",
                CACHE_ENTRY_PLURAL,
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                entry["metadata"]["namespace"],
                CACHE_ENTRY_PLURAL,
                entry,
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def delete_cache_entry(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete a cache entry (by uid: one written since under the name stays)."""

        def delete(name: str, namespace: str, **options: Any) -> Any:
            return self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, CACHE_ENTRY_PLURAL, name, **options
            )

        await self._delete_exactly(CACHE_ENTRY_PLURAL, delete, name, namespace, uid)

    async def termination_message(self, namespace: str, job_uid: str, container: str) -> str | None:
        """The termination message of `container` in the pod that succeeded of a Job of one
        completion (index 0); None when no such pod is left."""
        return (await self.termination_messages_by_index(namespace, job_uid, container)).get(0)

    async def workloads_of_jobs(self, namespace: str, job_uids: Sequence[str]) -> list[dict[str, Any]] | None:
        """Kueue's Workloads of these Jobs, listed by the Job uid Kueue labels them with (a few lists
        for many Jobs); None when the cluster serves no Kueue Workloads."""
        found: list[dict[str, Any]] = []
        for first in range(0, len(job_uids), WORKLOAD_UIDS_PER_LIST):
            chunk = sorted(job_uids[first : first + WORKLOAD_UIDS_PER_LIST])
            listing = await self._kueue_call(
                "list",
                self.custom.list_namespaced_custom_object,
                namespace,
                "workloads",
                label_selector=f"{JOB_UID_LABEL} in ({','.join(chunk)})",
            )
            if listing is None:
                return None
            found += listing.get("items") or []
        return found

    async def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        """Deactivate a Workload for a suspended flow (marking it so), or activate one it deactivated.

        Kueue evicts an inactive Workload and admits it again once active: the Job itself stays as
        Kueue keeps it, never suspended or unsuspended by the operator. Gone already is fine.
        """
        patch = {
            "metadata": {"annotations": {DEACTIVATED_ANNOTATION: None if active else "true"}},
            "spec": {"active": active},
        }
        await self._patch_workload(namespace, name, patch)

    async def workload(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Workload as it is now; None when it is gone (or Kueue is)."""
        return await self._kueue_get(namespace, "workloads", name)

    async def hold_workload(self, namespace: str, name: str, resource_version: str, held: bool) -> bool:
        """Hold a waiting Workload inactive behind older flows' works (marking it so), or release one
        held; only if it is unchanged since `resource_version` was read. False when it changed or went.
        """
        patch = {
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": {HELD_ANNOTATION: "true" if held else None},
            },
            "spec": {"active": not held},
        }
        return await self._patch_workload(namespace, name, patch)

    async def cluster_queue_of(self, namespace: str, local_queue: str) -> str | None:
        """The ClusterQueue a LocalQueue feeds; None when the LocalQueue (or Kueue) is missing."""
        found = await self._kueue_get(namespace, "localqueues", local_queue)
        cluster_queue = ((found or {}).get("spec") or {}).get("clusterQueue")
        return str(cluster_queue) if cluster_queue else None

    async def cluster_queue(self, name: str) -> dict[str, Any] | None:
        """A ClusterQueue, quota and reservations; None when it (or Kueue) is missing."""
        return await self._kueue_get(None, "clusterqueues", name)

    async def workload_priority(self, priority_class: str) -> int | None:
        """The value of a WorkloadPriorityClass; None when there is no such class."""
        found = await self._kueue_get(None, "workloadpriorityclasses", priority_class)
        value = (found or {}).get("value")
        return value if isinstance(value, int) else None

    async def _kueue_get(self, namespace: str | None, plural: str, name: str) -> dict[str, Any] | None:
        """One of Kueue's objects (`namespace` None: cluster-scoped); None when it or Kueue is missing."""
        function = (
            self.custom.get_cluster_custom_object
            if namespace is None
            else self.custom.get_namespaced_custom_object
        )
        try:
            return await self._kueue_call("get", function, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def _patch_workload(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """Merge-patch a Workload; False when it is gone, or changed since a resourceVersion the patch
        names."""
        try:
            await self._kueue_call(
                "patch",
                self.custom.patch_namespaced_custom_object,
                namespace,
                "workloads",
                name,
                patch,
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def _kueue_call(
        self,
        verb: str,
        function: Callable[..., Any],
        namespace: str | None,
        plural: str,
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Call Kueue's API in the newest version the cluster serves; None when it serves none.
        `namespace` None: a cluster-scoped resource."""
        versions = (self._kueue_version,) if self._kueue_version else KUEUE_VERSIONS
        where = () if namespace is None else (namespace,)
        for version in versions:
            try:
                answer: dict[str, Any] = json.loads(
                    await self._call(
                        verb, plural, function, KUEUE_GROUP, version, *where, plural, *args, **kwargs
                    )
                )
            except ApiException as error:
                if error.status == 404 and not names_an_object(error):
                    if self._kueue_version:  # uninstalled since: look again next time
                        self._kueue_version = None
                    continue
                raise
            self._kueue_version = version
            return answer
        return None

    async def replace_flow_status(
        self, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the flow's whole status; the flow as the API server returned it.

        A JSON patch, not a merge patch: a merge patch deletes every key whose value is null, even
        inside a list (a work's output that is JSON null would vanish), while a JSON patch keeps the
        values exactly. Its `test` of the uid makes the API server refuse (FlowReplacedError) to
        write this status into another flow made meanwhile under the same name.
        """
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            response = await self._call(
                "patch",
                "dagflows/status",
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                patch,
                _content_type=JSON_PATCH,
            )
        except ApiException as error:
            # The API server's answer to a failed `test` is a bare 422, as for an invalid status:
            # the flow itself tells which it was.
            if error.status == 422 and await self._flow_uid(namespace, name) != uid:
                raise FlowReplacedError(namespace, name, uid) from None
            raise
        flow: dict[str, Any] = json.loads(response)
        return flow

    async def listed_uids(self, resource: str, namespace: str) -> set[str]:
        """The uids of the flows (`dagflows`) or of the operator's children of one kind (`jobs`,
        `deployments`, `services`, `configmaps`) in a namespace, as a list answers now."""
        if resource == PLURAL:
            listing: Callable[..., Any] = partial(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
            options: dict[str, Any] = {}
        else:
            listing = partial(
                {
                    "jobs": self.batch.list_namespaced_job,
                    "deployments": self.apps.list_namespaced_deployment,
                    "services": self.core.list_namespaced_service,
                    "configmaps": self.core.list_namespaced_config_map,
                }[resource],
                namespace,
            )
            options = {"label_selector": f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY_VALUE}"}
        uids: set[str] = set()
        token: str | None = None
        while True:
            page = json.loads(
                await self._call(
                    "list",
                    resource,
                    listing,
                    limit=LIST_PAGE_SIZE,
                    **({"_continue": token} if token else {}),
                    **options,
                )
            )
            uids.update(str(item["metadata"]["uid"]) for item in page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return uids

    async def _flow_uid(self, namespace: str, name: str) -> str | None:
        """The uid of the flow of that name now; None when there is none. (Listed by name: the
        operator may list and watch flows, nothing more.)"""
        listing = json.loads(
            await self._call(
                "list",
                "dagflows",
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
            )
        )
        items = listing.get("items") or []
        return str(items[0]["metadata"].get("uid")) if items else None

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

    async def _delete_exactly(
        self,
        resource: str,
        function: Callable[..., Any],
        name: str,
        namespace: str,
        uid: str | None,
        propagation_policy: str | None = None,
    ) -> None:
        """Delete the object of `uid` (a precondition the API server checks); gone already, or
        replaced by another object of the name (409), is fine. `propagation_policy` goes into the
        body with the precondition: the API server reads the query's options only without a body."""
        options: dict[str, Any] = {}
        if uid:
            options["preconditions"] = {"uid": uid}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        try:
            await self._call("delete", resource, function, name, namespace, body=options or None)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    async def _create(
        self, resource: str, function: Callable[..., Any], body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create; the object as made, or None when one of that name exists already (409)."""
        try:
            made: dict[str, Any] = json.loads(
                await self._call("create", resource, function, body["metadata"]["namespace"], body)
            )
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return made


LIST_PAGE_SIZE = 500
# Job uids per list of Workloads: a set-based label selector of this many stays a short URL.
WORKLOAD_UIDS_PER_LIST = 40


def names_an_object(error: ApiException) -> bool:
    """Whether a 404 is about an object (it names it) rather than a resource the server lacks."""
    try:
        details = json.loads(error.body or "").get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(details.get("name"))


COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


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
