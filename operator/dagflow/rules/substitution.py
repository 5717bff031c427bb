"""References in a work's command, args and env values: `$(params.NAME)`, `$(works.WORK.outputs.KEY)`,
`$(matrix.KEY)`, `$(run)`, `$(flow.name)` and `$(work.name)`.

The operator replaces them when it builds the work's Job or Deployment. Kubernetes expands
`$(VAR)` in the same fields from the container's environment, so the two are told apart by name: a
reference is the operator's when it is `run` or starts with `params.`, `works.`, `matrix.`, `flow.`
or `work.`; anything else (`$(HOME)`, `$(MY_VAR)`) is left for Kubernetes. `$$(...)` is Kubernetes'
escape for a literal `$(...)` and is left alone for it to undo. A replaced value has its `$` doubled,
so nothing in a parameter or an output is expanded again by Kubernetes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# `$$` first, so that the escape is consumed before what follows it is read as a reference.
_TOKEN = re.compile(r"\$\$|\$\(([^()]*)\)")
_OUR_ROOTS = ("params", "works", "matrix", "flow", "work")
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_WORK_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_FORMS = {
    "params": re.compile(rf"params\.(?P<name>{_NAME})"),
    "works": re.compile(rf"works\.(?P<work>{_WORK_NAME})\.outputs\.(?P<name>{_NAME})"),
    "matrix": re.compile(rf"matrix\.(?P<name>{_NAME})"),
    "flow": re.compile(r"flow\.(?P<name>name)"),
    "work": re.compile(r"work\.(?P<name>name)"),
}
FORMS_HELP = "$(params.NAME), $(works.WORK.outputs.KEY), $(matrix.KEY), $(run), $(flow.name) or $(work.name)"


@dataclass(frozen=True)
class Reference:
    """One `$(...)` the operator resolves. `kind` is params, works, matrix, run, flow or work."""

    text: str
    kind: str
    name: str = ""
    work: str = ""


class BadReference(ValueError):
    """A reference the operator cannot resolve; the message names it."""


def is_ours(inner: str) -> bool:
    return inner == "run" or (inner.split(".", 1)[0] in _OUR_ROOTS and "." in inner)


def parse_reference(inner: str) -> Reference:
    """The reference inside `$(...)`; BadReference when it is ours in name but not in form."""
    if inner == "run":
        return Reference(text=f"$({inner})", kind="run")
    root = inner.split(".", 1)[0]
    match = _FORMS[root].fullmatch(inner)
    if match is None:
        raise BadReference(f"$({inner}) is not a reference the operator knows: use {FORMS_HELP}")
    return Reference(
        text=f"$({inner})", kind=root, name=match.group("name"), work=match.groupdict().get("work") or ""
    )


def references(text: str) -> Iterator[Reference]:
    """The operator's references in `text`, in order; BadReference for a malformed one."""
    for match in _TOKEN.finditer(text):
        inner = match.group(1)
        if inner is not None and is_ours(inner):
            yield parse_reference(inner)


@dataclass(frozen=True)
class Values:
    """What references of one work resolve to in one run."""

    run: int
    flow: str
    work: str
    params: Mapping[str, str] = field(default_factory=dict)
    # Outputs of the work's ancestors, by work and key.
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The instance's matrix values; None leaves $(matrix.KEY) in place, for the launcher that starts
    # each instance of a matrix work's pods to replace.
    matrix: Mapping[str, str] | None = None

    def resolve(self, reference: Reference) -> Any:
        if reference.kind == "run":
            return str(self.run)
        if reference.kind == "flow":
            return self.flow
        if reference.kind == "work":
            return self.work
        if reference.kind == "params":
            if reference.name not in self.params:
                raise BadReference(f"{reference.text}: the flow has no parameter {reference.name}")
            return self.params[reference.name]
        if reference.kind == "matrix":
            if self.matrix is None or reference.name not in self.matrix:
                raise BadReference(f"{reference.text}: the work has no matrix key {reference.name}")
            return self.matrix[reference.name]
        reported = self.outputs.get(reference.work)
        if reported is None:
            raise BadReference(f"{reference.text}: work {reference.work} has reported no outputs")
        if reference.name not in reported:
            raise BadReference(
                f"{reference.text}: work {reference.work} did not report the output {reference.name}"
            )
        return reported[reference.name]


def render(value: Any) -> str:
    """A value as it goes into a command line or an env value: strings as they are, anything
    else as compact JSON (a list output becomes `["a","b"]`)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def substitute(text: str, values: Values) -> str:
    """`text` with the operator's references replaced; BadReference names the first unresolved one."""

    def replace(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner is None or not is_ours(inner):
            return match.group(0)
        reference = parse_reference(inner)
        if reference.kind == "matrix" and values.matrix is None:
            return match.group(0)
        return render(values.resolve(reference)).replace("$", "$$")

    return _TOKEN.sub(replace, text)


def substitute_container(container: Mapping[str, Any], values: Values) -> dict[str, Any]:
    """A copy of a core/v1 Container with references replaced in command, args and env values."""
    result = dict(container)
    for key in ("command", "args"):
        if key in result:
            result[key] = [substitute(str(item), values) for item in result[key]]
    if "env" in result:
        result["env"] = [
            {**entry, "value": substitute(str(entry["value"]), values)} if "value" in entry else entry
            for entry in result["env"]
        ]
    return result


def container_references(container: Mapping[str, Any]) -> Iterator[tuple[str, Reference]]:
    """Every reference of the operator's in a container, with where it is (`args[2]`, `env[HOST]`)."""
    for key in ("command", "args"):
        for index, item in enumerate(container.get(key) or []):
            for reference in references(str(item)):
                yield f"{key}[{index}]", reference
    for entry in container.get("env") or []:
        if "value" in entry:
            for reference in references(str(entry["value"])):
                yield f"env[{entry.get('name')}]", reference
