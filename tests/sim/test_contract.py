"""The API server model of the simulation against a real API server (the local cluster): for each
semantic the operator relies on, the same requests go to both, and both must answer alike (status
code, reason, message, and the object that results), so the model cannot drift into fiction."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import API_VERSION, GROUP, KIND, PLURAL, VERSION
from tests.kube import REPO_ROOT, apply_crds, fresh_namespace
from tests.sim.apiserver import ApiServer, Clock, merge_patch

pytestmark = pytest.mark.cluster

JSON_PATCH = "application/json-patch+json"


class Real:
    """The requests, made to the local cluster's API server."""

    def __init__(self, namespace: str) -> None:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()

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
        current = self.server.read(PLURAL, self.namespace, name)
        current["status"] = merge_patch(current, patch).get("status")
        return self.server.replace(PLURAL, current)


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


SEMANTICS = [
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


@pytest.fixture(scope="module")
def crds() -> None:
    apply_crds(REPO_ROOT / "crds")


@pytest.fixture
def namespace(crds: None) -> Iterator[str]:
    with fresh_namespace("sim-contract") as name:
        yield name


@pytest.mark.parametrize("semantic", SEMANTICS, ids=lambda semantic: semantic.__name__)
def test_the_model_answers_as_the_api_server(semantic: Callable[[Api], Any], namespace: str) -> None:
    real = semantic(Real(namespace))
    modelled = semantic(Model(namespace))
    assert modelled == real
