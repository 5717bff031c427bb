"""Outputs of a work: a small JSON object its container writes to its termination message file
(`/dev/termination-log` unless the container says otherwise).

The kubelet keeps at most 4096 bytes of that file (less when a pod has many containers), cutting
the rest, so a bigger object arrives as broken JSON and the work fails saying so. The operator keeps
the declared keys only, at most `MAX_OUTPUTS_BYTES` of them as compact JSON, in the work's status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_OUTPUTS_BYTES = 1024
# What the kubelet keeps of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096


@dataclass(frozen=True)
class CollectedOutputs:
    """Where the outputs of a matrix work's instances went (a ConfigMap), why they could not, or
    what their ConfigMap waits for."""

    config_map: str | None = None
    error: str | None = None
    waiting: str | None = None


class OutputsError(ValueError):
    """Outputs the operator cannot take; the message says why, for the work's status."""


def outputs_size(outputs: dict[str, Any]) -> int:
    return len(json.dumps(outputs, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())


def parse_outputs(message: str | None, declared: Sequence[str]) -> dict[str, Any]:
    """The declared outputs in a termination message; OutputsError when it is not a JSON object,
    lacks a declared key, or is too big."""
    text = (message or "").strip()
    if not text:
        raise OutputsError(
            f"reported no outputs: declared {', '.join(declared)}, its termination message is empty "
            "(write a JSON object to /dev/termination-log)"
        )
    try:
        reported = json.loads(text)
    except json.JSONDecodeError as error:
        cut = (
            f" (the kubelet keeps only {TERMINATION_MESSAGE_LIMIT} bytes of it)"
            if len(text.encode()) >= TERMINATION_MESSAGE_LIMIT - 64
            else ""
        )
        raise OutputsError(f"its outputs are not JSON{cut}: {error.msg} at character {error.pos}") from None
    if not isinstance(reported, dict):
        raise OutputsError(f"its outputs must be a JSON object, not {type(reported).__name__}")
    missing = [key for key in declared if key not in reported]
    if missing:
        raise OutputsError(f"did not report the declared output(s) {', '.join(missing)}")
    kept = {key: reported[key] for key in declared}
    size = outputs_size(kept)
    if size > MAX_OUTPUTS_BYTES:
        raise OutputsError(
            f"its outputs are {size} bytes, above the limit of {MAX_OUTPUTS_BYTES} bytes a work may report"
        )
    return kept


# A ConfigMap holds at most 1 MiB; the outputs of a matrix work's instances go into one.
MAX_COLLECTED_BYTES = 1000 * 1024


def gather_outputs(
    messages: Mapping[int, str], instances: int, declared: Sequence[str]
) -> dict[str, list[Any]]:
    """The outputs of a matrix work's instances, by output name: the list of the instances' values
    in index order. OutputsError names the first instance whose outputs cannot be taken."""
    gathered: dict[str, list[Any]] = {key: [] for key in declared}
    for index in range(instances):
        if index not in messages:
            raise OutputsError(f"the pod of instance {index} is gone: its outputs cannot be read")
        try:
            reported = parse_outputs(messages[index], declared)
        except OutputsError as error:
            raise OutputsError(f"instance {index}: {error}") from None
        for key in declared:
            gathered[key].append(reported[key])
    size = len(json.dumps(gathered, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_COLLECTED_BYTES:
        raise OutputsError(
            f"its instances' outputs take {size} bytes together, more than the {MAX_COLLECTED_BYTES} "
            "bytes of the ConfigMap that holds them"
        )
    return gathered
