"""Awaiting several API calls of one pass at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def gather_all(*calls: Awaitable[Any]) -> list[Any]:
    """The results of `calls`, run at once, as `asyncio.gather` gives them; a failure is raised only
    once every call has ended, so that a failed pass leaves none of its calls running behind it to
    write beside the next pass of its flow."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
