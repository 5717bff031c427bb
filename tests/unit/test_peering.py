"""Which peers an operator sees alive in a kopf peering object (they keep the webhook on shutdown)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dagflow.controller.peering import live_peers

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: timedelta, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - seen_ago).isoformat()}


def test_live_peers_are_the_others_with_an_unexpired_keep_alive() -> None:
    status = {
        "me@host": peer(7, timedelta(seconds=1)),
        "fresh@host": peer(3, timedelta(seconds=10)),
        "stale@host": peer(5, timedelta(seconds=61)),
        "gone@host": peer(9, timedelta(seconds=0), lifetime=0),
    }
    assert live_peers(status, own_identity="me@host", now=NOW) == ["fresh@host"]


def test_a_peering_object_without_peers_or_with_unreadable_ones_has_no_live_peers() -> None:
    assert live_peers({}, own_identity="me@host", now=NOW) == []
    assert live_peers({"odd": "text", "partial": {"priority": 2}}, own_identity="me@host", now=NOW) == []
