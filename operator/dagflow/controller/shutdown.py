"""Leaving on time: after SIGTERM the process ends within a deadline, whatever clean-up is left.

kopf's own clean-up calls retry for about a minute when the API server is gone, and a blocking call
into a hung API server may outlast any client timeout; neither may keep the operator from stopping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

logger = logging.getLogger("dagflow")


def arm_exit_deadline_on_signals(seconds: float) -> None:
    """On SIGTERM or SIGINT, start the exit deadline, then let kopf's own handling go on.

    kopf handles these signals in its event loop (through the loop's wakeup descriptor, which this
    Python-level handler leaves in place); it must have set that up already, as it has by the time
    the startup handler yields.
    """
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            exit_deadline.extend_to(seconds)
            if callable(previous):
                previous(signum, frame)

        try:
            signal.signal(number, handler)
        except ValueError:  # not the main thread (kopf run embedded): no deadline
            return


class ExitDeadline:
    """Ends the process at a deadline, from a thread of its own, if it has not ended by then."""

    def __init__(self) -> None:
        self._at: float | None = None
        self._lock = threading.Lock()

    def extend_to(self, seconds: float) -> None:
        self._set(time.monotonic() + seconds, later=True)

    def shorten_to(self, seconds: float) -> None:
        self._set(time.monotonic() + seconds, later=False)

    def left(self) -> float:
        return max(0.0, (self._at or time.monotonic()) - time.monotonic())

    def _set(self, moment: float, later: bool) -> None:
        with self._lock:
            current = self._at
            if current is None or (moment > current if later else moment < current):
                self._at = moment
        if current is None:
            threading.Thread(target=self._watch, name="dagflow-exit-deadline", daemon=True).start()

    def _watch(self) -> None:
        while self._at is None or time.monotonic() < self._at:
            time.sleep(0.1)
        logger.warning("Clean-up did not finish in time (is the API server gone?); exiting anyway")
        exit_now()


exit_deadline = ExitDeadline()


def exit_now() -> None:
    """Leave at once: calls that wait on a hung API server in worker threads must not hold the exit."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


T = TypeVar("T")


async def in_daemon_thread(function: Callable[[], T], timeout: float) -> T:
    """Run a blocking call in a thread of its own that the process does not wait for at exit.

    A call into a hung API server may outlast `timeout`; the caller goes on without its result.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        try:
            result = function()
        except BaseException as error:
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="dagflow-cleanup", daemon=True).start()
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise TimeoutError(f"no answer from the API server in {timeout:g}s") from None
