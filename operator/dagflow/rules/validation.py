"""Checks of a DAGFlow spec that need no cluster: the same verdict offline, in the admission
webhook and in the operator.

Everything is pure. `validate_flow` reports every problem at once, each with the path of the
offending field (`spec.works[3].dependsOn[0]`) and a message that names the work.
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from dagflow.api import k8s_schemas
from dagflow.api.models import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    GROUP,
    KIND,
    LABEL_VALUE_PATTERN,
    PARAMS_ANNOTATION,
    WORKSPACE_MOUNT_PATH,
    WORKSPACE_VOLUME,
    DAGFlowSpec,
    PodDefaults,
    Work,
    kubernetes_shape_fields,
)
from dagflow.rules import naming
from dagflow.rules.cachekey import is_digest
from dagflow.rules.cron import CronSchedule, ScheduleError, load_time_zone
from dagflow.rules.matrix import RESERVED_KEYS as RESERVED_MATRIX_KEYS
from dagflow.rules.matrix import MatrixError, expand, parse_matrix
from dagflow.rules.params import requested_params
from dagflow.rules.substitution import BadReference, Reference, container_references

# etcd's default request limit is 1.5 MiB; the status is written into the same object later, so a
# flow has to leave room for it (a 2,000-work flow's status is about 300 KiB).
MAX_OBJECT_BYTES = 1024 * 1024
_DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Fields whose keys are user data, shown as ["key"] in paths rather than .key.
_MAP_FIELDS = frozenset({"labels", "annotations", "nodeSelector"})
_PATTERN_MEANINGS = {
    DNS_LABEL_PATTERN: "a DNS-1123 label: lower case letters, digits and '-', starting and ending "
    "with a letter or digit",
    LABEL_VALUE_PATTERN: "a label value: letters, digits, '-', '_' and '.', starting and ending "
    "with a letter or digit",
}


@dataclass(frozen=True, order=True)
class ValidationProblem:
    """One reason a flow is refused: where (`path`) and why (`message`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CycleError(ValueError):
    """The works depend on each other in a circle; `cycle` lists it, first work repeated at the end."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(f"dependency cycle: {' -> '.join(self.cycle)}")


def validate_flow(
    spec: DAGFlowSpec | Mapping[str, Any], flow_name: str | None = None
) -> list[ValidationProblem]:
    """Every problem of a flow spec, given as a model or as the raw `spec` mapping."""
    raw = spec.to_dict() if isinstance(spec, DAGFlowSpec) else spec
    problems: list[ValidationProblem] = []
    if flow_name is not None:
        problems += _flow_name_problems(flow_name)
    if not isinstance(raw, Mapping):
        return [*problems, ValidationProblem("spec", "must be a mapping with a list of works")]
    model_problems = schema_problems(raw)
    problems += model_problems
    works, finally_works = _work_views(raw), _work_views(raw, "finally")
    problems += _name_problems([*works, *finally_works])
    problems += _dependency_problems(works, finally_works)
    problems += _cycle_problems(works)
    problems += _cycle_problems(finally_works)
    problems += _finally_problems(raw)
    problems += _approval_problems(raw)
    problems += _metadata_key_problems(raw)
    problems += _schedule_problems(raw)
    problems += _queue_problems(raw)
    problems += _cache_problems(raw)
    problems += _workspace_problems(raw)
    problems += _artifact_problems(raw)
    problems += _reference_problems(raw)
    # A missing field the models already reported on its object is not worth a second line.
    reported = {problem.path for problem in model_problems}
    problems += [
        problem
        for problem in _embedded_object_problems(raw)
        if problem.path.rpartition(".")[0] not in reported or "required field" not in problem.message
    ]
    return sorted(_unique(problems), key=lambda problem: _natural_key(problem.path))


def validate_object(obj: Mapping[str, Any]) -> list[ValidationProblem]:
    """Every problem of a whole DAGFlow object (apiVersion, kind, metadata and spec)."""
    problems: list[ValidationProblem] = []
    api_version = obj.get("apiVersion")
    if api_version != API_VERSION:
        problems.append(ValidationProblem("apiVersion", f"must be {API_VERSION}, got {api_version!r}"))
    if obj.get("kind") != KIND:
        problems.append(ValidationProblem("kind", f"must be {KIND}, got {obj.get('kind')!r}"))
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str):
        problems.append(ValidationProblem("metadata.name", "a DAGFlow needs a name"))
        name = None
    if "spec" not in obj:
        if name is not None:
            problems += _flow_name_problems(name)
        return [*problems, ValidationProblem("spec", "a DAGFlow needs a spec with a list of works")]
    problems += validate_flow(obj["spec"], flow_name=name)
    problems += size_problems(obj)
    return problems if problems else params_annotation_problems(obj)


def size_problems(obj: Mapping[str, Any]) -> list[ValidationProblem]:
    """An object etcd would not store: the API server would answer with a storage error instead."""
    try:
        size = len(json.dumps(obj, separators=(",", ":"), default=str).encode())
    except (TypeError, ValueError):
        return []
    if size <= MAX_OBJECT_BYTES:
        return []
    return [
        ValidationProblem(
            "spec",
            f"the DAGFlow is {size / 1024 / 1024:.2f} MiB as JSON; etcd stores objects of at most 1.5 MiB "
            "and the flow's status needs room in the same object, so a DAGFlow may be at most "
            f"{MAX_OBJECT_BYTES / 1024 / 1024:.1f} MiB before its status: run many alike works as one "
            "matrix work instead",
        )
    ]


def params_annotation_problems(obj: Mapping[str, Any]) -> list[ValidationProblem]:
    """What is wrong with a DAGFlow's parameter values for run requests (dagflow.dev/params), judged
    against its spec (a spec that is itself invalid is reported by validate_flow instead)."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping) or PARAMS_ANNOTATION not in annotations:
        return []
    try:
        spec = DAGFlowSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        return []
    _, problems = requested_params(spec, annotations)
    path = f'metadata.annotations["{PARAMS_ANNOTATION}"]'
    return [ValidationProblem(path, problem) for problem in problems]


def is_dagflow(obj: Any) -> bool:
    """Whether a manifest document is meant to be a DAGFlow (of any version of the group)."""
    if not isinstance(obj, Mapping):
        return False
    api_version = obj.get("apiVersion")
    return obj.get("kind") == KIND and isinstance(api_version, str) and api_version.startswith(f"{GROUP}/")


def parse_flow_spec(raw: Mapping[str, Any]) -> tuple[DAGFlowSpec | None, list[ValidationProblem]]:
    """The model of a raw spec, or None, with every problem found."""
    problems = validate_flow(raw)
    if problems:
        return None, problems
    return DAGFlowSpec.model_validate(raw), []


def schema_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """The spec's type and value errors, as found by the pydantic models."""
    misread = _bare_on_problems(raw)
    try:
        DAGFlowSpec.model_validate(raw)
    except ValidationError as error:
        found = [_problem_from_pydantic(raw, detail) for detail in error.errors()]
        # A notification whose `on` YAML read as true: one line saying so, not the models' two.
        places = tuple(problem.path for problem in misread)
        return [*misread, *(problem for problem in found if not problem.path.startswith(places))]
    return misread


def _bare_on_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """Notifications whose key `on` YAML 1.1 (kubectl's, PyYAML's) read as the boolean true."""
    listed = raw.get("notify")
    return [
        ValidationProblem(
            f"spec.notify[{index}]",
            'the key on was read as the boolean true (YAML 1.1): quote it, "on": [Failed]',
        )
        for index, entry in enumerate(listed if isinstance(listed, list) else [])
        if isinstance(entry, Mapping) and True in entry and "on" not in entry
    ]


def topological_order(spec: DAGFlowSpec) -> list[str]:
    """Work names so that each comes after everything it depends on; ties keep the spec's order.
    The finally works come last, in an order of their own.

    Raises CycleError when there is no such order.
    """
    return [*_order(spec.works), *_order(spec.finally_works)]


def _order(works: Sequence[Work]) -> list[str]:
    index = {work.name: position for position, work in enumerate(works)}
    waiting_on = {work.name: len(set(work.depends_on)) for work in works}
    dependents: dict[str, list[str]] = {work.name: [] for work in works}
    for work in works:
        for dependency in set(work.depends_on):
            if dependency not in dependents:
                raise KeyError(f"work {work.name!r} depends on unknown work {dependency!r}")
            dependents[dependency].append(work.name)
    ready = deque(name for name, count in waiting_on.items() if count == 0)
    order: list[str] = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for dependent in sorted(dependents[name], key=index.__getitem__):
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                ready.append(dependent)
    if len(order) < len(works):
        edges = {work.name: list(work.depends_on) for work in works}
        raise CycleError(find_cycles(edges)[0])
    return order


def find_cycles(depends_on: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per group of works that depend on each other in a circle.

    `depends_on` maps each work to the works it depends on; names that are not keys are ignored.
    A cycle is written in run order, `a -> b -> a` meaning b waits for a, and starts at the work
    that comes first in `depends_on`. Iterative, so deep chains of thousands of works are fine.
    """
    order = {name: position for position, name in enumerate(depends_on)}
    dependents: dict[str, list[str]] = {name: [] for name in depends_on}
    for name, dependencies in depends_on.items():
        for dependency in dict.fromkeys(dependencies):
            if dependency in dependents and dependency != name:
                dependents[dependency].append(name)
    cycles = []
    for component in _strongly_connected_components(dependents):
        if len(component) > 1:
            start = min(component, key=order.__getitem__)
            cycles.append(_shortest_cycle(start, set(component), dependents))
    return sorted(cycles, key=lambda cycle: order[cycle[0]])


@dataclass(frozen=True)
class _WorkView:
    """What the graph checks need of one work, read leniently from raw input."""

    index: int
    name: str | None
    depends_on: tuple[tuple[int, str], ...]
    # The list it is in: "works" or "finally".
    field: str = "works"

    @property
    def path(self) -> str:
        return f"spec.{self.field}[{self.index}]"

    @property
    def label(self) -> str:
        kind = "finally work" if self.field == "finally" else "work"
        return f"{kind} {self.name!r}" if self.name is not None else f"{kind} #{self.index}"


def _listed_works(raw: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """Every work of the spec, then every finally work, read leniently: its path, its label, itself."""
    listed = []
    for field, kind in (("works", "work"), ("finally", "finally work")):
        items = raw.get(field)
        for index, work in enumerate(items if isinstance(items, list) else []):
            if isinstance(work, Mapping):
                label = (
                    f"{kind} {work['name']!r}" if isinstance(work.get("name"), str) else f"{kind} #{index}"
                )
                listed.append((f"spec.{field}[{index}]", label, work))
    return listed


def _work_views(raw: Mapping[str, Any], field: str = "works") -> list[_WorkView]:
    works = raw.get(field)
    if not isinstance(works, list):
        return []
    views = []
    for index, work in enumerate(works):
        if not isinstance(work, Mapping):
            continue
        name = work.get("name") if isinstance(work.get("name"), str) else None
        dependencies = work.get("dependsOn")
        depends_on = tuple(
            (position, dependency)
            for position, dependency in enumerate(dependencies if isinstance(dependencies, list) else [])
            if isinstance(dependency, str)
        )
        views.append(_WorkView(index, name, depends_on, field))
    return views


def _name_problems(works: Sequence[_WorkView]) -> list[ValidationProblem]:
    problems = []
    first: dict[str, _WorkView] = {}
    for work in works:
        if work.name is None:
            continue
        if naming.NOTIFICATION_WORK.fullmatch(work.name):
            problems.append(
                ValidationProblem(
                    f"{work.path}.name",
                    f"{work.label}: names of the form notify-N-PHASE are the flow's notifications' own",
                )
            )
        if work.name in first:
            problems.append(
                ValidationProblem(
                    f"{work.path}.name",
                    f"{work.label} is defined more than once (first at {first[work.name].path}); names "
                    "must be unique among works and finally works",
                )
            )
        else:
            first[work.name] = work
    return problems


def _dependency_problems(
    works: Sequence[_WorkView], finally_works: Sequence[_WorkView]
) -> list[ValidationProblem]:
    """A work depends on works, a finally work on finally works: the finally works run after every
    work has ended, in a DAG of their own."""
    problems = []
    for group, others, other_kind in (
        (works, finally_works, "a finally work"),
        (finally_works, works, "a work"),
    ):
        names = {work.name for work in group if work.name is not None}
        other_names = {work.name for work in others if work.name is not None}
        for work in group:
            seen: set[str] = set()
            for position, dependency in work.depends_on:
                path = f"{work.path}.dependsOn[{position}]"
                if dependency == work.name:
                    problems.append(ValidationProblem(path, f"{work.label} depends on itself"))
                elif dependency in other_names and dependency not in names:
                    why = (
                        "finally works run after every work has ended"
                        if work.field == "works"
                        else "finally works depend on finally works only; all run after every work has ended"
                    )
                    problems.append(
                        ValidationProblem(
                            path, f"{work.label} depends on {dependency!r}, {other_kind}: {why}"
                        )
                    )
                elif dependency not in names:
                    problems.append(
                        ValidationProblem(
                            path, f"{work.label} depends on {dependency!r}, which is not a work of this flow"
                        )
                    )
                elif dependency in seen:
                    problems.append(
                        ValidationProblem(
                            path, f"{work.label} lists {dependency!r} more than once in dependsOn"
                        )
                    )
                seen.add(dependency)
    return problems


def _cycle_problems(works: Sequence[_WorkView]) -> list[ValidationProblem]:
    first: dict[str, _WorkView] = {}
    for work in works:
        if work.name is not None:
            first.setdefault(work.name, work)
    edges = {name: [dependency for _, dependency in work.depends_on] for name, work in first.items()}
    problems = []
    for cycle in find_cycles(edges):
        start, closing = first[cycle[0]], cycle[-2]
        position = next(position for position, name in start.depends_on if name == closing)
        problems.append(
            ValidationProblem(
                f"{start.path}.dependsOn[{position}]",
                f"{start.label} is part of a dependency cycle: {' -> '.join(cycle)} "
                "(each work waits for the one before it)",
            )
        )
    return problems


def _finally_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """A finally work is a plain batch work: it serves nothing, expands no matrix, reports no
    outputs (nothing runs after the finally works to read them) and always runs (no cache)."""
    listed = raw.get("finally")
    problems = []
    for index, work in enumerate(listed if isinstance(listed, list) else []):
        if not isinstance(work, Mapping):
            continue
        label = (
            f"finally work {work['name']!r}"
            if isinstance(work.get("name"), str)
            else f"finally work #{index}"
        )
        refused = {
            "serve": "a finally work is a batch work: a serve work cannot be one",
            "matrix": "a finally work runs once: it has no matrix",
            "outputs": "a finally work reports no outputs: nothing runs after the finally works to read them",
        }
        for field, why in refused.items():
            if work.get(field):
                problems.append(ValidationProblem(f"spec.finally[{index}].{field}", f"{label}: {why}"))
        cache = work.get("cache")
        if isinstance(cache, Mapping) and cache.get("enabled"):
            problems.append(
                ValidationProblem(
                    f"spec.finally[{index}].cache.enabled",
                    f"{label}: a finally work always runs, so it is never cached",
                )
            )
    return problems


def _approval_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """A gate is a work of the run (a finally work runs when no one waits for it), asks again in
    every run (never cached), and sets parameters of the flow, each at one gate at most."""
    params = raw.get("params")
    known = {
        param.get("name")
        for param in (params if isinstance(params, list) else [])
        if isinstance(param, Mapping)
    }
    set_at: dict[str, str] = {}
    problems = []
    for path, label, work in _listed_works(raw):
        approval = work.get("approval")
        if not isinstance(approval, Mapping):
            continue
        if path.startswith("spec.finally"):
            problems.append(
                ValidationProblem(
                    f"{path}.approval",
                    f"{label}: a finally work runs once the run has ended: no one can be asked to approve it",
                )
            )
            continue
        cache = work.get("cache")
        if isinstance(cache, Mapping) and cache.get("enabled"):
            problems.append(
                ValidationProblem(
                    f"{path}.cache.enabled",
                    f"{label}: a gate waits for a decision in every run, so it is never cached",
                )
            )
        names = approval.get("params")
        for index, name in enumerate(names if isinstance(names, list) else []):
            if not isinstance(name, str):
                continue
            where = f"{path}.approval.params[{index}]"
            if name not in known:
                problems.append(
                    ValidationProblem(
                        where, f"{label}: {name!r} is not a parameter of the flow (spec.params)"
                    )
                )
            elif name in set_at:
                problems.append(
                    ValidationProblem(
                        where,
                        f"{label}: parameter {name!r} is set at gate {set_at[name]!r} already; "
                        "a parameter is set at one gate at most",
                    )
                )
            else:
                set_at[name] = str(work.get("name"))
    return problems


def _metadata_key_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """Label, annotation and node selector keys; pydantic checks only the values."""
    places: list[tuple[str, str, Any]] = []
    pod_defaults = raw.get("podDefaults")
    if isinstance(pod_defaults, Mapping):
        places += [
            (f"spec.podDefaults.{field}", "podDefaults", pod_defaults.get(field)) for field in _MAP_FIELDS
        ]
    for path, label, work in _listed_works(raw):
        places += [(f"{path}.{field}", label, work.get(field)) for field in _MAP_FIELDS]
    problems = []
    for path, owner, mapping in places:
        if not isinstance(mapping, Mapping):
            continue
        is_labels = path.endswith(".labels")
        for key, value in mapping.items():
            key_path = f'{path}["{key}"]'
            reason = _qualified_name_problem(str(key))
            if reason:
                problems.append(ValidationProblem(key_path, f"{owner}: {key!r} is not a valid key: {reason}"))
            elif is_labels and (
                key in naming.RESERVED_LABELS or str(key).startswith(naming.RESERVED_LABEL_PREFIX)
            ):
                problems.append(
                    ValidationProblem(
                        key_path, f"{owner}: label {key!r} is set by the operator and cannot be overridden"
                    )
                )
            if path.endswith(".nodeSelector") and isinstance(value, str) and not naming.is_label_value(value):
                problems.append(ValidationProblem(key_path, f"{owner}: {value!r} is not a valid label value"))
    return problems


def _queue_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """A priority class orders queued Jobs: without a queue it would silently do nothing."""
    if not raw.get("priorityClassName") or raw.get("queueName"):
        return []
    if any(work.get("queueName") for work in _mappings(raw.get("works"))):
        return []
    return [
        ValidationProblem(
            "spec.priorityClassName",
            "orders queued Jobs only: set spec.queueName (or a work's queueName) too",
        )
    ]


def _cache_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """A cached work that requires a digest must name its image by one: a tag may move to another
    image, which its cache key would not see."""
    flow_cache: Mapping[str, Any] = raw["cache"] if isinstance(raw.get("cache"), Mapping) else {}
    problems = []
    works = raw.get("works")
    for index, work in enumerate(works if isinstance(works, list) else []):
        if not isinstance(work, Mapping) or work.get("serve") is not None:
            continue
        own: Mapping[str, Any] = work["cache"] if isinstance(work.get("cache"), Mapping) else {}

        def setting(field: str, own: Mapping[str, Any] = own) -> Any:
            return own.get(field) if own.get(field) is not None else flow_cache.get(field)

        image = (
            (work.get("container") or {}).get("image") if isinstance(work.get("container"), Mapping) else None
        )
        if (
            setting("enabled")
            and setting("requireDigest")
            and isinstance(image, str)
            and not is_digest(image)
        ):
            problems.append(
                ValidationProblem(
                    f"spec.works[{index}].container.image",
                    f"work {work.get('name')!r} sets cache.requireDigest: its image {image!r} must be "
                    "written by digest (image@sha256:...), as a tag may move to another image",
                )
            )
    return problems


def _workspace_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """What a work says of the workspace must fit what the flow has: a workspace, a free path and
    volume name for it, and no cache over files of one run."""
    workspace = raw.get("workspace")
    problems = []
    if isinstance(workspace, Mapping) and workspace.get("accessModes") == ["ReadOnlyMany"]:
        problems.append(
            ValidationProblem(
                "spec.workspace.accessModes",
                "a run's workspace starts empty: with ReadOnlyMany alone no work could write to it; "
                "add ReadWriteOnce or ReadWriteMany",
            )
        )
    for path, label, work in _listed_works(raw):
        own: Mapping[str, Any] = work["workspace"] if isinstance(work.get("workspace"), Mapping) else {}
        if work.get("workspace") is not None and not isinstance(workspace, Mapping):
            problems.append(
                ValidationProblem(
                    f"{path}.workspace",
                    f"{label} says how to mount the workspace, but the flow has none: set spec.workspace",
                )
            )
            continue
        if not isinstance(workspace, Mapping) or own.get("mount") is False:
            continue
        container: Mapping[str, Any] = work["container"] if isinstance(work.get("container"), Mapping) else {}
        for index, mount in enumerate(_mappings(container.get("volumeMounts"))):
            if (
                isinstance(mount.get("mountPath"), str)
                and mount["mountPath"].rstrip("/") == WORKSPACE_MOUNT_PATH
            ):
                problems.append(
                    ValidationProblem(
                        f"{path}.container.volumeMounts[{index}].mountPath",
                        f"{label} mounts the flow's workspace at {WORKSPACE_MOUNT_PATH}: mount this "
                        "volume elsewhere, or set workspace.mount: false on the work",
                    )
                )
        for index, volume in enumerate(_mappings(work.get("volumes"))):
            if volume.get("name") == WORKSPACE_VOLUME:
                problems.append(
                    ValidationProblem(
                        f"{path}.volumes[{index}].name",
                        f"{label}: the volume name {WORKSPACE_VOLUME!r} is the workspace's; choose another",
                    )
                )
        cache: Mapping[str, Any] = work["cache"] if isinstance(work.get("cache"), Mapping) else {}
        if cache.get("enabled") is True and own.get("readOnly") is not True:
            problems.append(
                ValidationProblem(
                    f"{path}.cache.enabled",
                    f"{label} writes to the workspace, whose files belong to one run and would be "
                    "missing from a later run that took the work from the cache: set "
                    "workspace.readOnly: true or workspace.mount: false on it, or leave its cache off",
                )
            )
    return problems


def _artifact_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """Artifacts are uploaded by a batch work's one pod: not by a matrix's many instances."""
    problems = []
    for path, label, work in _listed_works(raw):
        if work.get("matrix") is None:
            continue
        for index, output in enumerate(_mappings(work.get("outputs"))):
            if output.get("artifact") is not None:
                problems.append(
                    ValidationProblem(
                        f"{path}.outputs[{index}].artifact",
                        f"{label} is a matrix work: its instances would each upload the same artifact; "
                        "write the files to the workspace (spec.workspace) and upload them from a work "
                        "after the matrix",
                    )
                )
    return problems


def _schedule_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """The cron expression and the time zone: neither the CRD schema nor pydantic can read them."""
    problems = []
    schedule, time_zone = raw.get("schedule"), raw.get("timeZone")
    if isinstance(schedule, str):
        try:
            CronSchedule(schedule)
        except ScheduleError as error:
            problems.append(ValidationProblem("spec.schedule", str(error)))
    if isinstance(time_zone, str) and time_zone:
        try:
            load_time_zone(time_zone)
        except ScheduleError as error:
            problems.append(ValidationProblem("spec.timeZone", str(error)))
    return problems


def _reference_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """`$(...)` references in works' command, args and env: each must name a parameter of the flow,
    a declared output of an ancestor, the work's own matrix key, or the run, flow or work name."""
    works = _mappings(raw.get("works"))
    by_name = {work["name"]: work for work in works if isinstance(work.get("name"), str)}
    params = {param.get("name") for param in _mappings(raw.get("params"))}
    problems = []
    schedule_params = raw.get("scheduleParams")
    for name in schedule_params if isinstance(schedule_params, Mapping) else {}:
        if name not in params:
            known = ", ".join(sorted(str(param) for param in params)) or "none"
            problems.append(
                ValidationProblem(
                    f'spec.scheduleParams["{name}"]',
                    f"{name!r} names no parameter of the flow (spec.params has: {known})",
                )
            )
    defaults = raw.get("podDefaults")
    if isinstance(defaults, Mapping) and isinstance(defaults.get("env"), list):
        # Every work inherits these: only what every work can resolve may be referenced.
        try:
            found = list(container_references({"env": _mappings(defaults["env"])}))
        except BadReference as error:
            found = []
            problems.append(ValidationProblem("spec.podDefaults.env", f"podDefaults: {error}"))
        for where, reference in found:
            reason = _unresolvable(reference, params, by_name, set(), set())
            if reason:
                problems.append(ValidationProblem(f"spec.podDefaults.{where}", f"podDefaults: {reason}"))
    for path, label, work in _listed_works(raw):
        if not isinstance(work.get("container"), Mapping):
            continue
        in_finally = path.startswith("spec.finally[")
        # A finally work starts once every work has ended: any of them may have reported outputs.
        ancestors = set(by_name) if in_finally else _ancestors(by_name, work)
        keys: set[Any] = set()
        if isinstance(work.get("matrix"), Mapping) and not in_finally:
            matrix_problems, keys = _matrix_problems(
                work["matrix"], work, path, label, params, by_name, ancestors
            )
            problems += matrix_problems
        try:
            found = list(container_references(work["container"]))
        except BadReference as error:
            problems.append(ValidationProblem(f"{path}.container", f"{label}: {error}"))
            continue
        for where, reference in found:
            reason = _unresolvable(reference, params, by_name, ancestors, keys, in_finally)
            if reason:
                problems.append(ValidationProblem(f"{path}.container.{where}", f"{label}: {reason}"))
    return problems


def _matrix_problems(
    raw: Mapping[str, Any],
    work: Mapping[str, Any],
    work_path: str,
    label: str,
    params: set[Any],
    works: Mapping[str, Mapping[str, Any]],
    ancestors: set[str],
) -> tuple[list[ValidationProblem], set[Any]]:
    """A matrix that expands (or whose dynamic axes name an ancestor's declared output), on a work
    with an explicit command; and the keys `$(matrix.KEY)` may name."""
    path = f"{work_path}.matrix"
    try:
        matrix = parse_matrix(raw)
    except MatrixError as error:
        return [ValidationProblem(path, f"{label}: {error}")], set(raw) - RESERVED_MATRIX_KEYS
    problems = []
    if not (work.get("container") or {}).get("command"):
        problems.append(
            ValidationProblem(
                f"{work_path}.container.command",
                f"{label}: a matrix work needs an explicit command: its pods start through a launcher "
                "that sets each instance's values, then runs the command (the image's entrypoint is "
                "not known to it)",
            )
        )
    for key, reference in matrix.dynamic.items():
        # A matrix work's output is the list of its instances' values: an axis too, up to a matrix's
        # size, as it is kept in a ConfigMap rather than in the status.
        reason = _unresolvable(reference, params, works, ancestors, set())
        if reason:
            problems.append(ValidationProblem(f"{path}.{key}", f"{label}: {reason}"))
    if not matrix.dynamic:
        try:
            expand(matrix)
        except MatrixError as error:
            problems.append(ValidationProblem(path, f"{label}: {error}"))
    return problems, matrix.keys


def _unresolvable(
    reference: Reference,
    params: set[Any],
    works: Mapping[str, Mapping[str, Any]],
    ancestors: set[str],
    matrix_keys: set[Any],
    in_finally: bool = False,
) -> str | None:
    if reference.kind == "run" and reference.name and not in_finally:
        return f"{reference.text} is known in finally works only, which run once the run's works have ended"
    if reference.kind == "params" and reference.name not in params:
        listed = ", ".join(sorted(str(name) for name in params)) or "none"
        return f"{reference.text} names no parameter of the flow (spec.params has: {listed})"
    if reference.kind == "matrix" and reference.name not in matrix_keys:
        return f"{reference.text} names no key of the work's matrix"
    if reference.kind != "works":
        return None
    if reference.work not in works:
        return f"{reference.text} names {reference.work!r}, which is not a work of this flow"
    if reference.work not in ancestors:
        return (
            f"{reference.text}: {reference.work!r} is not among the works this one depends on "
            "(directly or through others), so its outputs may not exist when it starts"
        )
    outputs = {output.get("name"): output for output in _mappings(works[reference.work].get("outputs"))}
    if reference.name not in outputs:
        listed = ", ".join(str(name) for name in outputs) or "none"
        return (
            f"{reference.text}: work {reference.work!r} declares no output {reference.name!r} "
            f"(its outputs: {listed})"
        )
    if reference.field == "path" and not isinstance(outputs[reference.name].get("artifact"), Mapping):
        return (
            f"{reference.text}: output {reference.name!r} of work {reference.work!r} is a value, not an "
            f"artifact: use $(works.{reference.work}.outputs.{reference.name})"
        )
    return None


def _mappings(items: Any) -> list[Mapping[str, Any]]:
    """The mappings of a list read leniently from raw input (anything else: none)."""
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _ancestors(works: Mapping[str, Mapping[str, Any]], work: Mapping[str, Any]) -> set[str]:
    """Every work `work` depends on, directly or through others (a cycle does not hang it)."""
    seen: set[str] = set()
    queue = deque([work])
    while queue:
        current = queue.popleft()
        dependencies = current.get("dependsOn")
        for name in dependencies if isinstance(dependencies, list) else []:
            if isinstance(name, str) and name not in seen and name in works:
                seen.add(name)
                queue.append(works[name])
    return seen


@functools.cache
def _kubernetes_schemas() -> dict[str, dict[str, Any]]:
    try:
        return k8s_schemas.load_schemas()
    except (OSError, ValueError, KeyError):
        # Without the stored schemas (a trimmed install) the API server still checks these objects.
        return {}


def _embedded_object_problems(raw: Mapping[str, Any]) -> list[ValidationProblem]:
    """Containers, volumes, tolerations, ... checked against the upstream Kubernetes schemas."""
    owners: list[tuple[str, str, Any, type[BaseModel]]] = []
    pod_defaults = raw.get("podDefaults")
    if isinstance(pod_defaults, Mapping):
        owners.append(("spec.podDefaults", "podDefaults", pod_defaults, PodDefaults))
    for path, label, work in _listed_works(raw):
        owners.append((path, label, work, Work))
    schemas = _kubernetes_schemas()
    problems = []
    for path, owner, body, model in owners:
        for field, (shape, is_list) in kubernetes_shape_fields(model).items():
            value = body.get(field)
            if shape.definition not in schemas or value is None:
                continue
            schema = dict(schemas[shape.definition])
            if shape.required is not None:
                schema["required"] = list(shape.required)
            items = enumerate(value) if is_list and isinstance(value, list) else []
            checked = (
                [(f"{path}.{field}[{i}]", item) for i, item in items]
                if is_list
                else [(f"{path}.{field}", value)]
            )
            for item_path, item in checked:
                if not isinstance(item, Mapping):
                    continue  # pydantic has reported it already
                for problem_path, message in k8s_schemas.value_problems(item, schema, item_path):
                    problems.append(ValidationProblem(problem_path, f"{owner}: {message}"))
    return problems


def _qualified_name_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_1123_SUBDOMAIN.match(prefix)):
        return "the prefix before '/' must be a DNS-1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            "the name must be at most 63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _flow_name_problems(flow_name: str) -> list[ValidationProblem]:
    if len(flow_name) > 253 or not _DNS_1123_SUBDOMAIN.match(flow_name):
        return [
            ValidationProblem(
                "metadata.name",
                f"flow name {flow_name!r} is not a DNS-1123 subdomain (lower case letters, digits, '-' "
                "and '.', at most 253 characters)",
            )
        ]
    return []


def _problem_from_pydantic(raw: Mapping[str, Any], detail: Mapping[str, Any]) -> ValidationProblem:
    location = tuple(detail["loc"])
    path = "spec" + _render_location(location)
    message = str(detail["msg"]).removeprefix("Value error, ")
    pattern = (detail.get("ctx") or {}).get("pattern")
    if pattern in _PATTERN_MEANINGS:
        message = f"must be {_PATTERN_MEANINGS[pattern]}"
    if detail["type"] == "extra_forbidden":
        message = "unknown field"
    elif detail["type"] == "missing":
        message = "required field is missing"
    elif isinstance(detail.get("input"), str | int | float | bool) and detail["type"] != "missing":
        message = f"{message} (got {detail['input']!r})"
    owner = _owner_of(raw, location)
    return ValidationProblem(path, f"{owner}: {message}" if owner else message)


def _render_location(location: Sequence[Any]) -> str:
    rendered = ""
    previous: Any = None
    for part in location:
        if isinstance(part, int):
            rendered += f"[{part}]"
        elif previous in _MAP_FIELDS:
            rendered += f'["{part}"]'
        else:
            rendered += f".{part}"
        previous = part
    return rendered


def _owner_of(raw: Mapping[str, Any], location: Sequence[Any]) -> str | None:
    """`work 'name'` for errors inside a work, so every message names the offending work."""
    if location[:1] == ("podDefaults",):
        return "podDefaults"
    if len(location) < 2 or location[0] != "works" or not isinstance(location[1], int):
        return None
    works = raw.get("works")
    if not isinstance(works, list) or location[1] >= len(works):
        return None
    work = works[location[1]]
    name = work.get("name") if isinstance(work, Mapping) else None
    return f"work {name!r}" if isinstance(name, str) else f"work #{location[1]}"


def _strongly_connected_components(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm with an explicit stack instead of recursion."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            descended = False
            while next_edge < len(edges):
                target = edges[next_edge]
                next_edge += 1
                if target not in index_of:
                    work.append((node, next_edge))
                    work.append((target, 0))
                    descended = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index_of[target])
            if descended:
                continue
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _shortest_cycle(start: str, members: set[str], dependents: Mapping[str, Sequence[str]]) -> list[str]:
    """Breadth-first search from `start` back to itself, staying inside one component."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in dependents[node]:
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target in members and target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle through {start} inside its component")


_ASCII_DIGITS = re.compile(r"([0-9]+)")


def _natural_key(path: str) -> list[tuple[int, str]]:
    """Sort key that puts spec.works[2] before spec.works[10]. Only ASCII digits count as a number:
    a key of the spec may hold others ("²" is a digit to `str.isdigit`, not to `int`)."""
    return [
        (int(part), "") if _ASCII_DIGITS.fullmatch(part) else (-1, part)
        for part in _ASCII_DIGITS.split(path)
        if part
    ]


def _unique(problems: list[ValidationProblem]) -> list[ValidationProblem]:
    return list(dict.fromkeys(problems))
