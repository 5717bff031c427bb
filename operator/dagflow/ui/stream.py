"""The server-sent events one browser receives from its namespace's shared watch, for as long as
its reader may read them.

The reader's right is asked again on a clock, every RECHECK_SECONDS, whether the namespace is quiet
or busy: a reader who lost the right stops receiving within that time, however many changes keep
arriving. A stream read with a token that expires ends when the token does; the browser connects
again with the token it has then, and the new stream is checked from the start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

KEEPALIVE_SECONDS = 15.0
RECHECK_SECONDS = 60.0  # how often a stream asks again whether its reader may still read the namespace
FORBIDDEN = "event: forbidden\ndata: {}\n\n"
EXPIRED = "event: expired\ndata: {}\n\n"
KEEPALIVE = ": keep-alive\n\n"


async def reader_events(
    queue: asyncio.Queue[str],
    still_allowed: Callable[[], Awaitable[bool]],
    expires_at: float | None = None,
    recheck_seconds: float = RECHECK_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """The queue's events, a keep-alive comment when nothing was sent for `keepalive_seconds`, and
    an end: `forbidden` once `still_allowed` says no (asked every `recheck_seconds`), `expired` at
    `expires_at` (on `clock`, the token's expiry)."""
    next_check = clock() + recheck_seconds
    last_sent = clock()
    while True:
        now = clock()
        if expires_at is not None and now >= expires_at:
            yield EXPIRED
            return
        if now >= next_check:
            if not await still_allowed():
                yield FORBIDDEN
                return
            next_check = clock() + recheck_seconds
        due = min(next_check, last_sent + keepalive_seconds)
        if expires_at is not None:
            due = min(due, expires_at)
        try:
            message = await asyncio.wait_for(queue.get(), max(due - clock(), 0.0))
        except TimeoutError:
            if clock() - last_sent >= keepalive_seconds:
                last_sent = clock()
                yield KEEPALIVE
            continue
        last_sent = clock()
        yield message
