"""A work's matrix: the combinations of values it runs once each.

```yaml
matrix:
  model: [linear, forest, gbr]         # an axis: a list of values
  lr: ["0.1", "0.01"]
  shard: $(works.split.outputs.shards) # an axis from an ancestor's list output (dynamic)
  exclude: [{model: linear, lr: "0.01"}]
  include: [{model: linear, lr: "0.5"}, {model: gbr, depth: "3"}]
```

Combinations are the cartesian product of the axes, axes in the order of their names (the API server
keeps no key order) and values in the order listed; then `exclude` removes every combination that
matches all the keys of one of its entries; then each `include` entry either adds keys to every
combination whose axis values it matches (when it only adds new keys) or becomes a combination of
its own (GitHub Actions' rules). Values are strings; numbers and booleans are taken as their JSON
text. The instance's index is its position in that list: it never depends on anything but the spec
and, for a dynamic axis, the output it reads. An axis lists each value once, dynamic axes
included. A key only some combinations have is an empty string in the others.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagflow.api.models import VALUE_NAME_MAX_LENGTH, VALUE_NAME_PATTERN
from dagflow.rules.substitution import Reference, parse_reference, references

INCLUDE, EXCLUDE = "include", "exclude"
RESERVED_KEYS = frozenset({INCLUDE, EXCLUDE})
# Most instances one matrix work may have: one Indexed Job of that many completions.
MAX_INSTANCES = 20_000
# The combinations go to the pods in a ConfigMap, which holds at most 1 MiB.
MAX_VALUES_BYTES = 900 * 1024

Combination = dict[str, str]
_KEY = re.compile(VALUE_NAME_PATTERN)


class MatrixError(ValueError):
    """A matrix that cannot be expanded; the message says why."""


@dataclass(frozen=True)
class MatrixSpec:
    """A matrix as written: its axes (a list of values, or a reference to a list output), and the
    include and exclude entries."""

    axes: Mapping[str, Sequence[str] | Reference]
    include: Sequence[Combination] = ()
    exclude: Sequence[Combination] = ()

    @property
    def keys(self) -> set[str]:
        """Every key a combination may have: the axes and the keys include entries add."""
        return set(self.axes) | {key for entry in self.include for key in entry}

    @property
    def dynamic(self) -> dict[str, Reference]:
        return {key: axis for key, axis in self.axes.items() if isinstance(axis, Reference)}


def as_value(value: Any, where: str) -> str:
    """A matrix value as text: strings as they are, numbers and booleans as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise MatrixError(
        f"{where}: a matrix value must be a string, a number or a boolean, not {type(value).__name__}"
    )


def parse_matrix(raw: Mapping[str, Any]) -> MatrixSpec:
    """The matrix of a work's spec; MatrixError naming what is wrong."""
    axes: dict[str, Sequence[str] | Reference] = {}
    for key, axis in sorted(raw.items()):
        if key in RESERVED_KEYS:
            continue
        _check_key(key, f"matrix.{key}")
        if isinstance(axis, str):
            axes[key] = _dynamic_axis(key, axis)
        elif isinstance(axis, list):
            if not axis:
                raise MatrixError(f"matrix.{key}: an axis needs at least one value")
            values = [as_value(value, f"matrix.{key}[{index}]") for index, value in enumerate(axis)]
            if len(set(values)) != len(values):
                raise MatrixError(f"matrix.{key}: a value is listed twice")
            axes[key] = values
        else:
            raise MatrixError(
                f"matrix.{key}: an axis is a list of values or a reference to a list output, "
                f"such as $(works.split.outputs.shards)"
            )
    include = _entries(raw.get(INCLUDE), INCLUDE)
    exclude = _entries(raw.get(EXCLUDE), EXCLUDE)
    if not axes and not include:
        raise MatrixError("a matrix needs at least one axis or include entry")
    for index, entry in enumerate(exclude):
        unknown = set(entry) - set(axes)
        if unknown:
            raise MatrixError(
                f"matrix.exclude[{index}]: {', '.join(sorted(unknown))} is not an axis of the matrix"
            )
    return MatrixSpec(axes=axes, include=include, exclude=exclude)


def expand(matrix: MatrixSpec, resolved: Mapping[str, Any] | None = None) -> list[Combination]:
    """The matrix's combinations in index order. `resolved` gives the value of each dynamic axis
    (the list output it references); MatrixError when one is missing, not a list, or the matrix has
    too many instances."""
    axes: dict[str, Sequence[str]] = {}
    for key, axis in matrix.axes.items():
        if isinstance(axis, Reference):
            axes[key] = _resolved_axis(key, axis, (resolved or {}).get(key, _MISSING))
        else:
            axes[key] = axis
    size = 1
    for values in axes.values():
        size *= len(values)
    if axes and size > MAX_INSTANCES * 4:
        raise MatrixError(
            f"the matrix has {size} combinations; a matrix work may have at most {MAX_INSTANCES}"
        )
    keys = list(axes)
    combinations = (
        [dict(zip(keys, chosen, strict=True)) for chosen in itertools.product(*axes.values())] if axes else []
    )
    combinations = [
        combo for combo in combinations if not any(_matches(combo, entry) for entry in matrix.exclude)
    ]
    for entry in matrix.include:
        _apply_include(combinations, entry, set(keys))
    if not combinations:
        raise MatrixError("the matrix has no combination left after exclude")
    if len(combinations) > MAX_INSTANCES:
        raise MatrixError(
            f"the matrix has {len(combinations)} combinations; a matrix work may have at most {MAX_INSTANCES}"
        )
    if values_size(combinations) > MAX_VALUES_BYTES:
        raise MatrixError(
            f"the matrix's values take {values_size(combinations)} bytes; at most {MAX_VALUES_BYTES} fit "
            "in the ConfigMap that brings them to the pods"
        )
    return combinations


def values_size(combinations: Sequence[Combination]) -> int:
    return len(encode_values(combinations).encode())


def encode_values(combinations: Sequence[Combination]) -> str:
    """The combinations as the pods' launcher reads them: a JSON list, one object per index.

    A key that only some combinations have (an `include` entry added it) is an empty string in the
    others, as in GitHub Actions: `$(matrix.depth)` is then empty, never a launch that fails."""
    keys = sorted({key for combination in combinations for key in combination})
    filled = [{key: combination.get(key, "") for key in keys} for combination in combinations]
    return json.dumps(filled, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def static_size(matrix: MatrixSpec) -> int | None:
    """How many instances a matrix without dynamic axes has; None when it has dynamic ones."""
    if matrix.dynamic:
        return None
    return len(expand(matrix))


_MISSING = object()


def _dynamic_axis(key: str, text: str) -> Reference:
    found = list(references(text))
    if len(found) != 1 or found[0].text != text.strip() or found[0].kind != "works":
        raise MatrixError(
            f"matrix.{key}: a dynamic axis is exactly one reference to a list output of an ancestor, "
            f"such as $(works.split.outputs.shards), not {text!r}"
        )
    return parse_reference(found[0].text[2:-1])


def _resolved_axis(key: str, reference: Reference, value: Any) -> list[str]:
    if value is _MISSING:
        raise MatrixError(f"matrix.{key}: {reference.text} has no value yet")
    if not isinstance(value, list):
        raise MatrixError(f"matrix.{key}: {reference.text} must be a list, not {type(value).__name__}")
    if not value:
        raise MatrixError(f"matrix.{key}: {reference.text} is an empty list, so the work has no instance")
    values = [
        item if isinstance(item, str) else json.dumps(item, separators=(",", ":"), sort_keys=True)
        for item in value
    ]
    # As in a static axis: two instances of the same values would do the same work twice.
    repeated = [item for item, count in Counter(values).items() if count > 1]
    if repeated:
        shown = ", ".join(json.dumps(item, ensure_ascii=False) for item in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise MatrixError(
            f"matrix.{key}: {reference.text} lists {shown}{more} more than once; "
            "an axis's values must be distinct"
        )
    return values


def _check_key(key: str, where: str) -> None:
    if len(key) > VALUE_NAME_MAX_LENGTH or not _KEY.match(key):
        raise MatrixError(
            f"{where}: {key!r} is not a matrix key: a letter or '_', then letters, digits, '_' or '-' "
            f"(at most {VALUE_NAME_MAX_LENGTH} characters)"
        )


def _entries(raw: Any, name: str) -> list[Combination]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MatrixError(f"matrix.{name}: a list of objects of keys to values")
    entries = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not entry:
            raise MatrixError(f"matrix.{name}[{index}]: an object of keys to values, with at least one key")
        for key in entry:
            _check_key(str(key), f"matrix.{name}[{index}]")
        entries.append(
            {
                str(key): as_value(value, f"matrix.{name}[{index}].{key}")
                for key, value in sorted(entry.items())
            }
        )
    return entries


def _matches(combination: Mapping[str, str], entry: Mapping[str, str]) -> bool:
    return all(combination.get(key) == value for key, value in entry.items())


def _apply_include(combinations: list[Combination], entry: Combination, axis_keys: set[str]) -> None:
    """GitHub Actions' include: the entry's keys go into every combination whose axis values it
    matches (axis values are never overwritten, added ones may be); an entry that matches none is a
    combination of its own."""
    on_axes = {key: value for key, value in entry.items() if key in axis_keys}
    matched = [combination for combination in combinations if _matches(combination, on_axes)]
    for combination in matched:
        combination.update(entry)
    if not matched:
        combinations.append(dict(entry))


__all__ = [
    "Combination",
    "MatrixError",
    "MatrixSpec",
    "encode_values",
    "expand",
    "parse_matrix",
    "static_size",
]
