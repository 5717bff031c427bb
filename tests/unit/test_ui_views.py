"""The dashboard's graph of a flow and a work's details, from the objects the cluster returns."""

from __future__ import annotations

from typing import Any

from dagflow.ui.views import NOT_RUN, flow_graph, flow_row, job_phase, run_states, work_details


def example_flow() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "ml",
            "namespace": "team",
            "generation": 2,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "schedule": "0 * * * *",
            "works": [
                {"name": "process", "container": {"image": "x"}},
                {
                    "name": "train",
                    "dependsOn": ["process"],
                    "gpu": 1,
                    "matrix": {"model": ["a", "b", "c"], "seed": [1, 2]},
                    "container": {"image": "x", "command": ["t"]},
                },
                {"name": "report", "dependsOn": ["process"], "container": {"image": "x"}},
                {
                    "name": "serve",
                    "dependsOn": ["train", "report"],
                    "serve": {"port": 80},
                    "container": {"image": "x"},
                },
            ],
        },
        "status": {
            "phase": "Running",
            "progress": "1/4",
            "run": 2,
            "runs": [
                {"number": 1, "trigger": "Created", "phase": "Failed"},
                {"number": 2, "trigger": "Retry", "phase": "Running", "startedAt": "2026-01-01T01:00:00Z"},
            ],
            "works": [
                {
                    "name": "process",
                    "phase": "Succeeded",
                    "job": "ml-2-process",
                    "attempts": 1,
                    "outputs": {"rows": 3},
                },
                {
                    "name": "train",
                    "phase": "Running",
                    "instances": 6,
                    "instanceCounts": {"Succeeded": 2, "Running": 4},
                },
            ],
        },
    }


def test_graph_has_a_node_per_work_and_an_edge_per_dependency() -> None:
    graph = flow_graph(example_flow())
    assert [node["id"] for node in graph["nodes"]] == ["process", "train", "report", "serve"]
    assert sorted(map(tuple, graph["edges"])) == [
        ("process", "report"),
        ("process", "train"),
        ("report", "serve"),
        ("train", "serve"),
    ]
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert nodes["train"] | {} == {
        "id": "train",
        "kind": "matrix",
        "gpu": 1,
        "phase": "Running",
        "instances": 6,
        "counts": {"Succeeded": 2, "Running": 4},
    }
    assert nodes["serve"]["kind"] == "serve"
    assert nodes["report"]["phase"] == "Pending"  # not in the status yet
    assert [run["number"] for run in graph["runs"]] == [1, 2]


def test_finally_works_are_nodes_of_their_own_marked_so() -> None:
    flow = example_flow()
    flow["spec"]["finally"] = [{"name": "notify", "container": {"image": "x"}}]
    flow["status"]["works"].append({"name": "notify", "phase": "Pending", "finally": True})
    nodes = {node["id"]: node for node in flow_graph(flow)["nodes"]}
    assert nodes["notify"]["finally"] is True and nodes["notify"]["kind"] == "finally"
    assert "finally" not in nodes["process"]
    # Drawn after the works that end the DAG: the finally works run once every work has ended.
    assert ["serve", "notify"] in flow_graph(flow)["edges"]
    assert not any(edge[1] == "notify" and edge[0] != "serve" for edge in flow_graph(flow)["edges"])
    details = work_details(flow, "notify", 2, [], [], [])
    assert details["kind"] == "job" and details["phase"] == "Pending"


def test_matrix_node_counts_its_instances_before_the_run_does() -> None:
    flow = example_flow()
    flow.pop("status")
    nodes = {node["id"]: node for node in flow_graph(flow)["nodes"]}
    assert nodes["train"]["instances"] == 6
    assert "counts" not in nodes["train"]


def test_row_of_the_flows_page() -> None:
    row = flow_row(example_flow())
    assert (row["phase"], row["done"], row["total"], row["schedule"]) == ("Running", 1, 4, "0 * * * *")
    assert row["lastRun"]["number"] == 2 and row["lastRun"]["trigger"] == "Retry"


def job(work: str, condition: str | None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "message": "why"}] if condition else []
    return {
        "metadata": {"name": f"ml-1-{work}", "annotations": {"dagflow.dev/work-name": work}},
        "status": {"conditions": conditions, "startTime": "2026-01-01T00:00:00Z"},
    }


def test_an_earlier_run_is_coloured_from_its_jobs() -> None:
    assert job_phase(job("a", "Complete")) == "Succeeded"
    assert job_phase(job("a", "Failed")) == "Failed"
    assert job_phase(job("a", None)) == "Running"
    states = run_states(example_flow(), 1, [job("process", "Complete"), job("train", "Failed")])
    assert states == {
        "process": {"phase": "Succeeded"},
        "train": {"phase": "Failed"},
        "report": {"phase": NOT_RUN},
        "serve": {"phase": NOT_RUN},
    }
    assert run_states(example_flow(), 2, [])["train"]["phase"] == "Running"


def test_details_keep_only_the_events_of_the_work() -> None:
    pod = {
        "metadata": {"name": "ml-2-process-x1", "annotations": {}},
        "spec": {"nodeName": "cpu-0", "containers": [{"name": "main"}]},
        "status": {"phase": "Succeeded"},
    }

    def event(kind: str, name: str, message: str, when: str) -> dict[str, Any]:
        return {
            "involvedObject": {"kind": kind, "name": name},
            "reason": "R",
            "message": message,
            "lastTimestamp": when,
            "type": "Normal",
        }

    events = [
        event("Pod", "ml-2-process-x1", "Scheduled", "2026-01-01T00:00:02Z"),
        event("Job", "ml-2-process", "Created pod", "2026-01-01T00:00:01Z"),
        event("DAGFlow", "ml", "Work process succeeded", "2026-01-01T00:00:03Z"),
        event("DAGFlow", "ml", "Work process-extra succeeded", "2026-01-01T00:00:04Z"),
        event("DAGFlow", "other", "Work process succeeded", "2026-01-01T00:00:05Z"),
        event("Pod", "someone-else", "Scheduled", "2026-01-01T00:00:06Z"),
    ]
    details = work_details(example_flow(), "process", 2, [], [pod], events)
    assert details["job"] == "ml-2-process"
    assert details["pods"][0]["node"] == "cpu-0"
    assert (details["attempts"], details["outputs"], details["phase"]) == (1, {"rows": 3}, "Succeeded")
    assert [item["object"] for item in details["events"]] == [
        "Job/ml-2-process",
        "Pod/ml-2-process-x1",
        "DAGFlow/ml",
    ]


def test_details_of_an_earlier_run_come_from_its_job() -> None:
    details = work_details(example_flow(), "process", 1, [job("process", "Failed")], [], [])
    assert (details["current"], details["phase"], details["job"], details["message"]) == (
        False,
        "Failed",
        "ml-1-process",
        "why",
    )


def queued_flow() -> dict[str, Any]:
    """The example while Kueue holds its training (preempted) and its report (not admitted yet)."""
    flow = example_flow()
    flow["status"]["queued"] = 2
    flow["status"]["works"] = [
        {"name": "process", "phase": "Succeeded"},
        {"name": "train", "phase": "Pending", "reason": "Preempted", "message": "preempted by Kueue"},
        {"name": "report", "phase": "Pending", "reason": "Queued", "message": "queued in LocalQueue gpu"},
        {"name": "serve", "phase": "Pending"},
    ]
    return flow


def test_works_waiting_for_kueue_are_told_apart_from_pending_ones() -> None:
    nodes = {node["id"]: node for node in flow_graph(queued_flow())["nodes"]}
    assert {name: (node["phase"], node.get("queued")) for name, node in nodes.items()} == {
        "process": ("Succeeded", None),
        "train": ("Pending", "Preempted"),
        "report": ("Pending", "Queued"),
        "serve": ("Pending", None),
    }
    assert flow_row(queued_flow())["queued"] == 2
    assert flow_row(example_flow())["queued"] == 0
    details = work_details(queued_flow(), "report", 2, [], [], [])
    assert (details["phase"], details["queued"]) == ("Pending", "Queued")
    assert work_details(queued_flow(), "serve", 2, [], [], [])["queued"] is None
