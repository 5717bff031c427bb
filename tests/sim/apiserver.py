"""An in-memory model of the Kubernetes API server, with the semantics the operator relies on.

Objects are plain dicts as the API server serves them as JSON. Every write gets a new
resourceVersion (one counter, as etcd's revision), a uid and creationTimestamp on create, a
generation that moves with the spec, and an entry in the watch log of its resource. Errors are
`ApiException`s with the status code, reason and message the real server gives (each one the
operator relies on is checked against a real API server by tests/sim/test_contract.py).

A watch from a resourceVersion answers the events after it, or 410 Gone once `compact()` has
dropped what lies between (the API server keeps a window of each resource's events; what fell out
of it is lost to a watch, which must list again).

Not modelled: admission (webhooks, schema validation, defaulting beyond what is named here),
strategic merge patch, field managers other than one applier, RBAC, quotas, namespaces' lifecycle.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import CACHE_ENTRY_PLURAL, GROUP, PLURAL

# etcd refuses a request past 1.5 MiB (its --max-request-bytes default), so no object is larger.
MAX_OBJECT_BYTES = 1536 * 1024
OPERATOR = "operator"
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)

# The group-qualified resource as the API server names it in its messages.
QUALIFIED = {
    "jobs": "jobs.batch",
    "deployments": "deployments.apps",
    "services": "services",
    "configmaps": "configmaps",
    "pods": "pods",
    "events": "events",
    PLURAL: f"{PLURAL}.{GROUP}",
    CACHE_ENTRY_PLURAL: f"{CACHE_ENTRY_PLURAL}.{GROUP}",
}
KINDS = {
    "jobs": "Job",
    "deployments": "Deployment",
    "services": "Service",
    "configmaps": "ConfigMap",
    "pods": "Pod",
    "events": "Event",
    PLURAL: "DAGFlow",
    # A custom resource's kind is qualified by its group in the API server's messages.
    CACHE_ENTRY_PLURAL: f"DAGFlowCacheEntry.{GROUP}",
}
# Resources whose spec changes move metadata.generation (a Deployment's annotations move it too).
GENERATED = frozenset({"jobs", "deployments", PLURAL})


class Clock:
    """The simulation's time: it moves only when the scheduler moves it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def advance(self, seconds: float) -> None:
        self.seconds += seconds

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.seconds)

    def timestamp(self) -> str:
        return self.wall().replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(
    code: int, reason: str | None, message: str, details: Mapping[str, Any] | None = None
) -> ApiException:
    """An ApiException as the kubernetes client raises it for a refused request (a storage error
    comes without reason and details)."""
    error = ApiException(status=code, reason=reason)
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    status["message"] = message
    if reason is not None:
        status.update(reason=reason, details=dict(details or {}))
    status["code"] = code
    error.body = json.dumps(status)
    return error


def not_found(resource: str, name: str) -> ApiException:
    return api_error(404, "NotFound", f'{QUALIFIED[resource]} "{name}" not found', {"name": name})


def already_exists(resource: str, name: str) -> ApiException:
    return api_error(409, "AlreadyExists", f'{QUALIFIED[resource]} "{name}" already exists', {"name": name})


def uid_conflict(resource: str, name: str, wanted: str, actual: str) -> ApiException:
    return api_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {KINDS[resource]} "{name}": the UID in the precondition'
        f" ({wanted}) does not match the UID in record ({actual}). The object might have been deleted"
        " and then recreated",
        {"name": name},
    )


def too_large() -> ApiException:
    # etcd's refusal as the API server passes it on: a 500 without reason.
    return api_error(500, None, "etcdserver: request is too large")


# A ConfigMap's values together, as the API server validates them.
MAX_CONFIG_MAP_BYTES = 1024 * 1024


def config_map_too_long(name: str) -> ApiException:
    return api_error(
        422,
        "Invalid",
        f'ConfigMap "{name}" is invalid: []: Too long: may not be more than {MAX_CONFIG_MAP_BYTES} bytes',
        {"name": name, "kind": "ConfigMap"},
    )


def immutable_config_map(name: str) -> ApiException:
    return api_error(
        422,
        "Invalid",
        f'ConfigMap "{name}" is invalid: data: Forbidden: field is immutable when `immutable` is set',
        {"name": name, "kind": "ConfigMap"},
    )


def too_old(resource_version: int, kept_after: int) -> ApiException:
    # The watch cache's answer: the Status comes without details. `kept_after` is the newest
    # resourceVersion a watch can still start from and miss nothing (the oldest event kept, less one).
    error = api_error(410, "Expired", f"too old resource version: {resource_version} ({kept_after})")
    status = json.loads(error.body)
    status.pop("details", None)
    error.body = json.dumps(status)
    return error


def json_patch_test_failed() -> ApiException:
    # The real server names neither the operation that failed nor its path.
    return api_error(422, "Invalid", "the server rejected our request due to an error in our request")


class WriteTimeout(urllib3.exceptions.ReadTimeoutError):
    """A write the server applied whose answer never came: what the client sees after 30 s."""

    def __init__(self) -> None:
        super().__init__(None, "", "Read timed out. (read timeout=30.0)")  # type: ignore[arg-type]


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch as the API server applies it: a null member deletes the key, anything not
    an object replaces, and null members of the objects a patch brings are dropped too, inside lists
    as well (evanphx/json-patch's pruning, beyond RFC 7386)."""
    if not isinstance(patch, dict):
        return without_nulls(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def without_nulls(value: Any) -> Any:
    """`value` without null members in its objects (null items of lists stay)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return copy.deepcopy(value)


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 JSON patch (add, remove, replace, test) on a copy of `document`; values are kept
    exactly, JSON null included. A failed test raises the API server's 422."""
    result = copy.deepcopy(document)
    for operation in operations:
        parts = _pointer(operation["path"])
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
            if parent is None:
                raise api_error(
                    422, "Invalid", f"the server rejected our request: missing path {operation['path']}"
                )
        last = parts[-1]
        op = operation["op"]
        if op == "test":
            current = parent.get(last) if isinstance(parent, dict) else parent[int(last)]
            if current != operation["value"]:
                raise json_patch_test_failed()
        elif op in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(operation["value"]))
            else:
                parent[last] = copy.deepcopy(operation["value"])
        elif op == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                parent.pop(last)
    return result


def unchanged(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether a write would store what is stored already (whatever resourceVersion it names)."""

    def stored(obj: Mapping[str, Any]) -> dict[str, Any]:
        metadata = dict(obj.get("metadata") or {})
        metadata.pop("resourceVersion", None)
        return {**obj, "metadata": metadata}

    return stored(before) == stored(after)


def object_size(obj: Mapping[str, Any]) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def config_map_size(obj: Mapping[str, Any]) -> int:
    return sum(
        len(str(value).encode())
        for part in ("data", "binaryData")
        for value in (obj.get(part) or {}).values()
    )


def owner_uids(obj: Mapping[str, Any]) -> list[str]:
    return [str(ref.get("uid")) for ref in (obj.get("metadata") or {}).get("ownerReferences") or []]


def blocks_deletion_of(owner_uid: str, obj: Mapping[str, Any]) -> bool:
    """Whether `obj` holds back the foreground deletion of its owner `owner_uid`: only a reference
    with blockOwnerDeletion does; the collector deletes the other dependents without waiting."""
    return any(
        str(ref.get("uid")) == owner_uid and bool(ref.get("blockOwnerDeletion"))
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def matches_labels(obj: Mapping[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def matches_fields(obj: Mapping[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        path, _, value = term.partition("=")
        current: Any = obj
        for part in path.strip().split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if str(current) != value.strip():
            return False
    return True


@dataclass(frozen=True)
class Write:
    """One write as the API server applied it, for the invariants."""

    actor: str
    verb: str
    resource: str
    namespace: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class Faults:
    """Faults the scheduler arms for the operator's next calls: each write the operator makes takes
    the next entry (None: answered as usual)."""

    writes: list[str | None] = field(default_factory=list)

    def next_write(self) -> str | None:
        return self.writes.pop(0) if self.writes else None


Key = tuple[str, str, str]


class ApiServer:
    """The objects of the simulated cluster and the API that reads and writes them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.objects: dict[Key, dict[str, Any]] = {}
        # Each resource's keys in order, made again when one is added or removed.
        self._sorted_keys: dict[str, list[Key]] = {}
        self.revision = 0
        self.uids = 0
        self.logs: dict[str, list[tuple[str, dict[str, Any]]]] = {resource: [] for resource in KINDS}
        # When each event of a log happened (simulated seconds), in the same order.
        self.log_times: dict[str, list[float]] = {resource: [] for resource in KINDS}
        self.writes: list[Write] = []
        self.actor = "user"
        self.faults = Faults()
        self.calls = 0
        # The newest resourceVersion whose events `compact()` dropped from every watch's reach.
        self.compacted = 0

    # -- storage ---------------------------------------------------------------------------------

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    def new_uid(self) -> str:
        self.uids += 1
        return f"00000000-0000-4000-8000-{self.uids:012d}"

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def items(self, resource: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """The objects of one resource in name order, as they were when the iteration began."""
        keys = self._sorted_keys.get(resource)
        if keys is None:
            keys = self._sorted_keys[resource] = sorted(key for key in self.objects if key[0] == resource)
        snapshot = [(key, self.objects[key]) for key in keys if namespace is None or key[1] == namespace]
        for _, obj in snapshot:
            yield obj

    def uid_exists(self, uid: str) -> bool:
        return any(obj["metadata"]["uid"] == uid for obj in self.objects.values())

    def _store(self, resource: str, verb: str, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        if resource == "configmaps" and config_map_size(after) > MAX_CONFIG_MAP_BYTES:
            raise config_map_too_long(after["metadata"]["name"])
        if object_size(after) > MAX_OBJECT_BYTES:
            raise too_large()
        metadata = after["metadata"]
        if before is not None and unchanged(before, after):
            # The API server skips a write that changes nothing: no new resourceVersion, no watch
            # event. It was still asked, so the invariants see the request.
            metadata["resourceVersion"] = before["metadata"]["resourceVersion"]
        else:
            metadata["resourceVersion"] = self._next_revision()
            key = (resource, metadata["namespace"], metadata["name"])
            if key not in self.objects:
                self._sorted_keys.pop(resource, None)
            self.objects[key] = after
            self.logs[resource].append(("ADDED" if before is None else "MODIFIED", copy.deepcopy(after)))
            self.log_times[resource].append(self.clock.seconds)
        self.writes.append(
            Write(
                self.actor,
                verb,
                resource,
                metadata["namespace"],
                metadata["name"],
                before,
                copy.deepcopy(after),
            )
        )

    def _remove(self, resource: str, obj: dict[str, Any], verb: str = "delete") -> None:
        metadata = obj["metadata"]
        del self.objects[(resource, metadata["namespace"], metadata["name"])]
        self._sorted_keys.pop(resource, None)
        self._next_revision()
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self.logs[resource].append(("DELETED", gone))
        self.log_times[resource].append(self.clock.seconds)
        self.writes.append(
            Write(self.actor, verb, resource, metadata["namespace"], metadata["name"], obj, None)
        )

    # -- the verbs -------------------------------------------------------------------------------

    def create(self, resource: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        metadata = obj.setdefault("metadata", {})
        name = metadata["name"]
        if (resource, namespace, name) in self.objects:
            raise already_exists(resource, name)
        metadata.update(namespace=namespace, uid=self.new_uid(), creationTimestamp=self.clock.timestamp())
        for transient in ("resourceVersion", "deletionTimestamp", "generation"):
            metadata.pop(transient, None)
        if resource in GENERATED:
            metadata["generation"] = 1
        if resource == "services":
            obj.setdefault("spec", {})["clusterIP"] = f"10.0.{self.uids // 250}.{self.uids % 250}"
        self._store(resource, "create", None, obj)
        return copy.deepcopy(obj)

    def read(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        found = self.get(resource, namespace, name)
        if found is None:
            raise not_found(resource, name)
        return found

    def replace(self, resource: str, obj: dict[str, Any], verb: str = "update") -> dict[str, Any]:
        """Store a changed object (its metadata.name and namespace unchanged): generation moves with
        its spec, an immutable ConfigMap keeps its data."""
        metadata = obj["metadata"]
        before = self.objects.get((resource, metadata["namespace"], metadata["name"]))
        if before is None:
            raise not_found(resource, metadata["name"])
        if (
            resource == "configmaps"
            and before.get("immutable")
            and (obj.get("data") != before.get("data") or obj.get("binaryData") != before.get("binaryData"))
        ):
            raise immutable_config_map(metadata["name"])
        for fixed in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if fixed in before["metadata"]:
                metadata[fixed] = before["metadata"][fixed]
            else:
                metadata.pop(fixed, None)
        if resource in GENERATED and (
            obj.get("spec") != before.get("spec")
            # A Deployment's annotations are copied to its ReplicaSets, so they move it too.
            or (
                resource == "deployments"
                and metadata.get("annotations") != before["metadata"].get("annotations")
            )
        ):
            metadata["generation"] = int(before["metadata"].get("generation") or 1) + 1
        if before["metadata"].get("deletionTimestamp") and not metadata.get("finalizers"):
            self._remove(resource, before, verb)
            return copy.deepcopy(obj)
        self._store(resource, verb, copy.deepcopy(before), obj)
        return copy.deepcopy(obj)

    def merge_patch(
        self, resource: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        current = self.read(resource, namespace, name)
        return self.replace(resource, merge_patch(current, patch), "patch")

    def patch_status(
        self, resource: str, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch of the status subresource: only the status may change."""
        current = self.read(resource, namespace, name)
        patched = json_patch(current, operations)
        current["status"] = patched.get("status")
        return self.replace(resource, current, "patch-status")

    def apply(self, resource: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply by the one field manager that applies: whatever it applied before and
        leaves out now is removed (labels, annotations, owner references, the spec)."""
        current = self.get(resource, namespace, name)
        if current is None:
            return self.create(resource, namespace, body)
        applied = copy.deepcopy(dict(body))
        metadata = current["metadata"]
        for part in ("labels", "annotations", "ownerReferences"):
            if part in applied.get("metadata", {}):
                metadata[part] = applied["metadata"][part]
            else:
                metadata.pop(part, None)
        spec = applied.get("spec") or {}
        if resource == "services" and "clusterIP" in (current.get("spec") or {}):
            spec = {**spec, "clusterIP": current["spec"]["clusterIP"]}
        current["spec"] = spec
        return self.replace(resource, current, "apply")

    def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        propagation: str = "Background",
        uid: str | None = None,
    ) -> dict[str, Any]:
        current = self.objects.get((resource, namespace, name))
        if current is None:
            raise not_found(resource, name)
        if uid is not None and current["metadata"]["uid"] != uid:
            raise uid_conflict(resource, name, uid, current["metadata"]["uid"])
        metadata = current["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if propagation == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if propagation == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if not finalizers:
            self._remove(resource, current)
            return copy.deepcopy(current)
        if metadata.get("deletionTimestamp") and finalizers == metadata.get("finalizers"):
            return copy.deepcopy(current)
        changed = copy.deepcopy(current)
        changed["metadata"]["finalizers"] = finalizers
        changed["metadata"].setdefault("deletionTimestamp", self.clock.timestamp())
        self._store(resource, "delete", copy.deepcopy(current), changed)
        return copy.deepcopy(changed)

    def list(
        self,
        resource: str,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        found = [
            copy.deepcopy(obj)
            for obj in self.items(resource, namespace)
            if matches_labels(obj, label_selector) and matches_fields(obj, field_selector)
        ]
        start = int(continue_token or 0)
        end = start + limit if limit else len(found)
        metadata: dict[str, Any] = {"resourceVersion": str(self.revision)}
        if end < len(found):
            metadata["continue"] = str(end)
        return {"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": found[start:end]}

    def compact(self) -> None:
        """The server lets go of every event so far: a watch from any resourceVersion up to now
        answers 410 Gone, as one does once its events have left the API server's window."""
        self.compacted = self.revision

    def watch(
        self,
        resource: str,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The events a watch from `resource_version` gets, in order: ADDED, MODIFIED, DELETED with
        the object as it was then (a DELETED one carries the deletion's resourceVersion). Under a
        label selector an object that comes to match is ADDED, and one that stops matching is
        DELETED, with its content from before but the change's resourceVersion. 410 `Expired` when
        the events after `resource_version` are no longer kept."""
        since = int(resource_version)
        if since < self.compacted:
            raise too_old(since, self.compacted)
        events: list[dict[str, Any]] = []
        previous: dict[tuple[str, str], dict[str, Any] | None] = {}
        for kind, obj in self.logs[resource]:
            metadata = obj["metadata"]
            key = (metadata["namespace"], metadata["name"])
            before = previous.get(key)
            previous[key] = None if kind == "DELETED" else obj
            if int(metadata["resourceVersion"]) <= since:
                continue
            if namespace is not None and metadata["namespace"] != namespace:
                continue
            matched = before is not None and matches_labels(before, label_selector)
            matches = matches_labels(obj, label_selector)
            if kind == "DELETED":
                if matches:
                    events.append({"type": "DELETED", "object": copy.deepcopy(obj)})
            elif matches:
                events.append({"type": "MODIFIED" if matched else "ADDED", "object": copy.deepcopy(obj)})
            elif matched:
                assert before is not None
                gone = copy.deepcopy(before)
                gone["metadata"]["resourceVersion"] = metadata["resourceVersion"]
                events.append({"type": "DELETED", "object": gone})
        return events

    # -- the garbage collector -------------------------------------------------------------------

    def collect_garbage(self) -> int:
        """One sweep of the garbage collector: objects whose owners are all gone are deleted (in
        the background), and objects being deleted in the foreground have their dependents deleted
        and go once those that block their deletion (blockOwnerDeletion) have, and objects deleted
        with the Orphan policy let their dependents go and then go; the number of objects deleted
        or released."""
        done = 0
        live = {obj["metadata"]["uid"] for obj in self.objects.values()}
        for (resource, _, _), obj in sorted(self.objects.items()):
            owners = owner_uids(obj)
            if (
                owners
                and not any(owner in live for owner in owners)
                and not obj["metadata"].get("deletionTimestamp")
            ):
                self.delete(resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
                done += 1
        for (resource, _, _), obj in sorted(self.objects.items()):
            if ORPHAN in (obj["metadata"].get("finalizers") or []):
                done += self._orphan_dependents(resource, obj)
        live = {obj["metadata"]["uid"] for obj in self.objects.values()}
        for (resource, _, _), obj in sorted(self.objects.items()):
            metadata = obj["metadata"]
            if FOREGROUND not in (metadata.get("finalizers") or []):
                continue
            dependents = [
                (kind, other)
                for (kind, _, _), other in sorted(self.objects.items())
                if metadata["uid"] in owner_uids(other)
            ]
            for kind, dependent in dependents:
                if not dependent["metadata"].get("deletionTimestamp"):
                    self.delete(kind, dependent["metadata"]["namespace"], dependent["metadata"]["name"])
                    done += 1
            if (
                not any(blocks_deletion_of(metadata["uid"], other) for other in self.objects.values())
                and (resource, metadata["namespace"], metadata["name"]) in self.objects
            ):
                released = copy.deepcopy(obj)
                released["metadata"]["finalizers"] = [
                    name for name in metadata.get("finalizers") or [] if name != FOREGROUND
                ]
                self.replace(resource, released, "finalize")
                done += 1
        del live
        return done

    def _orphan_dependents(self, resource: str, owner: dict[str, Any]) -> int:
        """An owner deleted with the Orphan policy: its dependents lose their reference to it and
        stay, then it loses the `orphan` finalizer (and goes, unless other finalizers hold it)."""
        uid = owner["metadata"]["uid"]
        for (kind, _, _), other in sorted(self.objects.items()):
            if uid in owner_uids(other):
                released = copy.deepcopy(other)
                references = [
                    ref for ref in other["metadata"]["ownerReferences"] if str(ref.get("uid")) != uid
                ]
                if references:
                    released["metadata"]["ownerReferences"] = references
                else:
                    released["metadata"].pop("ownerReferences")
                self.replace(kind, released, "orphan")
        finalized = copy.deepcopy(owner)
        finalized["metadata"]["finalizers"] = [
            name for name in owner["metadata"]["finalizers"] if name != ORPHAN
        ]
        self.replace(resource, finalized, "finalize")
        return 1

    def garbage(self) -> int:
        """How many objects the garbage collector still has to act on."""
        live = {obj["metadata"]["uid"] for obj in self.objects.values()}
        count = 0
        for obj in self.objects.values():
            owners = owner_uids(obj)
            orphan = bool(owners) and not any(owner in live for owner in owners)
            finalizers = obj["metadata"].get("finalizers") or []
            if orphan or FOREGROUND in finalizers or ORPHAN in finalizers:
                count += 1
        return count


class Response:
    """What the kubernetes client returns with `_preload_content=False`."""

    def __init__(self, obj: Any) -> None:
        self.data = json.dumps(obj).encode()

    def release_conn(self) -> None:
        return None


class OperatorApi:
    """Calls as the kubernetes client's classes make them, answered by the model; the faults armed
    in `server.faults` strike the operator's writes."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server

    def _read(self, function: Callable[[], Any]) -> Response:
        self.server.calls += 1
        return Response(function())

    def _list(
        self,
        resource: str,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        _continue: str | None = None,
        **_: Any,
    ) -> Response:
        return self._read(
            lambda: self.server.list(resource, namespace, label_selector, field_selector, limit, _continue)
        )

    def _write(self, function: Callable[[], Any]) -> Response:
        self.server.calls += 1
        fault = self.server.faults.next_write()
        if fault == "lost":
            raise WriteTimeout()  # never reached the server
        previous, self.server.actor = self.server.actor, OPERATOR
        try:
            result = function()
        finally:
            self.server.actor = previous
        if fault == "timeout":
            raise WriteTimeout()  # applied, but the answer never came
        return Response(result)


class BatchApi(OperatorApi):
    def create_namespaced_job(self, namespace: str, body: Mapping[str, Any], **_: Any) -> Response:
        return self._write(lambda: self.server.create("jobs", namespace, body))

    def read_namespaced_job(self, name: str, namespace: str, **_: Any) -> Response:
        return self._read(lambda: self.server.read("jobs", namespace, name))

    def delete_namespaced_job(
        self, name: str, namespace: str, propagation_policy: str | None = None, body: Any = None, **_: Any
    ) -> Response:
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        # With a body, the API server reads the options from it alone, not from the query; with no
        # policy at all, batch/v1 keeps its old default and orphans the Job's pods.
        policy = (body.get("propagationPolicy") if body else propagation_policy) or "Orphan"
        return self._write(lambda: self.server.delete("jobs", namespace, name, policy, uid))

    def list_namespaced_job(self, namespace: str, **options: Any) -> Response:
        return self._list("jobs", namespace, **options)


class AppsApi(OperatorApi):
    def list_namespaced_deployment(self, namespace: str, **options: Any) -> Response:
        return self._list("deployments", namespace, **options)

    def read_namespaced_deployment(self, name: str, namespace: str, **_: Any) -> Response:
        return self._read(lambda: self.server.read("deployments", namespace, name))

    def patch_namespaced_deployment(
        self, name: str, namespace: str, body: Mapping[str, Any], **kwargs: Any
    ) -> Response:
        assert kwargs.get("_content_type") == "application/apply-patch+yaml", "only apply is modelled"
        return self._write(lambda: self.server.apply("deployments", namespace, name, body))

    def delete_namespaced_deployment(self, name: str, namespace: str, body: Any = None, **_: Any) -> Response:
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        return self._write(lambda: self.server.delete("deployments", namespace, name, uid=uid))


class CoreApi(OperatorApi):
    def list_namespaced_service(self, namespace: str, **options: Any) -> Response:
        return self._list("services", namespace, **options)

    def list_namespaced_config_map(self, namespace: str, **options: Any) -> Response:
        return self._list("configmaps", namespace, **options)

    def create_namespaced_config_map(self, namespace: str, body: Mapping[str, Any], **_: Any) -> Response:
        return self._write(lambda: self.server.create("configmaps", namespace, body))

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Response:
        return self._read(lambda: self.server.read("configmaps", namespace, name))

    def delete_namespaced_config_map(self, name: str, namespace: str, body: Any = None, **_: Any) -> Response:
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        return self._write(lambda: self.server.delete("configmaps", namespace, name, uid=uid))

    def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> Response:
        return self._read(lambda: self.server.read("services", namespace, name))

    def patch_namespaced_service(
        self, name: str, namespace: str, body: Mapping[str, Any], **kwargs: Any
    ) -> Response:
        assert kwargs.get("_content_type") == "application/apply-patch+yaml", "only apply is modelled"
        return self._write(lambda: self.server.apply("services", namespace, name, body))

    def delete_namespaced_service(self, name: str, namespace: str, body: Any = None, **_: Any) -> Response:
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        return self._write(lambda: self.server.delete("services", namespace, name, uid=uid))

    def list_namespaced_pod(
        self,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        _continue: str | None = None,
        **_: Any,
    ) -> Response:
        return self._read(
            lambda: self.server.list("pods", namespace, label_selector, field_selector, limit, _continue)
        )

    def list_namespaced_event(self, namespace: str, field_selector: str | None = None, **_: Any) -> Response:
        return self._read(lambda: self.server.list("events", namespace, field_selector=field_selector))


class CustomApi(OperatorApi):
    def list_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        **options: Any,
    ) -> Response:
        return self._list(plural, namespace, **options)

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Mapping[str, Any], **_: Any
    ) -> Response:
        assert plural == CACHE_ENTRY_PLURAL, "the operator creates no other custom object"
        return self._write(lambda: self.server.create(plural, namespace, body))

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any = None, **_: Any
    ) -> Response:
        assert plural == CACHE_ENTRY_PLURAL, "the operator deletes no other custom object"
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        return self._write(lambda: self.server.delete(plural, namespace, name, uid=uid))

    def patch_namespaced_custom_object_status(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: Any,
        **kwargs: Any,
    ) -> Response:
        content_type = kwargs.get("_content_type")
        if content_type == "application/json-patch+json":
            return self._write(lambda: self.server.patch_status(plural, namespace, name, body))
        assert content_type in (None, "application/merge-patch+json"), content_type

        def merge() -> dict[str, Any]:
            current = self.server.read(plural, namespace, name)
            current["status"] = merge_patch(current, {"status": body.get("status")}).get("status")
            return self.server.replace(plural, current, "patch-status")

        return self._write(merge)
