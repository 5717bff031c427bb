"""Which run of a flow is the current one: pure, from the flow's status and its observed children.

A run is one pass over the flow's works; a new spec (a new generation) starts the next one. The
status alone cannot say which run is current: a status patch may be held back (big flows), lost
(the operator killed between creating Jobs and patching), or read from a watch event older than
the last patch. Every child therefore carries its run (label) and the generation it was built
from (annotation), and the current run is the newest run known from either, carried on when it
was made for the flow's current generation, else followed by a new one. Runs only ever move
forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def current_run(
    status: Mapping[str, Any], generation: int, children: Iterable[tuple[int, int | None]]
) -> int:
    """The run that runs `generation` of the spec.

    `children` holds (run, generation stamped on it) for every child of this flow (one flow: same
    uid). A child without a stamp is taken as made for the generation its run was recorded with.
    """
    status_run = int(status.get("run") or 0)
    newest_generation: dict[int, int | None] = {}
    for run, stamped in children:
        known = newest_generation.get(run)
        newest_generation[run] = stamped if known is None else max(known, stamped or known)
    last = max([status_run, *newest_generation])
    if last == 0:
        return 1
    if last == status_run and status.get("observedGeneration") is not None:
        generation_of_last: int | None = int(status["observedGeneration"])
        stamped = newest_generation.get(last)
        if stamped is not None:
            generation_of_last = max(generation_of_last or 0, stamped)
    else:
        generation_of_last = newest_generation.get(last)
    if generation_of_last is None or generation_of_last == generation:
        return last
    return last + 1
