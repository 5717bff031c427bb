"""How the `dagflow` command shows flows: tables of works, a progress bar, the graph as text, Mermaid
or Graphviz dot. Pure: from a flow object to something rich or a string prints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dagflow.api.models import DAGFlowSpec
from dagflow.rules.validation import topological_order

PHASE_STYLES = {
    "Pending": "dim",
    "Running": "cyan",
    "Succeeded": "green",
    "Serving": "green bold",
    "Failed": "red bold",
    "Skipped": "yellow",
    "Stopped": "magenta",
}
GRAPH_FORMATS = ("text", "mermaid", "dot")


def styled(phase: str | None) -> Text:
    phase = phase or "Pending"
    return Text(phase, style=PHASE_STYLES.get(phase, ""))


def duration(work: Mapping[str, Any], now: datetime | None = None) -> str:
    """How long a work ran (or has been running), as 1m05s."""
    started = _time(work.get("startedAt"))
    if started is None:
        return "-"
    ended = _time(work.get("finishedAt")) or now or datetime.now(UTC)
    seconds = max(int((ended - started).total_seconds()), 0)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def instances(work: Mapping[str, Any]) -> str:
    counts = work.get("instanceCounts")
    if not counts:
        return "-"
    text = f"{counts.get('Succeeded', 0)}/{work.get('instances', '?')}"
    if counts.get("Failed"):
        text += f" ({counts['Failed']} failed)"
    return text


def works_table(flow: Mapping[str, Any], now: datetime | None = None) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("WORK", "PHASE", "INSTANCES", "ATTEMPTS", "DURATION", "MESSAGE"):
        table.add_column(column, overflow="fold" if column == "MESSAGE" else "ellipsis")
    for work in (flow.get("status") or {}).get("works") or []:
        table.add_row(
            work["name"],
            styled(work.get("phase")),
            instances(work),
            str(work.get("attempts", "-")),
            duration(work, now),
            work.get("message") or "",
        )
    return table


def progress(flow: Mapping[str, Any]) -> RenderableType:
    """The flow's phase and a bar of its works finished or serving."""
    status = flow.get("status") or {}
    done, _, total = str(status.get("progress") or "0/0").partition("/")
    line = Text.assemble(
        (flow["metadata"]["name"], "bold"),
        "  run ",
        str(status.get("run", "-")),
        "  ",
        styled(status.get("phase")),
        f"  {done}/{total} works",
    )
    bar = ProgressBar(total=max(int(total or 0), 1), completed=int(done or 0), width=40)
    return Group(line, bar)


def summary_line(flow: Mapping[str, Any]) -> str:
    """One line of where a flow stands: `ml-pipeline  run 1  Running  1/3 works  train=Running[1/3]`."""
    status = flow.get("status") or {}
    works = "  ".join(
        f"{work['name']}={work.get('phase', 'Pending')}"
        + (
            f"[{(work.get('instanceCounts') or {}).get('Succeeded', 0)}/{work['instances']}]"
            if work.get("instances")
            else ""
        )
        for work in status.get("works") or []
    )
    return (
        f"{flow['metadata']['name']}  run {status.get('run', '-')}  {status.get('phase') or 'Pending'}  "
        f"{status.get('progress') or '0/0'} works  {works}"
    ).rstrip()


def live_view(flow: Mapping[str, Any], now: datetime | None = None) -> RenderableType:
    return Group(progress(flow), Text(""), works_table(flow, now))


def flows_table(flows: Sequence[Mapping[str, Any]], all_namespaces: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAMESPACE"] if all_namespaces else []
    for column in [*columns, "NAME", "PHASE", "PROGRESS", "RUN", "SCHEDULE", "ENDPOINT"]:
        table.add_column(column)
    for flow in flows:
        status = flow.get("status") or {}
        row: list[str | Text] = [flow["metadata"]["namespace"]] if all_namespaces else []
        row += [
            flow["metadata"]["name"],
            styled(status.get("phase")),
            str(status.get("progress") or "-"),
            str(status.get("run") or "-"),
            str((flow.get("spec") or {}).get("schedule") or "-"),
            str(status.get("endpoint") or "-"),
        ]
        table.add_row(*row)
    return table


def runs_table(flow: Mapping[str, Any]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("RUN", "TRIGGER", "PHASE", "STARTED", "FINISHED"):
        table.add_column(column)
    for run in (flow.get("status") or {}).get("runs") or []:
        table.add_row(
            str(run["number"]),
            run.get("trigger", ""),
            styled(run.get("phase")),
            run.get("startedAt") or "-",
            run.get("finishedAt") or "-",
        )
    return table


def outputs_lines(flow: Mapping[str, Any]) -> list[str]:
    """`work: {json}` for each work that reported outputs, and where a matrix work's are kept."""
    lines = []
    for work in (flow.get("status") or {}).get("works") or []:
        if work.get("outputs") is not None:
            lines.append(f"{work['name']}: {json.dumps(work['outputs'], sort_keys=True)}")
        if work.get("outputsConfigMap"):
            lines.append(f"{work['name']}: in ConfigMap {work['outputsConfigMap']} (key outputs.json)")
    return lines


def graph(
    spec: DAGFlowSpec, form: str, name: str = "dagflow", phases: Mapping[str, str] | None = None
) -> str:
    """The flow's DAG as text (one line per work, in the order they can run), Mermaid or dot."""
    order = topological_order(spec)
    works = {work.name: work for work in spec.works}
    phases = phases or {}

    def label(work_name: str) -> str:
        work = works[work_name]
        kind = "serve" if work.serve is not None else ("matrix" if work.matrix is not None else "job")
        parts = [work_name, kind]
        if work.gpu:
            parts.append(f"{work.gpu} GPU")
        if work_name in phases:
            parts.append(phases[work_name])
        return " · ".join(parts)

    if form == "mermaid":
        lines = ["flowchart LR"]
        lines += [f'  {_node_id(work)}["{label(work)}"]' for work in order]
        lines += [
            f"  {_node_id(before)} --> {_node_id(work)}"
            for work in order
            for before in works[work].depends_on
        ]
        return "\n".join(lines) + "\n"
    if form == "dot":
        lines = [f'digraph "{name}" {{', "  rankdir=LR;", "  node [shape=box];"]
        lines += [f'  "{work}" [label="{label(work)}"];' for work in order]
        lines += [f'  "{before}" -> "{work}";' for work in order for before in works[work].depends_on]
        return "\n".join([*lines, "}"]) + "\n"
    lines = []
    for work in order:
        after = works[work].depends_on
        suffix = f"  <- {', '.join(after)}" if after else ""
        lines.append(f"{label(work)}{suffix}")
    return "\n".join(lines) + "\n"


def _node_id(name: str) -> str:
    return name.replace("-", "_")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
