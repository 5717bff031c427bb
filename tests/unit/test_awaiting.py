"""A pass's calls at once: a failure leaves none of them running."""

from __future__ import annotations

import asyncio

import pytest

from dagflow.controller.awaiting import gather_all


def test_a_failure_is_raised_once_every_call_has_ended() -> None:
    ended: list[str] = []

    async def fails() -> None:
        raise RuntimeError("refused")

    async def slow_write() -> str:
        await asyncio.sleep(0.05)
        ended.append("write")
        return "written"

    async def a_pass() -> None:
        await gather_all(fails(), slow_write())

    with pytest.raises(RuntimeError, match="refused"):
        asyncio.run(a_pass())
    assert ended == ["write"]


def test_results_come_in_the_order_of_the_calls() -> None:
    async def value(number: int) -> int:
        await asyncio.sleep(0.01 * (3 - number))
        return number

    async def both() -> list[int]:
        return await gather_all(value(1), value(2))

    assert asyncio.run(both()) == [1, 2]
