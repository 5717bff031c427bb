"""The generated CRD and the conversion of upstream Kubernetes schemas into it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dagflow.api import crd, k8s_schemas
from dagflow.api.k8s_schemas import QUANTITY_PATTERN, SchemaConversionError, structural_schemas

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_CRD = REPO_ROOT / "crds" / "dagflow.dev_dagflows.yaml"

REF = "#/components/schemas/"


def ref(name: str, **siblings: Any) -> dict[str, Any]:
    """An upstream-style reference: wrapped in allOf, with siblings beside it."""
    return {"allOf": [{"$ref": REF + name}], **siblings}


# A small hand-written document in the shape of `kubectl get --raw /openapi/v3/api/v1`.
FRAGMENT: dict[str, Any] = {
    "openapi": "3.0.0",
    "info": {"title": "Kubernetes", "version": "v1.36.3"},
    "components": {
        "schemas": {
            "io.k8s.api.core.v1.Container": {
                "description": "A single application container that you want to run within a pod.",
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "default": "", "description": "Name of the container."},
                    "image": {"type": "string", "description": "Container image name."},
                    "imagePullPolicy": {
                        "type": "string",
                        "enum": ["Always", "IfNotPresent", "Never"],
                        "description": "Image pull policy.",
                    },
                    "ports": {
                        "type": "array",
                        "items": ref("io.k8s.api.core.v1.ContainerPort", default={}),
                        "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-patch-merge-key": "containerPort",
                        "x-kubernetes-patch-strategy": "merge",
                        "description": "List of ports to expose from the container.",
                    },
                    "resources": ref(
                        "io.k8s.api.core.v1.ResourceRequirements",
                        default={},
                        description="Compute Resources required by this container.",
                    ),
                    "readinessProbe": ref("io.k8s.api.core.v1.Probe", description="Periodic probe."),
                },
            },
            "io.k8s.api.core.v1.ContainerPort": {
                "description": "ContainerPort represents a network port in a single container.",
                "type": "object",
                "required": ["containerPort"],
                "properties": {
                    "containerPort": {"type": "integer", "format": "int32", "default": 0},
                    "protocol": {"type": "string", "default": "TCP", "enum": ["SCTP", "TCP", "UDP"]},
                },
            },
            "io.k8s.api.core.v1.ResourceRequirements": {
                "description": "ResourceRequirements describes the compute resource requirements.",
                "type": "object",
                "properties": {
                    "limits": {
                        "type": "object",
                        "additionalProperties": ref(
                            "io.k8s.apimachinery.pkg.api.resource.Quantity", default={}
                        ),
                    }
                },
            },
            "io.k8s.api.core.v1.Probe": {
                "type": "object",
                "properties": {"httpGet": ref("io.k8s.api.core.v1.HTTPGetAction", description="HTTP check.")},
            },
            "io.k8s.api.core.v1.HTTPGetAction": {
                "type": "object",
                "required": ["port"],
                "properties": {
                    "port": ref(
                        "io.k8s.apimachinery.pkg.util.intstr.IntOrString", description="Port to probe."
                    ),
                    "scheme": {"type": "string", "format": "int-or-string"},
                },
            },
            "io.k8s.api.core.v1.Volume": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "default": ""},
                    "ephemeral": ref("io.k8s.api.core.v1.EphemeralVolumeSource"),
                },
            },
            "io.k8s.api.core.v1.EphemeralVolumeSource": {
                "type": "object",
                "properties": {
                    "volumeClaimTemplate": ref("io.k8s.api.core.v1.PersistentVolumeClaimTemplate")
                },
            },
            "io.k8s.api.core.v1.PersistentVolumeClaimTemplate": {
                "type": "object",
                "properties": {
                    "metadata": ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", default={}),
                    "spec": {"type": "object", "properties": {"storageClassName": {"type": "string"}}},
                },
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
                "type": "object",
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "managedFields": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"fieldsV1": {"type": "object"}}},
                    },
                    "uid": {"type": "string"},
                },
            },
            "io.k8s.api.core.v1.Toleration": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "tolerationSeconds": {"type": "integer"}},
            },
            "io.k8s.api.core.v1.EnvVar": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
            "io.k8s.api.core.v1.LocalObjectReference": {
                "type": "object",
                "properties": {"name": {"type": "string", "default": ""}},
                "x-kubernetes-map-type": "atomic",
            },
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
            "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string", "description": "Quantity."},
        }
    },
}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, mapping) inside a JSON-like value."""
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


@pytest.fixture(scope="module")
def converted() -> dict[str, Any]:
    return structural_schemas(FRAGMENT)


# --- the converter -------------------------------------------------------------------------------


def test_refs_are_inlined_and_no_unsupported_keyword_is_left(converted: dict[str, Any]) -> None:
    for path, node in walk(converted):
        assert "$ref" not in node and "allOf" not in node, path
        assert not any(key.startswith("x-kubernetes-patch") for key in node), path
        assert "title" not in node, path


def test_the_referring_fields_description_wins(converted: dict[str, Any]) -> None:
    container = converted["io.k8s.api.core.v1.Container"]
    assert (
        container["properties"]["resources"]["description"] == "Compute Resources required by this container."
    )
    assert container["properties"]["resources"]["type"] == "object"


def test_int_or_string_and_quantity_become_the_structural_form(converted: dict[str, Any]) -> None:
    probe = converted["io.k8s.api.core.v1.Container"]["properties"]["readinessProbe"]
    port = probe["properties"]["httpGet"]["properties"]["port"]
    assert port == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
        "description": "Port to probe.",
    }
    inline = probe["properties"]["httpGet"]["properties"]["scheme"]
    assert inline["x-kubernetes-int-or-string"] is True and "type" not in inline and "format" not in inline
    limits = converted["io.k8s.api.core.v1.Container"]["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"]["x-kubernetes-int-or-string"] is True
    assert limits["additionalProperties"]["pattern"] == QUANTITY_PATTERN


def test_defaults_are_dropped_except_for_list_map_keys(converted: dict[str, Any]) -> None:
    container = converted["io.k8s.api.core.v1.Container"]
    assert "default" not in container["properties"]["name"]
    assert "default" not in container["properties"]["resources"]
    port = container["properties"]["ports"]["items"]["properties"]
    assert port["protocol"]["default"] == "TCP"
    assert "default" not in port["containerPort"]
    assert container["properties"]["ports"]["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]


def test_enums_and_map_types_survive(converted: dict[str, Any]) -> None:
    container = converted["io.k8s.api.core.v1.Container"]
    assert container["properties"]["imagePullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert converted["io.k8s.api.core.v1.LocalObjectReference"]["x-kubernetes-map-type"] == "atomic"


def test_embedded_object_meta_keeps_only_user_fields(converted: dict[str, Any]) -> None:
    template = converted["io.k8s.api.core.v1.Volume"]["properties"]["ephemeral"]["properties"]
    metadata = template["volumeClaimTemplate"]["properties"]["metadata"]
    assert set(metadata["properties"]) == {"labels", "annotations"}
    assert k8s_schemas.open_fields(converted["io.k8s.api.core.v1.Volume"]) == []


def test_free_form_objects_are_marked_open() -> None:
    document = {"components": {"schemas": {"X": {"type": "object", "properties": {"raw": {}}}}}}
    schema = structural_schemas(document, ["X"])["X"]
    assert schema["properties"]["raw"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert k8s_schemas.open_fields(schema) == [".raw"]


def test_missing_and_recursive_definitions_are_errors() -> None:
    with pytest.raises(SchemaConversionError, match="not found"):
        structural_schemas(FRAGMENT, ["io.k8s.api.core.v1.Pod"])
    recursive = {"components": {"schemas": {"A": {"type": "object", "properties": {"a": ref("A")}}}}}
    with pytest.raises(SchemaConversionError, match="A -> A"):
        structural_schemas(recursive, ["A"])
    with pytest.raises(SchemaConversionError, match="not an OpenAPI v3 document"):
        structural_schemas({"swagger": "2.0"})


def test_main_reads_stdin_and_writes_the_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "schemas.json"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(FRAGMENT)))
    assert k8s_schemas.main(["--output", str(output)]) == 0
    stored = json.loads(output.read_text())
    assert stored["source"]["kubernetesVersion"] == "v1.36.3"
    assert set(stored["definitions"]) == set(k8s_schemas.NEEDED_DEFINITIONS)
    assert k8s_schemas.load_schemas(output) == stored["definitions"]


def test_main_refuses_a_document_that_is_not_openapi(tmp_path: Path) -> None:
    source = tmp_path / "doc.json"
    source.write_text("{}")
    assert k8s_schemas.main([str(source), "--output", str(tmp_path / "out.json")]) == 1
    assert not (tmp_path / "out.json").exists()


def test_a_crd_can_be_built_from_the_fragment(converted: dict[str, Any]) -> None:
    built = crd.build_crd(converted, description_depth=1)
    spec = built["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    container = spec["properties"]["works"]["items"]["properties"]["container"]
    assert container["required"] == ["image"]
    assert container["description"].startswith("The container to run")
    # With a depth of 1, descriptions one level deep stay and deeper ones go.
    assert container["properties"]["ports"]["description"] == "List of ports to expose from the container."
    assert "description" not in container["properties"]["readinessProbe"]["properties"]["httpGet"]
    everything = crd.build_crd(converted)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    probe = everything["properties"]["spec"]["properties"]["works"]["items"]["properties"]["container"]
    assert probe["properties"]["readinessProbe"]["properties"]["httpGet"]["description"] == "HTTP check."


# --- the committed CRD ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMMITTED_CRD.read_text())
    return loaded


@pytest.fixture(scope="module")
def schema(committed: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def test_committed_crd_is_up_to_date() -> None:
    assert COMMITTED_CRD.read_text() == crd.render_crd(), (
        "crds/dagflow.dev_dagflows.yaml is stale: run `make crds` (python -m dagflow.api.crd ...)"
    )


def test_names_scope_and_printer_columns(committed: dict[str, Any]) -> None:
    assert committed["metadata"]["name"] == "dagflows.dagflow.dev"
    spec = committed["spec"]
    assert spec["group"] == "dagflow.dev" and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "DAGFlow",
        "listKind": "DAGFlowList",
        "plural": "dagflows",
        "singular": "dagflow",
        "shortNames": ["dagf", "dag"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [
        (column["name"], column["jsonPath"], column.get("priority", 0))
        for column in version["additionalPrinterColumns"]
    ]
    assert columns == [
        ("Phase", ".status.phase", 0),
        ("Progress", ".status.progress", 0),
        ("Run", ".status.run", 0),
        ("Started", ".status.startedAt", 0),
        ("Schedule", ".spec.schedule", 0),
        ("Endpoint", ".status.endpoint", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Suspend", ".spec.suspend", 1),
        ("Queued", ".status.queued", 1),
        ("Last Schedule", ".status.lastScheduleTime", 1),
        ("Next Schedule", ".status.nextScheduleTime", 1),
    ]


def test_no_schema_node_is_a_yaml_alias() -> None:
    assert "&id" not in COMMITTED_CRD.read_text()


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        if path.endswith("/properties") or path.endswith("/x-kubernetes-validations") or "/anyOf" in path:
            continue
        if "/x-kubernetes-validations/" in path or path.endswith("/default"):
            continue
        assert not {"$ref", "allOf", "oneOf", "title", "definitions", "$defs"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        if node.get("type") == "array":
            assert "items" in node, path
        assert not str(node.get("additionalProperties", "")).startswith("False"), path
        assert not any(key.startswith("x-dagflow") for key in node), path


def test_only_documented_fields_are_open(schema: dict[str, Any]) -> None:
    # A matrix's keys are the user's axes beside `include` and `exclude`, each a list or a reference:
    # no structural schema says that, so the validator checks it (docs/api.md, "Matrix").
    # A finally work's Kubernetes objects too: the validator checks them against the same upstream
    # schemas (docs/api.md, "Finally works"), which would nearly double the CRD a second time.
    assert k8s_schemas.open_fields(schema["properties"]["spec"]) == [
        ".finally[].container",
        ".finally[].matrix",
        ".finally[].tolerations[]",
        ".finally[].volumes[]",
        ".works[].matrix",
    ]


def test_lists_are_maps_keyed_by_name(schema: dict[str, Any]) -> None:
    works = schema["properties"]["spec"]["properties"]["works"]
    assert works["x-kubernetes-list-type"] == "map" and works["x-kubernetes-list-map-keys"] == ["name"]
    assert works["maxItems"] == 2000 and works["minItems"] == 1
    status = schema["properties"]["status"]["properties"]
    assert status["works"]["x-kubernetes-list-map-keys"] == ["name"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    depends_on = works["items"]["properties"]["dependsOn"]
    assert depends_on["x-kubernetes-list-type"] == "set"
    assert depends_on["items"]["maxLength"] == 63


def test_work_rules_and_bounds(schema: dict[str, Any]) -> None:
    work = schema["properties"]["spec"]["properties"]["works"]["items"]
    assert work["required"] == ["name", "container"]
    name = work["properties"]["name"]
    assert name["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" and name["maxLength"] == 63
    assert work["properties"]["when"]["enum"] == ["AllSucceeded", "AllDone", "AnySucceeded"]
    assert work["properties"]["when"]["default"] == "AllSucceeded"
    assert work["properties"]["retries"]["minimum"] == 0
    assert work["properties"]["gpu"]["minimum"] == 0
    assert work["properties"]["timeoutSeconds"]["minimum"] == 1
    assert work["properties"]["serve"]["properties"]["port"]["maximum"] == 65535
    rules = [rule["rule"] for rule in work["x-kubernetes-validations"]]
    assert any("self.name in self.dependsOn" in rule for rule in rules)


def test_descriptions_help_kubectl_explain(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    work = spec["properties"]["works"]["items"]
    assert spec["properties"]["works"]["description"]
    for field, sub in work["properties"].items():
        assert sub.get("description"), f"works.{field} has no description"
    container = work["properties"]["container"]
    assert container["properties"]["image"]["description"]
    assert container["required"] == ["image"]
    assert schema["properties"]["status"]["properties"]["works"]["items"]["properties"]["job"]["description"]


def test_status_has_no_defaults(schema: dict[str, Any]) -> None:
    assert not [path for path, _ in walk(schema["properties"]["status"]) if path.endswith("/default")]


def test_crd_size_stays_far_below_the_etcd_limit() -> None:
    assert len(COMMITTED_CRD.read_bytes()) < 512 * 1024


def test_main_writes_the_same_yaml_to_every_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "crd.yaml", tmp_path / "b" / "crd.yaml"
    assert crd.main([str(first), str(second)]) == 0
    assert first.read_text() == second.read_text() == crd.render_crd()


def test_value_problems_follow_the_converted_schema(converted: dict[str, Any]) -> None:
    container = converted["io.k8s.api.core.v1.Container"]
    good = {
        "name": "c",
        "image": "x",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": 2, "memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"port": "http"}},
    }
    assert k8s_schemas.value_problems(good, container, "c") == []
    bad = {
        "image": 3,
        "imagePullPolicy": "Sometimes",
        "ports": [{"containerPort": True}],
        "resources": {"limits": {"cpu": "lots"}},
        "readinessProbe": {"httpGet": {"port": 1.5}},
        "extra": 1,
    }
    assert k8s_schemas.value_problems(bad, container, "c") == [
        ("c.name", "required field is missing"),
        ("c.image", "must be of type string, got int 3"),
        (
            "c.imagePullPolicy",
            "unsupported value 'Sometimes': must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ("c.ports[0].containerPort", "must be of type integer, got bool True"),
        ("c.resources.limits.cpu", "'lots' is not a quantity (like 500m, 2, 1.5 or 4Gi)"),
        ("c.readinessProbe.httpGet.port", "must be an integer or a string, got 1.5"),
        ("c.extra", "unknown field"),
    ]
