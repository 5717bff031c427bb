"""How the dagflow command shows flows: durations, instances, graphs, outputs."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from dagflow.api.models import DAGFlowSpec
from dagflow.client.flowview import (
    Listing,
    age,
    duration,
    graph,
    instances,
    live_view,
    outputs_lines,
    runs_listing,
    works_listing,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_durations_read_as_a_person_would() -> None:
    assert duration({}) == "-"
    assert duration({"startedAt": "2026-01-01T11:59:55Z"}, NOW) == "5s"
    assert duration({"startedAt": "2026-01-01T11:58:55Z", "finishedAt": "2026-01-01T11:59:00Z"}) == "5s"
    assert duration({"startedAt": "2026-01-01T10:00:00Z"}, NOW) == "2h00m"
    assert duration({"startedAt": "2026-01-01T11:57:55Z"}, NOW) == "2m05s"


def test_instances_of_a_matrix_work() -> None:
    assert instances({}) == "-"
    counts = {"Pending": 0, "Running": 1, "Succeeded": 3, "Failed": 2, "Stopped": 0}
    assert instances({"instances": 6, "instanceCounts": counts}) == "3/6 (2 failed)"


def test_the_graph_lists_works_in_the_order_they_can_run_with_their_phases() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                {
                    "name": "serve",
                    "dependsOn": ["train-a"],
                    "serve": {"port": 80},
                    "container": {"image": "x"},
                },
                {"name": "train-a", "dependsOn": ["prep"], "gpu": 2, "container": {"image": "x"}},
                {"name": "prep", "container": {"image": "x"}},
            ]
        }
    )
    assert graph(spec, "text", phases={"prep": "Succeeded"}).splitlines() == [
        "prep · job · Succeeded",
        "train-a · job · 2 GPU  <- prep",
        "serve · serve  <- train-a",
    ]
    assert "  train_a --> serve" in graph(spec, "mermaid").splitlines()


def test_finally_works_come_last_in_the_graph_and_are_marked_in_the_works_table() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "works": [{"name": "train", "container": {"image": "x"}}],
            "finally": [
                {"name": "cleanup", "dependsOn": ["report"], "container": {"image": "x"}},
                {"name": "report", "container": {"image": "x"}},
            ],
        }
    )
    assert graph(spec, "text").splitlines() == [
        "train · job",
        "report · finally",
        "cleanup · finally  <- report",
    ]
    flow = {
        "metadata": {"name": "f"},
        "status": {
            "works": [
                {"name": "train", "phase": "Failed"},
                {"name": "report", "phase": "Running", "finally": True},
            ]
        },
    }
    names = [row[0] for row in works_listing(flow).rows]
    assert names == ["train", "report (finally)"]


def test_outputs_and_the_live_view() -> None:
    flow = {
        "metadata": {"name": "f"},
        "status": {
            "phase": "Running",
            "progress": "1/2",
            "run": 1,
            "works": [
                {
                    "name": "split",
                    "phase": "Succeeded",
                    "outputs": {"rows": 12},
                    "startedAt": "2026-01-01T11:59:50Z",
                    "finishedAt": "2026-01-01T11:59:55Z",
                },
                {
                    "name": "train",
                    "phase": "Running",
                    "outputsConfigMap": "f-1-train-outputs",
                    "instances": 3,
                    "instanceCounts": {"Succeeded": 1},
                },
            ],
        },
    }
    assert outputs_lines(flow) == [
        'split: {"rows": 12}',
        "train: in ConfigMap f-1-train-outputs (key outputs.json)",
    ]
    console = Console(width=100, record=True)
    console.print(live_view(flow, NOW))
    screen = console.export_text()
    assert "f  run 1  Running  1/2 works" in screen
    assert "split" in screen and "5s" in screen and "1/3" in screen


def test_ages_read_as_kubectl_writes_them() -> None:
    assert age("2026-01-01T11:59:15Z", NOW) == "45s"
    assert age("2026-01-01T11:56:40Z", NOW) == "3m20s"
    assert age("2026-01-01T10:25:00Z", NOW) == "95m"
    assert age("2026-01-01T06:48:00Z", NOW) == "5h12m"
    assert age("2025-12-29T08:00:00Z", NOW) == "3d4h"
    assert age(None, NOW) == "<unknown>"


def test_a_plain_table_keeps_every_value_whole_and_lines_up_its_columns() -> None:
    listing = Listing(
        ["NAME", "MESSAGE"], [["a", "first line\nsecond line"], ["a-much-longer-name", "x" * 300]]
    )
    lines = listing.plain().splitlines()
    assert lines == [
        "NAME                 MESSAGE",
        "a                    first line second line",
        "a-much-longer-name   " + "x" * 300,
    ]


def test_the_runs_show_their_workspace_claims_only_where_a_run_has_one() -> None:
    plain = {"status": {"runs": [{"number": 1, "trigger": "Created", "phase": "Succeeded"}]}}
    assert runs_listing(plain).columns == ["RUN", "TRIGGER", "PHASE", "STARTED", "FINISHED"]
    runs = [
        {"number": 1, "trigger": "Created", "phase": "Failed"},
        {"number": 2, "trigger": "SpecChange", "phase": "Failed", "workspaceClaim": "ml-2-workspace"},
        {"number": 3, "trigger": "Retry", "phase": "Running", "workspaceClaim": "ml-2-workspace"},
    ]
    listing = runs_listing({"status": {"runs": runs}})
    assert listing.columns[-1] == "WORKSPACE"
    assert [row[-1] for row in listing.rows] == ["-", "ml-2-workspace", "ml-2-workspace"]
