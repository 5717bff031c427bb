"""The API server model of the simulation against a real API server (the local cluster): for each
semantic the operator relies on, the same requests go to both, and both must answer alike (status
code, reason, message, and the object that results), so the model cannot drift into fiction."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import API_VERSION, CACHE_ENTRY_KIND, CACHE_ENTRY_PLURAL, GROUP, KIND, PLURAL, VERSION
from dagflow.controller.builders import LAUNCHER_EXIT_CODE
from tests.kube import REPO_ROOT, apply_crds, fresh_namespace, wait_for
from tests.sim.apiserver import ApiServer, BatchApi, Clock, merge_patch
from tests.sim.controllers import READY_ANNOTATION, DeploymentController, JobController

pytestmark = pytest.mark.cluster

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The operator's field manager (operator/dagflow/controller/kube.py), applying with force.
FIELD_MANAGER = "dagflow-operator"
PATHS = {
    "configmaps": "/api/v1",
    "services": "/api/v1",
    "jobs": "/apis/batch/v1",
    "deployments": "/apis/apps/v1",
    PLURAL: f"/apis/{GROUP}/{VERSION}",
    CACHE_ENTRY_PLURAL: f"/apis/{GROUP}/{VERSION}",
}
# How long the real garbage collector may take; it finds a new CRD's kind by a discovery it
# repeats every 30 s.
GC_TIMEOUT = 120.0


class Real:
    """The requests, made to the local cluster's API server."""

    def __init__(self, namespace: str) -> None:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.batch = client.BatchV1Api()
        self.client = client.ApiClient()

    def _request(
        self,
        method: str,
        resource: str,
        name: str | None = None,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        subresource: str | None = None,
    ) -> Any:
        path = f"{PATHS[resource]}/namespaces/{self.namespace}/{resource}"
        path += "".join(f"/{part}" for part in (name, subresource) if part)
        request = self.client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*request)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        return _json(self._request("POST", resource, body=body))

    def read(self, resource: str, name: str) -> dict[str, Any]:
        return _json(self._request("GET", resource, name))

    def merge_patch(self, resource: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(self._request("PATCH", resource, name, patch, content_type=MERGE_PATCH))

    def list_names(self, resource: str, label_selector: str) -> list[str]:
        listing = _json(self._request("GET", resource, query={"labelSelector": label_selector}))
        return sorted(item["metadata"]["name"] for item in listing["items"])

    def merge_patch_status(self, resource: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(
            self._request("PATCH", resource, name, patch, content_type=MERGE_PATCH, subresource="status")
        )

    def apply(self, resource: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return _json(self._request("PATCH", resource, name, body, query, content_type=APPLY_PATCH))

    def delete(
        self, resource: str, name: str, propagation: str | None = None, uid: str | None = None
    ) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if propagation:
            options["propagationPolicy"] = propagation
        if uid:
            options["preconditions"] = {"uid": uid}
        return _json(self._request("DELETE", resource, name, options or None))

    def delete_job_as_the_operator(
        self, name: str, query_policy: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The operator's call (kube.py's _delete_exactly), with a propagation policy in the query too."""
        return _json(
            self.batch.delete_namespaced_job(
                name,
                self.namespace,
                propagation_policy=query_policy,
                body=body,  # type: ignore[arg-type]  # the client sends a dict as it is
                _preload_content=False,
            )
        )

    def watch(
        self, resource: str, resource_version: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """The events of a watch from `resource_version` until the server ends it a second later;
        an ERROR event raises its Status as the client does."""
        query = {"watch": "true", "resourceVersion": resource_version, "timeoutSeconds": "1"}
        if label_selector:
            query["labelSelector"] = label_selector
        response = self._request("GET", resource, query=query)
        events = [json.loads(line) for line in response.data.decode().splitlines() if line.strip()]
        for event in events:
            if event["type"] == "ERROR":
                error = ApiException(status=event["object"].get("code"), reason=event["object"].get("reason"))
                error.body = json.dumps(event["object"])
                raise error
        return events

    def gc(self, done: Callable[[], Any], what: str) -> None:
        """The real collector runs by itself: wait until it has done what `done` checks."""
        wait_for(done, timeout=GC_TIMEOUT, what=what)

    def settle(self) -> None:
        """Leave the real controllers time to act, when what is checked next is that they did not."""
        time.sleep(3)

    def wait_for_default_service_account(self) -> None:
        """Pods are refused until the namespace's default ServiceAccount is made; its controller
        may come to a new namespace late (a 404 until then, not an error)."""

        def made() -> bool:
            try:
                self.core.read_namespaced_service_account("default", self.namespace)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        wait_for(made, what="the namespace's default ServiceAccount")

    def run_job(self, body: dict[str, Any], seconds_before_it_ends: float = 0) -> dict[str, Any]:
        """Create the Job and wait until the real Job controller has ended it (kwok's pods do as
        their annotations say)."""
        self.wait_for_default_service_account()
        name = body["metadata"]["name"]
        self.create("jobs", body)

        def ended() -> dict[str, Any] | None:
            found = self.read("jobs", name)
            conditions = (found.get("status") or {}).get("conditions") or []
            return found if any(c["type"] in ("Complete", "Failed") for c in conditions) else None

        ended_job: dict[str, Any] = wait_for(ended, timeout=90, what=f"Job {name} to end")
        return ended_job

    def roll_out(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Deployment and wait until the real Deployment controller says its rollout no
        longer progresses (kwok's pods become ready or not as their annotations say)."""
        self.wait_for_default_service_account()
        name = body["metadata"]["name"]
        self.create("deployments", body)

        def stalled() -> dict[str, Any] | None:
            found = self.read("deployments", name)
            return found if progressing(found) == "False" else None

        stalled_deployment: dict[str, Any] = wait_for(stalled, timeout=90, what=f"Deployment {name} to stall")
        return stalled_deployment

    def old_resource_version(self) -> str:
        """A resourceVersion at least 75 s old: the API server keeps every event younger than that
        (its watch cache grows instead), so nothing else can fall out of its window. The default
        namespace's CA ConfigMap is made when the cluster starts."""
        metadata = self.read_in("default", "configmaps", "kube-root-ca.crt")["metadata"]
        made = datetime.fromisoformat(metadata["creationTimestamp"].replace("Z", "+00:00"))
        age = time.time() - made.timestamp()
        if age < 80:
            time.sleep(80 - age)
        return str(metadata["resourceVersion"])

    def read_in(self, namespace: str, resource: str, name: str) -> dict[str, Any]:
        return _json(Real(namespace)._request("GET", resource, name))

    def expire(self, resource_version: str) -> None:
        """Write ConfigMap events until the API server's window of them no longer reaches back to
        `resource_version` (it drops the oldest once full of events older than 75 s)."""
        self.create(
            "configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn"}, "data": {}}
        )
        for written in range(1, 5001):
            self.merge_patch("configmaps", "churn", {"data": {"n": str(written)}})
            if written % 50 == 0:
                try:
                    self.watch("configmaps", resource_version)
                except ApiException as error:
                    if error.status == 410:
                        return
        raise AssertionError(f"resourceVersion {resource_version} never left the API server's window")

    def create_config_map(self, body: dict[str, Any]) -> dict[str, Any]:
        return _json(self.core.create_namespaced_config_map(self.namespace, body, _preload_content=False))

    def read_config_map(self, name: str) -> dict[str, Any]:
        return _json(self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False))

    def merge_patch_config_map(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(
            self.core.patch_namespaced_config_map(
                name,
                self.namespace,
                patch,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    def delete_config_map(self, name: str, uid: str | None) -> None:
        body = {"preconditions": {"uid": uid}} if uid else None
        self.core.delete_namespaced_config_map(name, self.namespace, body=body, _preload_content=False)

    def create_flow(self, body: dict[str, Any]) -> dict[str, Any]:
        return _json(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, _preload_content=False
            )
        )

    def merge_patch_flow_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                patch,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    def patch_flow_status(self, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        return _json(
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                operations,
                _content_type=JSON_PATCH,
                _preload_content=False,
            )
        )


class Model:
    """The same requests, made to the model."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.server = ApiServer(Clock())

    def create_config_map(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.server.create("configmaps", self.namespace, body)

    def read_config_map(self, name: str) -> dict[str, Any]:
        return self.server.read("configmaps", self.namespace, name)

    def merge_patch_config_map(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.server.merge_patch("configmaps", self.namespace, name, patch)

    def delete_config_map(self, name: str, uid: str | None) -> None:
        self.server.delete("configmaps", self.namespace, name, uid=uid)

    def create_flow(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.server.create(PLURAL, self.namespace, body)

    def patch_flow_status(self, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        return self.server.patch_status(PLURAL, self.namespace, name, operations)

    def merge_patch_flow_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.merge_patch_status(PLURAL, name, patch)

    def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.server.create(resource, self.namespace, body)

    def read(self, resource: str, name: str) -> dict[str, Any]:
        return self.server.read(resource, self.namespace, name)

    def list_names(self, resource: str, label_selector: str) -> list[str]:
        listing = self.server.list(resource, self.namespace, label_selector)
        return sorted(item["metadata"]["name"] for item in listing["items"])

    def merge_patch(self, resource: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.server.merge_patch(resource, self.namespace, name, patch)

    def merge_patch_status(self, resource: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        current = self.server.read(resource, self.namespace, name)
        current["status"] = merge_patch(current, patch).get("status")
        return self.server.replace(resource, current)

    def apply(self, resource: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.server.apply(resource, self.namespace, name, body)

    def delete(
        self, resource: str, name: str, propagation: str | None = None, uid: str | None = None
    ) -> dict[str, Any]:
        return self.server.delete(resource, self.namespace, name, propagation or "Background", uid)

    def delete_job_as_the_operator(
        self, name: str, query_policy: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return _json(
            BatchApi(self.server).delete_namespaced_job(
                name, self.namespace, propagation_policy=query_policy, body=body
            )
        )

    def watch(
        self, resource: str, resource_version: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.server.watch(resource, self.namespace, resource_version, label_selector)

    def gc(self, done: Callable[[], Any], what: str) -> None:
        self.server.collect_garbage()
        assert done(), f"one sweep of the garbage collector did not get to {what}"

    def settle(self) -> None:
        self.server.collect_garbage()

    def run_job(self, body: dict[str, Any], seconds_before_it_ends: float = 0) -> dict[str, Any]:
        """Create the Job and step the model's Job controller (a second of simulated time a step,
        `seconds_before_it_ends` at once when its pods have started: pods slower than that) until
        it has ended the Job."""
        name = body["metadata"]["name"]
        self.create("jobs", body)
        controller, rng = JobController(self.server), random.Random(0)
        slept = False
        for _ in range(200):
            controller.step(rng)
            found = self.read("jobs", name)
            conditions = (found.get("status") or {}).get("conditions") or []
            if any(c["type"] in ("Complete", "Failed") for c in conditions):
                return found
            started = bool((found.get("status") or {}).get("startTime"))
            self.server.clock.advance(seconds_before_it_ends if started and not slept else 1)
            slept = slept or started
        raise AssertionError(f"the model's Job controller never ended Job {name}")

    def roll_out(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Deployment and step the model's Deployment controller (a second of simulated
        time a step, no pods lost meanwhile) until its rollout no longer progresses."""
        name = body["metadata"]["name"]
        self.create("deployments", body)
        controller, rng = DeploymentController(self.server), random.Random(0)
        for _ in range(200):
            controller.step(rng, disrupt=False)
            found = self.read("deployments", name)
            if progressing(found) == "False":
                return found
            self.server.clock.advance(1)
        raise AssertionError(f"the model's Deployment controller never stalled Deployment {name}")

    def old_resource_version(self) -> str:
        return str(self.create("configmaps", config_map("old"))["metadata"]["resourceVersion"])

    def expire(self, resource_version: str) -> None:
        self.create("configmaps", config_map("churn", data={}))
        self.server.compact()


Api = Real | Model


def _json(response: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(response.data)
    return found


UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def answer(request: Callable[[], Any]) -> tuple[int, str, str] | Any:
    """The error (code, reason, message with uids masked) a request gets, or what it returns."""
    try:
        return request()
    except ApiException as error:
        body = json.loads(error.body or "{}")
        return error.status, body.get("reason"), UID.sub("<uid>", str(body.get("message")))


def config_map(name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}


def create_over_existing(api: Api) -> Any:
    api.create_config_map(config_map("taken", data={"a": "1"}))
    return answer(lambda: api.create_config_map(config_map("taken", data={"a": "2"})))


def read_missing(api: Api) -> Any:
    return answer(lambda: api.read_config_map("missing"))


def delete_with_another_uid(api: Api) -> Any:
    api.create_config_map(config_map("held", data={"a": "1"}))
    refused = answer(lambda: api.delete_config_map("held", str(uuid.uuid4())))
    still_there = api.read_config_map("held")["data"]
    return refused, still_there


def delete_with_its_uid(api: Api) -> Any:
    uid = api.create_config_map(config_map("mine", data={"a": "1"}))["metadata"]["uid"]
    api.delete_config_map("mine", uid)
    return answer(lambda: api.read_config_map("mine"))


def merge_patch_null_deletes(api: Api) -> Any:
    api.create_config_map(config_map("merged", data={"a": "1", "b": "2"}))
    return api.merge_patch_config_map("merged", {"data": {"a": None, "c": "3"}})["data"]


def immutable_config_map_keeps_its_data(api: Api) -> Any:
    api.create_config_map(config_map("frozen", data={"a": "1"}, immutable=True))
    return answer(lambda: api.merge_patch_config_map("frozen", {"data": {"a": "2"}}))


def config_map_past_its_limit(api: Api) -> Any:
    return answer(lambda: api.create_config_map(config_map("huge", data={"a": "x" * (1024 * 1024 + 1)})))


def object_past_the_size_limit(api: Api) -> Any:
    # Under the API server's 3 MiB request limit, over etcd's 1.5 MiB: refused by etcd.
    uid = api.create_flow(flow("big"))["metadata"]["uid"]
    outputs = {"x": "y" * 1600 * 1024}
    status = {"phase": "Running", "works": [{"name": "a", "phase": "Succeeded", "outputs": outputs}]}
    operations = [
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/status", "value": status},
    ]
    return answer(lambda: api.patch_flow_status("big", operations))


def cache_entry(name: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": CACHE_ENTRY_KIND,
        "metadata": {"name": name, "labels": {"dagflow.dev/cache-key": key[:32]}},
        "spec": {"key": key, "work": "w", "flow": "f", "run": 1, "createdAt": "2030-01-01T00:00:00Z"},
    }


def cache_entries_by_key_label(api: Api) -> Any:
    """What the cache relies on: entries found by their key's label only, a second create of a name
    refused (409), a delete of another uid refused."""
    first = api.create(CACHE_ENTRY_PLURAL, cache_entry("a", "1" * 64))
    api.create(CACHE_ENTRY_PLURAL, cache_entry("b", "1" * 64))
    api.create(CACHE_ENTRY_PLURAL, cache_entry("c", "2" * 64))
    again = answer(lambda: api.create(CACHE_ENTRY_PLURAL, cache_entry("a", "3" * 64)))
    api.delete(CACHE_ENTRY_PLURAL, "a", uid=first["metadata"]["uid"])
    stale = answer(lambda: api.delete(CACHE_ENTRY_PLURAL, "b", uid=first["metadata"]["uid"]))
    return again, stale, api.list_names(CACHE_ENTRY_PLURAL, "dagflow.dev/cache-key=" + "1" * 32)


def flow(name: str) -> dict[str, Any]:
    work = {"name": "a", "container": {"image": "example/ml:1"}, "outputs": [{"name": "x"}]}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": {"works": [work]}}


def json_patch_keeps_null(api: Api) -> Any:
    uid = api.create_flow(flow("kept"))["metadata"]["uid"]
    status = {"phase": "Running", "works": [{"name": "a", "phase": "Succeeded", "outputs": {"x": None}}]}
    written = api.patch_flow_status(
        "kept",
        [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": status},
        ],
    )
    return written["status"]["works"][0]["outputs"], written["metadata"]["generation"]


def merge_patch_drops_null_even_in_a_list(api: Api) -> Any:
    api.create_flow(flow("merged"))
    status = {
        "phase": "Running",
        "works": [{"name": "a", "phase": "Succeeded", "outputs": {"x": None, "y": 1}}],
    }
    written = api.merge_patch_flow_status("merged", {"status": status})
    return written["status"]["works"][0]["outputs"]


def json_patch_test_of_another_uid(api: Api) -> Any:
    api.create_flow(flow("replaced"))
    operations = [
        {"op": "test", "path": "/metadata/uid", "value": str(uuid.uuid4())},
        {"op": "add", "path": "/status", "value": {"phase": "Running"}},
    ]
    return answer(lambda: api.patch_flow_status("replaced", operations))


TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def job(name: str, **spec: Any) -> dict[str, Any]:
    """A suspended Job: the Job controller makes no pods for it, so nothing but the test writes it
    except its status."""
    container = {"name": "main", "image": "example/ml:1"}
    template = {"spec": {"restartPolicy": "Never", "containers": [container]}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"example.dev/job": name}},
        "spec": {"suspend": True, "template": template, **spec},
    }


def made(obj: dict[str, Any]) -> dict[str, Any]:
    """What the server sets on create, as forms, not values (uids and times differ)."""
    metadata = obj["metadata"]
    return {
        "uid": bool(UID.fullmatch(metadata.get("uid", ""))),
        "creationTimestamp": bool(TIMESTAMP.fullmatch(metadata.get("creationTimestamp", ""))),
        "resourceVersion": str(metadata.get("resourceVersion", "")).isdigit(),
        "generation": metadata.get("generation"),
        "deletionTimestamp": metadata.get("deletionTimestamp"),
    }


def create_sets_uid_and_creation_timestamp(api: Api) -> Any:
    # What a body brings for these is not kept: the server makes its own.
    planted = {"uid": str(uuid.uuid4()), "creationTimestamp": "2001-01-01T00:00:00Z"}
    found = []
    for resource, body in (
        ("configmaps", config_map("made", data={"a": "1"})),
        (PLURAL, flow("made")),
        ("jobs", job("made")),
    ):
        body["metadata"].update(planted)
        created = api.create(resource, body)
        metadata = created["metadata"]
        found.append(
            (
                resource,
                made(created),
                metadata["uid"] != planted["uid"],
                metadata["creationTimestamp"] != planted["creationTimestamp"],
                made(api.read(resource, "made")) == made(created),
            )
        )
    return found


def resource_version_moves_on_every_write_only(api: Api) -> Any:
    """Each write that changes the object moves its resourceVersion (up); one that changes nothing
    leaves it where it was (no write reaches etcd, no watch event)."""
    versions = [api.create("configmaps", config_map("moved", data={"a": "1"}))["metadata"]["resourceVersion"]]
    for patch in (
        {"data": {"a": "2"}},
        {"data": {"a": "2"}},
        {"metadata": {"labels": {"example.dev/x": "1"}}},
        {"metadata": {"labels": {"example.dev/x": "1"}}},
        {"metadata": {"annotations": {"example.dev/y": "1"}}},
    ):
        versions.append(api.merge_patch("configmaps", "moved", patch)["metadata"]["resourceVersion"])
    api.create(PLURAL, flow("moved"))
    status = {"status": {"phase": "Running"}}
    versions.append(api.merge_patch_status(PLURAL, "moved", status)["metadata"]["resourceVersion"])
    versions.append(api.merge_patch_status(PLURAL, "moved", status)["metadata"]["resourceVersion"])
    return [
        int(later) > int(earlier) if later != earlier else "same"
        for earlier, later in itertools.pairwise(versions)
    ]


def generation_moves_with_the_spec_only(api: Api) -> Any:
    """metadata.generation of a DAGFlow, a Job and a Deployment: 1 on create, up by one with each
    change of the spec, never with labels or the status subresource, nor with annotations but for
    a Deployment's (the API server copies those to its ReplicaSets)."""
    flow_body = flow("gen")
    api.create(PLURAL, flow_body)
    works = [*flow_body["spec"]["works"], {"name": "b", "container": {"image": "example/ml:2"}}]
    flows = [
        api.merge_patch(PLURAL, "gen", {"metadata": {"labels": {"example.dev/x": "1"}}}),
        api.merge_patch(PLURAL, "gen", {"metadata": {"annotations": {"example.dev/y": "1"}}}),
        api.merge_patch_status(PLURAL, "gen", {"status": {"phase": "Running"}}),
        api.merge_patch(PLURAL, "gen", {"spec": {"works": works}}),
        api.merge_patch(PLURAL, "gen", {"spec": {"works": works}}),
        api.merge_patch(PLURAL, "gen", {"spec": {"parallelism": 2}}),
    ]
    api.create("jobs", job("gen", parallelism=1))
    jobs = [
        api.merge_patch("jobs", "gen", {"metadata": {"labels": {"example.dev/x": "1"}}}),
        api.merge_patch("jobs", "gen", {"metadata": {"annotations": {"example.dev/y": "1"}}}),
        api.merge_patch("jobs", "gen", {"spec": {"parallelism": 2}}),
        api.merge_patch("jobs", "gen", {"spec": {"activeDeadlineSeconds": 600}}),
    ]
    api.create("deployments", deployment("gen", replicas=0))
    deployments = [
        api.merge_patch("deployments", "gen", {"metadata": {"labels": {"example.dev/x": "1"}}}),
        api.merge_patch("deployments", "gen", {"metadata": {"annotations": {"example.dev/y": "1"}}}),
        api.merge_patch("deployments", "gen", {"spec": {"replicas": 1}}),
        api.merge_patch("deployments", "gen", {"spec": {"replicas": 1}}),
    ]
    return [[obj["metadata"]["generation"] for obj in written] for written in (flows, jobs, deployments)]


SELECTED = {"example.dev/app": "served"}


def deployment(
    name: str,
    replicas: int = 1,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
    env: list[dict[str, str]] | None = None,
    gpu: bool = False,
    volume: bool = False,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment as the operator builds one (controller/builders.py), with the parts a later
    manifest may leave out."""
    container: dict[str, Any] = {"name": "main", "image": "example/ml:1"}
    pod: dict[str, Any] = {"containers": [container]}
    if env:
        container["env"] = env
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    if volume:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        pod["volumes"] = [{"name": "data", "emptyDir": {}}]
    metadata: dict[str, Any] = {"name": name, "labels": {**SELECTED, **(labels or {})}}
    if annotations:
        metadata["annotations"] = annotations
    if owners:
        metadata["ownerReferences"] = owners
    template_annotations = {"annotations": pod_annotations} if pod_annotations else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": SELECTED},
            "template": {"metadata": {"labels": SELECTED, **template_annotations}, "spec": pod},
        },
    }


def owner_of(flow_body: dict[str, Any]) -> dict[str, Any]:
    metadata = flow_body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def applied(obj: dict[str, Any], owner_uid: str) -> dict[str, Any]:
    """The parts of a Deployment the operator's manifests set (the Deployment controller adds its
    own annotation, the API server its defaults)."""
    metadata = obj["metadata"]
    pod = obj["spec"]["template"]["spec"]
    container = pod["containers"][0]
    return {
        "labels": metadata.get("labels"),
        "annotations": {
            key: value
            for key, value in (metadata.get("annotations") or {}).items()
            if key.startswith("example.dev/")
        },
        "owners": [(ref["name"], ref["uid"] == owner_uid) for ref in metadata.get("ownerReferences") or []],
        "replicas": obj["spec"]["replicas"],
        "env": container.get("env"),
        "resources": container.get("resources") or {},
        "mounts": container.get("volumeMounts"),
        "volumes": pod.get("volumes"),
        "generation": metadata["generation"],
    }


def apply_removes_what_it_leaves_out(api: Api) -> Any:
    """Server-side apply by the operator's one field manager: the object is what it applied last;
    a label, an annotation, an env var, a GPU limit, a volume or an owner it applied before and
    leaves out now is gone. Applying the same again changes nothing."""
    owner = owner_of(api.create(PLURAL, flow("owner")))
    full = deployment(
        "applied",
        labels={"example.dev/run": "1", "example.dev/extra": "x"},
        annotations={"example.dev/generation": "1", "example.dev/rolled-from": "0"},
        owners=[owner],
        env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        gpu=True,
        volume=True,
    )
    lean = deployment(
        "applied",
        replicas=2,
        labels={"example.dev/run": "2"},
        annotations={"example.dev/generation": "2"},
        owners=[owner],
        env=[{"name": "A", "value": "1"}],
    )
    first = api.apply("deployments", "applied", full)
    second = api.apply("deployments", "applied", lean)
    again = api.apply("deployments", "applied", lean)
    orphaned = api.apply(
        "deployments", "applied", {**lean, "metadata": {**lean["metadata"], "ownerReferences": []}}
    )
    return [applied(obj, owner["uid"]) for obj in (first, second, again, orphaned)]


def service(name: str, port: int, selector: dict[str, str]) -> dict[str, Any]:
    """A Service as the operator builds one (controller/builders.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"example.dev/run": str(port)}},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def apply_keeps_a_services_cluster_ip(api: Api) -> Any:
    """The Service the operator applies again: its ports and selector are what it applied last, its
    clusterIP (the API server's) stays, and the same manifest again changes nothing."""
    first = api.apply("services", "served", service("served", 8080, {**SELECTED, "example.dev/run": "1"}))
    second = api.apply("services", "served", service("served", 9090, SELECTED))
    again = api.apply("services", "served", service("served", 9090, SELECTED))
    return [
        (obj["metadata"]["labels"], obj["spec"]["selector"], obj["spec"]["ports"])
        for obj in (first, second, again)
    ], (
        second["spec"]["clusterIP"] == first["spec"]["clusterIP"],
        again["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"],
    )


HOLD = "example.dev/hold"


def dependent(name: str, owner: dict[str, Any], blocking: bool = True, held: bool = False) -> dict[str, Any]:
    body = config_map(name, data={"a": "1"})
    body["metadata"]["ownerReferences"] = [{**owner, "blockOwnerDeletion": blocking}]
    if held:
        # Our own finalizer keeps the dependent, once deleted, until we let go: a state that stays.
        body["metadata"]["finalizers"] = [HOLD]
    return body


def state(api: Api, resource: str, name: str) -> Any:
    """What is left of an object: being deleted or not, its finalizers; or the 404."""
    found = answer(lambda: api.read(resource, name))
    if isinstance(found, tuple):
        return found
    metadata = found["metadata"]
    return {"deleting": "deletionTimestamp" in metadata, "finalizers": metadata.get("finalizers")}


def gone(api: Api, resource: str, name: str) -> bool:
    return isinstance(state(api, resource, name), tuple)


def background_deletion_leaves_dependents_to_the_collector(api: Api) -> Any:
    """Background deletion: the owner is gone at once; the collector deletes its dependents later
    (whether or not their references block the owner's deletion)."""
    owner = owner_of(api.create(PLURAL, flow("owner")))
    api.create("configmaps", dependent("blocking", owner))
    api.create("configmaps", dependent("free", owner, blocking=False))
    api.delete(PLURAL, "owner", "Background")
    right_after = state(api, PLURAL, "owner")
    api.gc(lambda: gone(api, "configmaps", "blocking") and gone(api, "configmaps", "free"), "the dependents")
    return right_after, state(api, "configmaps", "blocking"), state(api, "configmaps", "free")


def foreground_deletion_waits_for_blocking_dependents(api: Api) -> Any:
    """Foreground deletion: the owner stays, with a deletionTimestamp and the foregroundDeletion
    finalizer, while the collector deletes its dependents; it goes once no dependent whose
    reference has blockOwnerDeletion is left (a dependent without it is deleted, not waited for)."""
    owner = owner_of(api.create(PLURAL, flow("owner")))
    api.create("configmaps", dependent("blocking", owner, held=True))
    api.create("configmaps", dependent("free", owner, blocking=False, held=True))
    api.create("configmaps", dependent("plain", owner))
    answered = api.delete(PLURAL, "owner", "Foreground")
    steps: list[Any] = [
        {
            "deleting": "deletionTimestamp" in answered["metadata"],
            "finalizers": answered["metadata"]["finalizers"],
        },
        state(api, PLURAL, "owner"),
    ]

    def dependents_deleted() -> bool:
        return (
            gone(api, "configmaps", "plain")
            and state(api, "configmaps", "blocking") == {"deleting": True, "finalizers": [HOLD]}
            and state(api, "configmaps", "free") == {"deleting": True, "finalizers": [HOLD]}
        )

    api.gc(dependents_deleted, "the dependents to be deleted")
    api.settle()
    steps.append([state(api, kind, name) for kind, name in ((PLURAL, "owner"), ("configmaps", "blocking"))])
    # The dependent that blocks lets go; the one that does not is still there, being deleted.
    api.merge_patch("configmaps", "blocking", {"metadata": {"finalizers": None}})
    api.gc(lambda: gone(api, PLURAL, "owner"), "the owner to go")
    steps.append([state(api, kind, name) for kind, name in ((PLURAL, "owner"), ("configmaps", "free"))])
    api.merge_patch("configmaps", "free", {"metadata": {"finalizers": None}})
    steps.append(state(api, "configmaps", "free"))
    return steps


def orphan_deletion_keeps_the_dependents(api: Api) -> Any:
    """Orphan deletion: the owner stays, with a deletionTimestamp and the orphan finalizer, until
    the collector has taken its reference out of each dependent; the dependents stay."""
    owner = api.create("configmaps", config_map("owner"))["metadata"]
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["uid"]}
    api.create("configmaps", dependent("kept", reference))
    answered = api.delete("configmaps", "owner", "Orphan")
    api.gc(lambda: gone(api, "configmaps", "owner"), "the owner to go")
    kept = api.read("configmaps", "kept")
    return answered["metadata"]["finalizers"], "ownerReferences" in kept["metadata"], kept.get("data")


def a_second_delete_changes_nothing(api: Api) -> Any:
    """Deleting again an object already being deleted (held by a finalizer) answers it as it is."""
    api.create("configmaps", {**config_map("twice"), "metadata": {"name": "twice", "finalizers": [HOLD]}})
    first = api.delete("configmaps", "twice")
    second = api.delete("configmaps", "twice")
    api.merge_patch("configmaps", "twice", {"metadata": {"finalizers": None}})
    return (
        first["metadata"]["finalizers"],
        second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"],
        state(api, "configmaps", "twice"),
    )


def delete_options_in_the_body_win_over_the_query(api: Api) -> Any:
    """The operator deletes with a body (the uid precondition): the API server then takes the
    propagation policy from the body alone, and a query's policy is ignored."""
    found = []
    for name, body_policy in (("query", None), ("body", "Foreground")):
        body = job(name)
        body["metadata"]["finalizers"] = [HOLD]
        uid = api.create("jobs", body)["metadata"]["uid"]
        options: dict[str, Any] = {"preconditions": {"uid": uid}}
        if body_policy:
            options["propagationPolicy"] = body_policy
        answered = api.delete_job_as_the_operator(name, "Foreground", options)
        found.append(answered["metadata"]["finalizers"])
        api.merge_patch("jobs", name, {"metadata": {"finalizers": None}})
    return found


def watch_from_a_kept_version(api: Api) -> Any:
    """A watch from a resourceVersion gets every later event in order; with a label selector, an
    object that stops matching comes as DELETED (its content from before, the change's
    resourceVersion) and one that comes to match as ADDED."""
    selected = {"example.dev/watched": "yes"}
    start = api.create("configmaps", config_map("before", data={"a": "0"}))["metadata"]["resourceVersion"]
    versions = {start: "start"}

    def write(label: str, written: dict[str, Any]) -> None:
        versions[written["metadata"]["resourceVersion"]] = label

    write(
        "created",
        api.create(
            "configmaps", {**config_map("w", data={"a": "1"}), "metadata": {"name": "w", "labels": selected}}
        ),
    )
    write("changed", api.merge_patch("configmaps", "w", {"data": {"a": "2"}}))
    write(
        "unlabelled", api.merge_patch("configmaps", "w", {"metadata": {"labels": None}, "data": {"a": "3"}})
    )
    write("hidden", api.merge_patch("configmaps", "w", {"data": {"a": "4"}}))
    write("relabelled", api.merge_patch("configmaps", "w", {"metadata": {"labels": selected}}))
    uid = api.read("configmaps", "w")["metadata"]["uid"]
    api.delete("configmaps", "w", uid=uid)
    after = api.watch("configmaps", start)
    deleted_at = [event for event in after if event["object"]["metadata"]["name"] == "w"][-1]["object"][
        "metadata"
    ]["resourceVersion"]
    versions[deleted_at] = "deleted"

    def seen(events: list[dict[str, Any]]) -> list[Any]:
        return [
            (
                event["type"],
                event["object"]["metadata"]["name"],
                event["object"]["data"],
                event["object"]["metadata"].get("labels"),
                versions.get(event["object"]["metadata"]["resourceVersion"]),
            )
            for event in events
            # The namespace's CA ConfigMap comes whenever its publisher gets to it: not ours.
            if event["object"]["metadata"]["name"] == "w"
        ]

    label_selector = ",".join(f"{key}={value}" for key, value in selected.items())
    return seen(after), seen(api.watch("configmaps", start, label_selector))


NUMBERS = re.compile(r"too old resource version: (\d+) \((\d+)\)")


def watch_from_an_expired_version(api: Api) -> Any:
    """A watch from a resourceVersion whose later events the server no longer keeps: 410 Expired,
    naming that version and the oldest one a watch can still start from. The real server's window
    is its watch cache (etcd's compaction is beneath it), which drops events only once full of
    events older than 75 s; the model drops them all at `compact()`."""
    old = api.old_resource_version()
    api.expire(old)
    refused = answer(lambda: api.watch("configmaps", old))
    assert isinstance(refused, tuple), refused
    code, reason, message = refused
    numbers = NUMBERS.fullmatch(message)
    assert numbers, message
    asked, kept_after = (int(number) for number in numbers.groups())
    return (
        code,
        reason,
        NUMBERS.sub("too old resource version: <asked> (<kept>)", message),
        asked == int(old),
        kept_after > asked,
    )


def indexed_job(name: str, completions: int, outcome: str, **spec: Any) -> dict[str, Any]:
    """An Indexed Job whose pods do as `outcome` says, in the model (controllers.py's annotation)
    and on kwok's nodes (stages.yaml's): succeed, fail (exit code 1), end as the launcher does
    when it cannot launch (its exit code), or run for a minute."""
    annotations = {
        "succeed": {"sim.dagflow.dev/outcome": "succeed"},
        "fail": {"sim.dagflow.dev/outcome": "fail", "sim.dagflow.dev/exit-code": "1"},
        "launch-fail": {
            "sim.dagflow.dev/outcome": "launch-fail",
            "sim.dagflow.dev/exit-code": str(LAUNCHER_EXIT_CODE),
        },
        "slow": {"sim.dagflow.dev/outcome": "succeed", "sim.dagflow.dev/duration": "60s"},
    }[outcome]
    template = {
        "metadata": {"annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example/ml:1"}]},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            "template": template,
            **spec,
        },
    }


def ending(found: dict[str, Any]) -> Any:
    """How the Job controller ended a Job: its Complete or Failed condition (type, reason,
    message) and the indexes it counted."""
    status = found.get("status") or {}
    conditions = [
        (condition["type"], condition.get("reason"), condition.get("message"))
        for condition in status.get("conditions") or []
        if condition["type"] in ("Complete", "Failed")
    ]
    return conditions, status.get("completedIndexes"), status.get("failedIndexes")


def job_completes(api: Api) -> Any:
    return ending(api.run_job(indexed_job("done", 3, "succeed")))


def job_fails_by_its_failed_indexes(api: Api) -> Any:
    return ending(api.run_job(indexed_job("failed", 3, "fail", backoffLimitPerIndex=0)))


def job_fails_past_its_deadline(api: Api) -> Any:
    return ending(
        api.run_job(indexed_job("late", 2, "slow", activeDeadlineSeconds=3), seconds_before_it_ends=5)
    )


def job_fails_past_its_max_failed_indexes(api: Api) -> Any:
    """Both indexes fail, one more than `maxFailedIndexes` allows: that ends the Job before it
    would end by its failed indexes (listed as "0,1": the controller writes no range of two)."""
    return ending(api.run_job(indexed_job("too-many", 2, "fail", backoffLimitPerIndex=0, maxFailedIndexes=1)))


def launch_failure_fails_its_index_at_once(api: Api) -> Any:
    """A matrix Job's pod failure policy (controller/builders.py): the launcher's exit code fails
    the index at once, with retries left (one pod, not three), and the Job by its failed index."""
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "FailIndex",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [LAUNCHER_EXIT_CODE]},
            },
        ]
    }
    found = api.run_job(
        indexed_job("unlaunched", 1, "launch-fail", backoffLimitPerIndex=2, podFailurePolicy=policy)
    )
    return ending(found), found["status"].get("failed")


def progressing(found: dict[str, Any]) -> str | None:
    """The status of a Deployment's Progressing condition."""
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == "Progressing"), None)


def rollout_stalls_past_its_progress_deadline(api: Api) -> Any:
    """A Deployment whose pods never become ready: past its progressDeadlineSeconds its rollout is
    no longer progressing, and it is not available. The conditions' type, status and reason (their
    messages name the ReplicaSet, which the model does not make; their times differ)."""
    body = deployment("stuck", pod_annotations={READY_ANNOTATION: "false"})
    body["spec"]["progressDeadlineSeconds"] = 5
    found = api.roll_out(body)
    return sorted(
        (condition["type"], condition["status"], condition.get("reason"))
        for condition in found["status"]["conditions"]
    )


SEMANTICS = [
    cache_entries_by_key_label,
    create_sets_uid_and_creation_timestamp,
    resource_version_moves_on_every_write_only,
    generation_moves_with_the_spec_only,
    apply_removes_what_it_leaves_out,
    apply_keeps_a_services_cluster_ip,
    background_deletion_leaves_dependents_to_the_collector,
    foreground_deletion_waits_for_blocking_dependents,
    orphan_deletion_keeps_the_dependents,
    a_second_delete_changes_nothing,
    delete_options_in_the_body_win_over_the_query,
    watch_from_a_kept_version,
    watch_from_an_expired_version,
    create_over_existing,
    read_missing,
    delete_with_another_uid,
    delete_with_its_uid,
    merge_patch_null_deletes,
    immutable_config_map_keeps_its_data,
    config_map_past_its_limit,
    object_past_the_size_limit,
    json_patch_keeps_null,
    merge_patch_drops_null_even_in_a_list,
    json_patch_test_of_another_uid,
]


# The outward behaviour of the Job and Deployment controllers that tests/sim/controllers.py plays.
CONTROLLER_SEMANTICS = [
    cache_entries_by_key_label,
    job_completes,
    job_fails_by_its_failed_indexes,
    job_fails_past_its_deadline,
    job_fails_past_its_max_failed_indexes,
    launch_failure_fails_its_index_at_once,
    rollout_stalls_past_its_progress_deadline,
]


@pytest.fixture(scope="module")
def crds() -> None:
    apply_crds(REPO_ROOT / "crds")


@pytest.fixture
def namespace(crds: None) -> Iterator[str]:
    with fresh_namespace("sim-contract") as name:
        yield name


@pytest.mark.parametrize("semantic", SEMANTICS + CONTROLLER_SEMANTICS, ids=lambda semantic: semantic.__name__)
def test_the_model_answers_as_the_api_server(semantic: Callable[[Api], Any], namespace: str) -> None:
    real = semantic(Real(namespace))
    modelled = semantic(Model(namespace))
    assert modelled == real
