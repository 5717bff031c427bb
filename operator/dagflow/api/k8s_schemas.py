"""Kubernetes core/v1 schemas turned into CRD-compatible structural schemas.

The CRD embeds real Kubernetes types (a Container, Volumes, ...) so that the API server checks them
at apply time and `kubectl explain` documents them. Their schemas come from the OpenAPI v3 document
an API server serves at `/openapi/v3/api/v1`. A CRD schema is stricter than that document:
no `$ref`, a `type` on every node, int-or-string spelled the one way the API server accepts, and
only the keywords of `JSONSchemaProps`. `structural_schemas` does that conversion; `main` stores its
result next to this module, so generating the CRD needs no cluster.

Refresh with a running API server of the targeted Kubernetes version:

    kubectl get --raw /openapi/v3/api/v1 > core-v1-openapi.json
    python -m dagflow.api.k8s_schemas core-v1-openapi.json
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

SCHEMAS_PATH = Path(__file__).with_name("k8s-core-v1-schemas.json")

NEEDED_DEFINITIONS = (
    "io.k8s.api.core.v1.Container",
    "io.k8s.api.core.v1.EnvVar",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ResourceRequirements",
    "io.k8s.api.core.v1.Toleration",
    "io.k8s.api.core.v1.Volume",
)

_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# The pattern the API server itself parses quantities with, so "1 Gi" fails at apply time.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Of an embedded ObjectMeta (a PVC template's metadata) only these fields mean anything; the rest
# (managedFields, ownerReferences, ...) is set by the API server, never by a user.
_EMBEDDED_METADATA_FIELDS = ("annotations", "finalizers", "labels", "name", "namespace")

# Keywords of apiextensions.k8s.io/v1 JSONSchemaProps that are kept as they are. `$ref`, `allOf`,
# `default` and the int-or-string forms get special treatment; anything else is dropped
# (titles, x-kubernetes-patch-*, x-kubernetes-unions, ...).
_KEPT_KEYWORDS = frozenset(
    {
        "description",
        "type",
        "format",
        "enum",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "maxProperties",
        "minProperties",
        "multipleOf",
        "required",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-preserve-unknown-fields",
    }
)


class SchemaConversionError(ValueError):
    """The OpenAPI document lacks a definition or uses a construct that cannot become structural."""


def int_or_string_schema(description: str | None = None, pattern: str | None = None) -> Schema:
    """The only int-or-string spelling a structural schema allows."""
    schema: Schema = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    if pattern:
        schema["pattern"] = pattern
    if description:
        schema["description"] = description
    return schema


def structural_schemas(
    document: Mapping[str, Any], definitions: Iterable[str] = NEEDED_DEFINITIONS
) -> dict[str, Schema]:
    """Convert the named definitions of an OpenAPI v3 document into self-contained CRD schemas."""
    try:
        components = document["components"]["schemas"]
    except (KeyError, TypeError) as error:
        raise SchemaConversionError("not an OpenAPI v3 document: no components.schemas") from error
    converter = _Converter(components)
    return {name: converter.definition(name) for name in definitions}


class _Converter:
    def __init__(self, components: Mapping[str, Any]) -> None:
        self._components = components
        self._expanding: list[str] = []

    def definition(self, name: str) -> Schema:
        if name == _INT_OR_STRING:
            return int_or_string_schema()
        if name == _QUANTITY:
            return int_or_string_schema(pattern=QUANTITY_PATTERN)
        if name not in self._components:
            raise SchemaConversionError(f"definition {name} not found in the OpenAPI document")
        if name in self._expanding:
            cycle = " -> ".join([*self._expanding, name])
            raise SchemaConversionError(f"recursive definition cannot be inlined: {cycle}")
        self._expanding.append(name)
        try:
            schema = self.node(self._components[name])
        finally:
            self._expanding.pop()
        if name == _OBJECT_META:
            schema = _embedded_metadata(schema)
        return schema

    def resolved(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        """The raw schema a node stands for, one level of $ref/allOf followed."""
        target = _ref_target(node)
        if target is None:
            return node
        return {**self._components.get(target, {}), **_without_ref(node)}

    def node(self, node: Mapping[str, Any]) -> Schema:
        target = _ref_target(node)
        if target is not None:
            converted = copy.deepcopy(self.definition(target))
            # The referring field's own description says more than the type's generic one.
            converted.update(
                {key: value for key, value in _without_ref(node).items() if key in _KEPT_KEYWORDS}
            )
            return converted
        if node.get("format") == "int-or-string":
            return int_or_string_schema(node.get("description"))

        schema: Schema = {key: value for key, value in node.items() if key in _KEPT_KEYWORDS}
        if schema.get("format") == "int-or-string":
            del schema["format"]
        if "properties" in node:
            schema["properties"] = {prop: self.node(sub) for prop, sub in node["properties"].items()}
        if "items" in node:
            schema["items"] = self.node(node["items"])
            self._keep_list_map_key_defaults(node, schema)
        additional = node.get("additionalProperties")
        if isinstance(additional, Mapping):
            schema["additionalProperties"] = self.node(additional)
        if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
            if "properties" in schema or "additionalProperties" in schema:
                schema["type"] = "object"
            else:
                # Only free-form objects land here; a structural schema must still say they are open.
                schema["type"] = "object"
                schema["x-kubernetes-preserve-unknown-fields"] = True
        return schema

    def _keep_list_map_key_defaults(self, node: Mapping[str, Any], schema: Schema) -> None:
        """The API server requires every list-map key to be required or defaulted (e.g. a port's
        protocol), so such defaults survive while all others are dropped."""
        if node.get("x-kubernetes-list-type") != "map":
            return
        raw_items = self.resolved(node["items"])
        required = set(raw_items.get("required", ()))
        for key in node.get("x-kubernetes-list-map-keys", ()):
            raw_property = self.resolved(raw_items.get("properties", {}).get(key, {}))
            if key not in required and "default" in raw_property:
                schema["items"]["properties"][key]["default"] = raw_property["default"]


def _ref_target(node: Mapping[str, Any]) -> str | None:
    ref = node.get("$ref")
    if ref is None:
        all_of = node.get("allOf")
        if all_of:
            if len(all_of) != 1 or set(all_of[0]) != {"$ref"}:
                raise SchemaConversionError(f"unsupported allOf: {all_of!r}")
            ref = all_of[0]["$ref"]
    if ref is None:
        return None
    if not isinstance(ref, str) or not ref.startswith("#/components/schemas/"):
        raise SchemaConversionError(f"unsupported $ref: {ref!r}")
    return ref.rsplit("/", 1)[1]


def _without_ref(node: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if key not in ("$ref", "allOf", "default")}


def _embedded_metadata(schema: Schema) -> Schema:
    properties = schema.get("properties", {})
    reduced: Schema = {key: value for key, value in schema.items() if key != "properties"}
    reduced["properties"] = {
        field: properties[field] for field in _EMBEDDED_METADATA_FIELDS if field in properties
    }
    return reduced


def open_fields(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Paths inside a converted schema that still accept unknown fields."""
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        found.append(path or ".")
    for prop, sub in schema.get("properties", {}).items():
        found += open_fields(sub, f"{path}.{prop}")
    if isinstance(schema.get("items"), Mapping):
        found += open_fields(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        found += open_fields(schema["additionalProperties"], f"{path}{{}}")
    return found


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (Mapping,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def value_problems(value: Any, schema: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """(path, message) for each way `value` breaks a converted schema, as the API server would see it:
    wrong types, unknown or missing fields, values outside an enum or pattern."""
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [(path, f"must be an integer or a string, got {value!r}")]
        return _pattern_problems(value, schema, path) if isinstance(value, str) else []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    expected = schema.get("type")
    if expected in _JSON_TYPES and (
        not isinstance(value, _JSON_TYPES[expected]) or (expected != "boolean" and isinstance(value, bool))
    ):
        return [(path, f"must be of type {expected}, got {type(value).__name__} {value!r}")]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(choice) for choice in schema["enum"])
        return [(path, f"unsupported value {value!r}: must be one of {allowed}")]
    if isinstance(value, str):
        return _pattern_problems(value, schema, path)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [
            problem
            for index, item in enumerate(value)
            for problem in value_problems(item, schema["items"], f"{path}[{index}]")
        ]
    if isinstance(value, Mapping):
        return _object_problems(value, schema, path)
    return []


def _object_problems(value: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    problems = [
        (f"{path}.{field}", "required field is missing")
        for field in schema.get("required", ())
        if field not in value
    ]
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            problems += value_problems(item, properties[key], f"{path}.{key}")
        elif isinstance(additional, Mapping):
            problems += value_problems(item, additional, f"{path}.{key}")
        elif properties:
            problems.append((f"{path}.{key}", "unknown field"))
    return problems


def _pattern_problems(value: str, schema: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    pattern = schema.get("pattern")
    if pattern is None or re.search(pattern, value):
        return []
    if pattern == QUANTITY_PATTERN:
        return [(path, f"{value!r} is not a quantity (like 500m, 2, 1.5 or 4Gi)")]
    return [(path, f"{value!r} does not match {pattern}")]


def load_schemas(path: Path = SCHEMAS_PATH) -> dict[str, Schema]:
    """The committed structural schemas, by definition name."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    definitions: dict[str, Schema] = stored["definitions"]
    return definitions


def render_schemas(document: Mapping[str, Any]) -> str:
    """The content of the committed JSON file for an OpenAPI document."""
    stored = {
        "source": {
            "document": "/openapi/v3/api/v1",
            "kubernetesVersion": document.get("info", {}).get("version", "unknown"),
        },
        "definitions": structural_schemas(document),
    }
    return json.dumps(stored, indent=1, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dagflow.api.k8s_schemas",
        description="Convert the core/v1 OpenAPI v3 document of an API server into the structural "
        "schemas the DAGFlow CRD embeds.",
    )
    parser.add_argument(
        "document",
        nargs="?",
        default="-",
        help="the output of `kubectl get --raw /openapi/v3/api/v1`; '-' (default) reads stdin",
    )
    parser.add_argument("--output", type=Path, default=SCHEMAS_PATH, help=f"default: {SCHEMAS_PATH}")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.document == "-" else Path(args.document).read_text(encoding="utf-8")
    try:
        rendered = render_schemas(json.loads(text))
    except (json.JSONDecodeError, SchemaConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.output.write_text(rendered, encoding="utf-8")
    print(f"Wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
