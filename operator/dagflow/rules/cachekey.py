"""Cache keys: what a batch work's outcome depends on, hashed part by part, Merkle style.

A work's key covers what decides what it computes: its image as written (with the digest when it is
written by digest), command, args and env after substitution (so parameters and upstream outputs
are in it), envFrom and workingDir, its volumes and mounts, its declared outputs, its matrix
values, its cache version, and the keys of the works it depends on. So data passed through a volume
still invalidates a work when the work upstream of it ran with other inputs. Where and with what it
runs (GPUs, resources, node selectors, tolerations, labels) is not in it.

Each part is hashed on its own and kept (shortened) in the cache entry, so that a miss can be
explained part by part. Nothing here talks to Kubernetes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dagflow.api.models import DAGFlowSpec, Work
from dagflow.rules.substitution import Values, substitute_container

# The label that carries a key on its entry. A key is 32 hex characters (128 bits of SHA-256): it
# fits in a label value whole, and in the status of a 2,000-work flow.
KEY_LABEL = "dagflow.dev/cache-key"
KEY_CHARS = 32
# How much of each part's hash an entry keeps: enough to tell a change, small enough for many parts.
PART_CHARS = 16
UPSTREAM_PREFIX = "upstream["


def _hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """A work's key and the hash of each of its parts, by part name (`image`, `args[2]`,
    `env[LR]`, `upstream[train]`, ...)."""

    value: str
    parts: Mapping[str, str]

    @property
    def label(self) -> str:
        return self.value

    def short_parts(self) -> dict[str, str]:
        """The parts as an entry keeps them."""
        return {name: digest[:PART_CHARS] for name, digest in sorted(self.parts.items())}


def is_digest(image: str) -> bool:
    """Whether an image is written by digest (`repo@sha256:...`) rather than by a tag that may move."""
    return "@" in image and ":" in image.rsplit("@", 1)[1]


def cache_key(
    container: Mapping[str, Any],
    volumes: Sequence[Mapping[str, Any]],
    outputs: Sequence[str],
    version: str,
    upstream: Mapping[str, str],
    matrix: Sequence[Mapping[str, Any]] | None = None,
) -> CacheKey:
    """The key of a work whose container is `container` after the operator's substitution (and
    with podDefaults.env merged in), with these pod volumes, declared output names, cache version,
    keys of the works it depends on (by name) and, for a matrix work, its instances' values in
    index order."""
    parts: dict[str, str] = {"image": _hash(str(container.get("image", "")))}
    for field in ("command", "args"):
        items = container.get(field) or []
        parts[f"{field}#"] = _hash(str(len(items)))
        for index, item in enumerate(items):
            parts[f"{field}[{index}]"] = _hash(str(item))
    for entry in container.get("env") or []:
        parts[f"env[{entry.get('name')}]"] = _hash({k: v for k, v in entry.items() if k != "name"})
    if container.get("envFrom"):
        parts["envFrom"] = _hash(container["envFrom"])
    if container.get("workingDir"):
        parts["workingDir"] = _hash(str(container["workingDir"]))
    for mount in container.get("volumeMounts") or []:
        parts[f"volumeMounts[{mount.get('mountPath')}]"] = _hash(mount)
    for volume in volumes:
        parts[f"volumes[{volume.get('name')}]"] = _hash(volume)
    parts["outputs"] = _hash(sorted(outputs))
    if matrix is not None:
        parts["matrix"] = _hash(list(matrix))
    parts["version"] = _hash(version)
    for name, key in upstream.items():
        parts[f"{UPSTREAM_PREFIX}{name}]"] = key
    value = _hash(sorted(parts.items()))[:KEY_CHARS]
    return CacheKey(value=value, parts=parts)


def keyed_container(spec: DAGFlowSpec, work: Work, values: Values) -> dict[str, Any]:
    """The work's container as its pod gets it, as far as the key goes: podDefaults.env merged in
    (the container's own variables win) and the references substituted; a matrix work's
    `$(matrix.KEY)` stay, its instances' values are a part of their own. BadReference when a
    reference cannot be resolved."""
    container = dict(work.container)
    own_env = container.get("env") or []
    own_names = {entry.get("name") for entry in own_env}
    defaults = spec.pod_defaults.env if spec.pod_defaults else []
    inherited = [entry for entry in defaults if entry.get("name") not in own_names]
    if inherited or own_env:
        container["env"] = [*inherited, *own_env]
    return substitute_container(container, values, launched=work.matrix is not None)


def work_cache_key(
    spec: DAGFlowSpec,
    work: Work,
    values: Values,
    upstream: Mapping[str, str],
    matrix: Sequence[Mapping[str, Any]] | None = None,
) -> CacheKey:
    """A work's key in a run whose references resolve to `values`."""
    return cache_key(
        keyed_container(spec, work, values),
        work.volumes,
        [output.name for output in work.outputs],
        spec.cache_of(work).version,
        upstream,
        matrix,
    )


@dataclass(frozen=True)
class MatrixKeys:
    """The keys of a matrix work: the work's own (all its instances' values in index order: what its
    dependents' keys are made from), its template's (everything but the instances' values: the label
    its entries are found by) and each instance's (the template's and the instance's values), in
    index order."""

    work: CacheKey
    template: CacheKey
    instances: list[str]


def instance_key(template: str, values: Mapping[str, Any]) -> str:
    """The key of one instance of a matrix work whose template key is `template`."""
    return _hash(["instance", template, dict(values)])[:KEY_CHARS]


def matrix_work_keys(
    spec: DAGFlowSpec,
    work: Work,
    values: Values,
    upstream: Mapping[str, str],
    matrix: Sequence[Mapping[str, Any]],
) -> MatrixKeys:
    """The keys of a matrix work that runs these instances (`matrix`, in index order)."""
    container = keyed_container(spec, work, values)
    names = [output.name for output in work.outputs]
    version = spec.cache_of(work).version
    whole = cache_key(container, work.volumes, names, version, upstream, matrix)
    axes = sorted({axis for combination in matrix for axis in combination})
    template = cache_key(container, work.volumes, names, version, {**upstream}, None)
    parts = {**template.parts, "matrix axes": _hash(axes)}
    template = CacheKey(value=_hash(["template", sorted(parts.items())])[:KEY_CHARS], parts=parts)
    return MatrixKeys(
        work=whole,
        template=template,
        instances=[instance_key(template.value, combination) for combination in matrix],
    )


def _created(entry: Mapping[str, Any]) -> datetime | None:
    text = (entry.get("spec") or {}).get("createdAt")
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def match_instances(
    entries: Sequence[Mapping[str, Any]], keys: MatrixKeys, now: datetime, max_age_seconds: int
) -> dict[int, tuple[Mapping[str, Any], int]]:
    """The instances of a matrix work the cache has, by index: for each, the newest entry of its
    template written within max age that holds its key, and where in that entry it is."""
    newest: dict[str, tuple[datetime, Mapping[str, Any], int]] = {}
    for entry in entries:
        spec = entry.get("spec") or {}
        created = _created(entry)
        if spec.get("key") != keys.template.value or created is None:
            continue
        if now - created > timedelta(seconds=max_age_seconds):
            continue
        for position, key in enumerate(spec.get("instanceKeys") or []):
            if key not in newest or created > newest[key][0]:
                newest[key] = (created, entry, position)
    found: dict[int, tuple[Mapping[str, Any], int]] = {}
    for index, key in enumerate(keys.instances):
        if key in newest:
            found[index] = newest[key][1:]
    return found


def instance_outputs(
    found: Mapping[int, tuple[Mapping[str, Any], int]], names: Sequence[str]
) -> dict[str, dict[int, Any]]:
    """The outputs of the instances the cache has, by output name and instance index."""
    outputs: dict[str, dict[int, Any]] = {name: {} for name in names}
    for index, (entry, position) in found.items():
        kept = (entry.get("spec") or {}).get("outputs") or {}
        for name in names:
            values = kept.get(name) or []
            outputs[name][index] = values[position] if position < len(values) else None
    return outputs


def run_unique_key(flow_uid: str, run: int, work: str) -> str:
    """The key of a work that is not cached (or did not succeed): unique to its run, so that every
    work downstream of it misses."""
    return _hash(["not cached", flow_uid, run, work])[:KEY_CHARS]


def explain_miss(now: Mapping[str, str], before: Mapping[str, str]) -> list[str]:
    """What changed between an entry's parts (`before`, as kept) and a work's parts now, in words:
    `args[2] changed`, `image changed`, `upstream train re-ran`, `env[LR] added`."""
    now = {name: digest[:PART_CHARS] for name, digest in now.items()}
    before = {name: digest[:PART_CHARS] for name, digest in before.items()}
    reasons = []
    for name in sorted(now.keys() | before.keys(), key=_part_order):
        if now.get(name) == before.get(name):
            continue
        if name.startswith(UPSTREAM_PREFIX):
            upstream = name[len(UPSTREAM_PREFIX) : -1]
            if name not in before:
                reasons.append(f"upstream {upstream} added")
            elif name not in now:
                reasons.append(f"upstream {upstream} removed")
            else:
                reasons.append(f"upstream {upstream} re-ran")
        elif name.endswith("#"):
            continue  # a longer or shorter list shows as the items added or removed
        elif name not in before:
            reasons.append(f"{name} added")
        elif name not in now:
            reasons.append(f"{name} removed")
        else:
            reasons.append(f"{name} changed")
    return reasons


def _part_order(name: str) -> tuple[int, str]:
    order = ("image", "command", "args", "env", "envFrom", "workingDir", "volume", "outputs", "matrix")
    for rank, prefix in enumerate(order):
        if name.startswith(prefix):
            return rank, name
    return len(order) + (1 if name.startswith(UPSTREAM_PREFIX) else 0), name
