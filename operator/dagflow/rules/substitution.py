"""References in a work's command, args and env values: `$(params.NAME)`, `$(works.WORK.outputs.KEY)`,
`$(matrix.KEY)`, `$(run)`, `$(flow.name)` and `$(work.name)`; in a finally work also
`$(run.phase)` and `$(run.failedWorks)`.

The operator replaces them when it builds the work's Job or Deployment. Kubernetes expands
`$(VAR)` in the same fields from the container's environment, so the two are told apart by name: a
reference is the operator's when it is `run` or starts with `params.`, `works.`, `matrix.`, `run.`,
`flow.` or `work.`; anything else (`$(HOME)`, `$(MY_VAR)`) is left for Kubernetes. `$$(...)` is Kubernetes'
escape for a literal `$(...)` and is left alone for it to undo. A replaced value has its `$` doubled,
so nothing in a parameter or an output is expanded again by Kubernetes.

A matrix work's pods start through a launcher that replaces `$(matrix.KEY)` after Kubernetes'
expansion, in the arguments and in the env values that hold a matrix reference. In those fields a
replaced value also has each `$(matrix.` written `$$(matrix.`, which the launcher reads as the
literal text: a parameter `v$(matrix.shard)` reaches the program as it is.

Linux refuses one argument or environment string longer than 128 KiB (`MAX_ARG_STRLEN`, the
terminating NUL included): a field that a replaced value makes longer is refused here, naming the
reference, rather than by `execve` in the pod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# `$$` first, so that the escape is consumed before what follows it is read as a reference.
_TOKEN = re.compile(r"\$\$|\$\(([^()]*)\)")
_OUR_ROOTS = ("params", "works", "matrix", "run", "flow", "work")
# What the launcher reads as a literal `$(matrix.`, in the fields it expands (images/launcher).
_MATRIX_OPENING = "$(matrix."
_LAUNCHER_ESCAPE = "$$(matrix."
# The most Linux passes as one argument or "NAME=value" environment string, its NUL included.
MAX_ARGUMENT_BYTES = 128 * 1024
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_WORK_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_FORMS = {
    "params": re.compile(rf"params\.(?P<name>{_NAME})"),
    "works": re.compile(rf"works\.(?P<work>{_WORK_NAME})\.outputs\.(?P<name>{_NAME})(\.(?P<field>path))?"),
    "matrix": re.compile(rf"matrix\.(?P<name>{_NAME})"),
    "run": re.compile(r"run\.(?P<name>phase|failedWorks)"),
    "flow": re.compile(r"flow\.(?P<name>name)"),
    "work": re.compile(r"work\.(?P<name>name)"),
}
FORMS_HELP = (
    "$(params.NAME), $(works.WORK.outputs.KEY), $(works.WORK.outputs.KEY.path) of an artifact, "
    "$(matrix.KEY), $(run), $(flow.name), $(work.name), "
    "or in a finally work $(run.phase) and $(run.failedWorks)"
)
# What a finally work knows of the run it ends.
RUN_OUTCOME_NAMES = ("phase", "failedWorks")


@dataclass(frozen=True)
class Reference:
    """One `$(...)` the operator resolves. `kind` is params, works, matrix, run, flow or work
    (`name` is set for `$(run.phase)` and `$(run.failedWorks)`, empty for `$(run)`); `field` is
    `path` for where an artifact output is downloaded (`$(works.WORK.outputs.KEY.path)`)."""

    text: str
    kind: str
    name: str = ""
    work: str = ""
    field: str = ""


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
    found = match.groupdict()
    return Reference(
        text=f"$({inner})",
        kind=root,
        name=found["name"],
        work=found.get("work") or "",
        field=found.get("field") or "",
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
    # A finally work's: how the run's works ended, and which of them failed. None for other works.
    run_phase: str | None = None
    failed_works: tuple[str, ...] = ()
    # A finally work's: a reference to the outputs of a work that did not succeed is empty.
    outputs_optional: bool = False
    # Where the artifact outputs of the work's ancestors are downloaded in its pods, by work and key:
    # `$(works.W.outputs.K.path)` is that path, `$(works.W.outputs.K)` the artifact's URI.
    artifact_paths: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def resolve(self, reference: Reference) -> Any:
        if reference.kind == "run":
            if not reference.name:
                return str(self.run)
            if self.run_phase is None:
                raise BadReference(f"{reference.text} is known in finally works only")
            return self.run_phase if reference.name == "phase" else list(self.failed_works)
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
        artifact_path = self.artifact_paths.get(reference.work, {}).get(reference.name)
        if reference.field == "path" and artifact_path is None:
            raise BadReference(
                f"{reference.text}: output {reference.name} of work {reference.work} is not an artifact"
            )
        reported = self.outputs.get(reference.work)
        if reported is None and self.outputs_optional:
            return ""
        if reported is None:
            raise BadReference(f"{reference.text}: work {reference.work} has reported no outputs")
        if reference.name not in reported:
            raise BadReference(
                f"{reference.text}: work {reference.work} did not report the output {reference.name}"
            )
        if artifact_path is None:
            return reported[reference.name]
        if reference.field == "path":
            return artifact_path
        artifact = reported[reference.name]
        return artifact.get("uri", "") if isinstance(artifact, Mapping) else artifact


def render(value: Any) -> str:
    """A value as it goes into a command line or an env value: strings as they are, anything
    else as compact JSON (a list output becomes `["a","b"]`)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def substitute(text: str, values: Values, launched: bool = False) -> str:
    """`text` with the operator's references replaced; BadReference names the first unresolved one.
    `launched`: the field goes through a matrix work's launcher, which must not read a replaced
    value's `$(matrix.` as a reference."""
    return _substitute(text, values, launched)[0]


def _substitute(text: str, values: Values, launched: bool) -> tuple[str, int, tuple[int, str] | None]:
    """The field as written into the manifest; how many bytes the program receives of it once
    Kubernetes undid the escapes; and the largest replaced value's size with its reference."""
    received = 0
    largest: tuple[int, str] | None = None
    pieces: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        literal = text[position : match.start()]
        pieces.append(literal)
        received += len(literal.encode())
        position = match.end()
        inner = match.group(1)
        reference = parse_reference(inner) if inner is not None and is_ours(inner) else None
        if reference is None or (reference.kind == "matrix" and values.matrix is None):
            pieces.append(match.group(0))
            # Kubernetes turns `$$` into `$`; anything else stays for it or for the launcher.
            received += 1 if match.group(0) == "$$" else len(match.group(0).encode())
            continue
        value = render(values.resolve(reference))
        size = len(value.encode())
        received += size
        if largest is None or size > largest[0]:
            largest = (size, reference.text)
        if launched:
            value = value.replace(_MATRIX_OPENING, _LAUNCHER_ESCAPE)
        pieces.append(value.replace("$", "$$"))
    tail = text[position:]
    pieces.append(tail)
    received += len(tail.encode())
    return "".join(pieces), received, largest


def _fitting(where: str, text: str, values: Values, launched: bool, name: str | None = None) -> str:
    """A field substituted, or BadReference when the string the program receives would be longer
    than Linux passes as one argument (`name`: an env value, received as `NAME=value`)."""
    substituted, received, largest = _substitute(text, values, launched)
    if name is not None:
        received += len(name.encode()) + 1
    if received + 1 > MAX_ARGUMENT_BYTES and largest is not None:
        kind = "environment string" if name is not None else "argument"
        raise BadReference(
            f"{where}: {largest[1]} is {largest[0]:,} bytes, which makes the {kind} {received + 1:,} bytes "
            f"with its terminating NUL; Linux passes at most {MAX_ARGUMENT_BYTES:,} bytes (128 KiB) as one "
            "argument or environment string: pass the value through a file or a volume instead"
        )
    return substituted


def substitute_container(
    container: Mapping[str, Any], values: Values, launched: bool = False
) -> dict[str, Any]:
    """A copy of a core/v1 Container with references replaced in command, args and env values.
    `launched`: a matrix work's container, whose command and args and whose env values with a
    matrix reference (`launcher_env_names`) go through the launcher."""
    result = dict(container)
    for key in ("command", "args"):
        if key in result:
            result[key] = [
                _fitting(f"{key}[{index}]", str(item), values, launched)
                for index, item in enumerate(result[key])
            ]
    if "env" in result:
        through_launcher = set(launcher_env_names(result)) if launched else set()
        result["env"] = [
            {
                **entry,
                "value": _fitting(
                    f"env[{entry.get('name')}]",
                    str(entry["value"]),
                    values,
                    entry.get("name") in through_launcher,
                    name=str(entry.get("name")),
                ),
            }
            if "value" in entry
            else entry
            for entry in result["env"]
        ]
    return result


def launcher_env_names(container: Mapping[str, Any]) -> list[str]:
    """The env variables of a matrix work's container whose value, as its author wrote it, holds a
    `$(matrix.KEY)`: the only ones its launcher expands."""
    return [
        str(entry.get("name"))
        for entry in container.get("env") or []
        if "value" in entry
        and any(reference.kind == "matrix" for reference in references(str(entry["value"])))
    ]


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
