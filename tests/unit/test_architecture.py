"""The package's rooms and the one direction imports take between them (see dagflow/__init__.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grimp
import pytest

# The rooms each room may import, besides itself.
ALLOWED_ROOMS: dict[str, set[str]] = {
    "api": set(),
    "rules": {"api"},
    "controller": {"api", "rules"},
    "client": {"api", "rules"},
    "sdk": {"api", "rules", "client"},
    "ui": {"api", "rules", "client"},
}
# The one import against the list's direction: `dagflow ui` starts the dashboard from the command line,
# loading the web server's modules only for that command.
ALLOWED_MODULE_IMPORTS = {
    ("dagflow.client.cli", "dagflow.ui.access"),
    ("dagflow.client.cli", "dagflow.ui.server"),
}
# Pure rules touch no cluster: the standard library, the API and these pure libraries only.
PURE_LIBRARIES = {"pydantic", "pydantic_core", "cronsim"}
CLUSTER_LIBRARIES = {"kubernetes", "kopf", "urllib3"}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("dagflow", include_external_packages=True, cache_dir=None)


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "dagflow" and len(parts) > 1 else None


def imports(graph: grimp.ImportGraph, room: str) -> Iterator[tuple[str, str]]:
    for module in sorted(graph.modules):
        if room_of(module) == room:
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                yield module, imported


def test_every_module_lives_in_a_room(graph: grimp.ImportGraph) -> None:
    strays = sorted(m for m in graph.modules if m.startswith("dagflow.") and room_of(m) not in ALLOWED_ROOMS)
    assert strays == [], f"modules outside the rooms of dagflow/__init__.py: {strays}"


@pytest.mark.parametrize("room", sorted(ALLOWED_ROOMS))
def test_room_imports_only_the_rooms_below_it(graph: grimp.ImportGraph, room: str) -> None:
    allowed = ALLOWED_ROOMS[room] | {room}
    wrong = [
        f"{module} imports {imported}"
        for module, imported in imports(graph, room)
        if imported.startswith("dagflow.")
        and room_of(imported) not in allowed
        and (module, imported) not in ALLOWED_MODULE_IMPORTS
    ]
    assert wrong == []


def test_rules_import_nothing_but_the_api_and_pure_libraries(graph: grimp.ImportGraph) -> None:
    wrong = [
        f"{module} imports {imported}"
        for module, imported in imports(graph, "rules")
        if not imported.startswith("dagflow.")
        and imported not in sys.stdlib_module_names
        and imported not in PURE_LIBRARIES
    ]
    assert wrong == []


@pytest.mark.parametrize("room", ["api", "rules", "sdk", "ui"])
def test_only_the_controller_and_client_talk_to_the_cluster_directly(
    graph: grimp.ImportGraph, room: str
) -> None:
    wrong = [f"{m} imports {i}" for m, i in imports(graph, room) if i in CLUSTER_LIBRARIES]
    assert wrong == []
