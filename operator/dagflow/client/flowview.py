"""How the `dagflow` command shows flows: tables of works, a progress bar, the graph as text, Mermaid
or Graphviz dot. Pure: from a flow object to something rich or a string prints.

A table is built once as a `Listing` and printed two ways: as a rich table fitted to a terminal, and
anywhere else (a pipe, a file) as kubectl prints its tables, every value whole in columns padded to
the widest, so that `grep`, `awk` and `cut` see what the cluster holds."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "Waiting": "yellow bold",
}
# The reasons of a Pending work whose Job waits for Kueue (docs/api.md, "Queueing with Kueue"): shown
# apart from works that wait for their dependencies, since only quota frees them.
QUEUE_REASONS = frozenset({"Queued", "Preempted"})
QUEUED_STYLE = "blue"
GRAPH_FORMATS = ("text", "mermaid", "dot")
COLUMN_GAP = 3  # spaces between plain columns, as kubectl's tabwriter pads them


@dataclass
class Listing:
    """A table as data: `rich()` for a terminal, `plain()` for anywhere else."""

    columns: list[str]
    rows: list[list[str | Text]] = field(default_factory=list)
    folded: frozenset[str] = frozenset()  # columns a terminal folds onto more lines instead of cutting

    def rich(self) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in self.columns:
            table.add_column(column, overflow="fold" if column in self.folded else "ellipsis")
        for row in self.rows:
            table.add_row(*row)
        return table

    def plain(self) -> str:
        """Every value whole, on one line per row (a line break inside a value becomes a space),
        columns padded to their widest value; no trailing spaces."""
        lines = [self.columns] + [[_one_line(value) for value in row] for row in self.rows]
        widths = [max(len(line[index]) for line in lines) for index in range(len(self.columns))]
        gap = " " * COLUMN_GAP
        return "\n".join(
            gap.join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )


def _one_line(value: str | Text) -> str:
    return " ".join(str(value.plain if isinstance(value, Text) else value).splitlines())


def age(created: Any, now: datetime | None = None) -> str:
    """How long ago, as kubectl writes an AGE: 45s, 3m20s, 95m, 5h12m, 30h, 3d4h, 60d, 2y."""
    since = _time(created)
    if since is None:
        return "<unknown>"
    seconds = max(int(((now or datetime.now(UTC)) - since).total_seconds()), 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def styled(phase: str | None) -> Text:
    phase = phase or "Pending"
    return Text(phase, style=PHASE_STYLES.get(phase, ""))


def work_phase(work: Mapping[str, Any]) -> Text:
    """A work's phase, with Kueue's reason when its Job waits in a queue: `Pending (Queued)`."""
    phase = work.get("phase") or "Pending"
    reason = work.get("reason")
    if phase == "Pending" and reason in QUEUE_REASONS:
        return Text(f"Pending ({reason})", style=QUEUED_STYLE)
    if phase == "Succeeded" and work.get("cachedFrom"):
        return Text("Succeeded (cached)", style=PHASE_STYLES.get(phase, ""))
    return styled(phase)


def cached_note(work: Mapping[str, Any]) -> str | None:
    """Where a work taken from the cache got its outcome, in words; None for any other work."""
    source = work.get("cachedFrom")
    if not source:
        if work.get("cachedInstances"):
            total = work.get("instances")
            return (
                f"{work['cachedInstances']} of {total} instances taken from the cache; its Job ran the others"
            )
        return None
    job = f", Job {source['job']}" if source.get("job") else ""
    return f"taken from the cache: run {source.get('run')} of flow {source.get('flow')}{job}"


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


def works_listing(flow: Mapping[str, Any], now: datetime | None = None, wide: bool = False) -> Listing:
    """The works of the current run; `wide` adds each work's Job (or Deployment) and start."""
    columns = ["WORK", "PHASE", "INSTANCES", "ATTEMPTS", "DURATION"]
    columns += ["JOB", "STARTED"] if wide else []
    listing = Listing([*columns, "MESSAGE"], folded=frozenset({"MESSAGE"}))
    for work in (flow.get("status") or {}).get("works") or []:
        row: list[str | Text] = [
            f"{work['name']} (finally)" if work.get("finally") else work["name"],
            work_phase(work),
            instances(work),
            str(work.get("attempts", "-")),
            duration(work, now),
        ]
        if wide:
            row += [str(work.get("job") or "-"), str(work.get("startedAt") or "-")]
        listing.rows.append([*row, work.get("message") or cached_note(work) or ""])
    return listing


def works_table(flow: Mapping[str, Any], now: datetime | None = None) -> Table:
    return works_listing(flow, now).rich()


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
    if status.get("queued"):
        line.append(f"  {status['queued']} queued", style=QUEUED_STYLE)
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


def waiting_gates(flow: Mapping[str, Any]) -> list[str]:
    """The gates of the current run that wait for approval, each with the commands that decide it."""
    name = flow["metadata"]["name"]
    namespace = flow["metadata"].get("namespace")
    target = f" -n {namespace}" if namespace else ""
    try:
        spec = DAGFlowSpec.model_validate(flow.get("spec") or {})
    except ValueError:
        return []
    lines = []
    for work in (flow.get("status") or {}).get("works") or []:
        if work.get("phase") != "Waiting":
            continue
        try:
            approval = spec.work(work["name"]).approval
        except KeyError:
            continue
        settable = "".join(f" [-p {param}=VALUE]" for param in (approval.params if approval else []))
        asked = f": {work['message']}" if work.get("message") else ""
        lines.append(f"{work['name']} waits for approval{asked}")
        lines.append(f"  dagflow approve {name} {work['name']}{settable}{target}")
        lines.append(f"  dagflow reject {name} {work['name']} -m REASON{target}")
    return lines


def live_view(flow: Mapping[str, Any], now: datetime | None = None) -> RenderableType:
    return Group(progress(flow), Text(""), works_table(flow, now))


def flows_listing(
    flows: Sequence[Mapping[str, Any]], all_namespaces: bool, wide: bool = False, now: datetime | None = None
) -> Listing:
    """One row per flow; `wide` adds whether it is suspended, its age and its message."""
    columns = ["NAMESPACE"] if all_namespaces else []
    columns += ["NAME", "PHASE", "PROGRESS", "RUN", "SCHEDULE", "ENDPOINT"]
    columns += ["SUSPENDED", "AGE", "MESSAGE"] if wide else []
    listing = Listing(columns, folded=frozenset({"MESSAGE"}))
    for flow in flows:
        status = flow.get("status") or {}
        spec = flow.get("spec") or {}
        row: list[str | Text] = [flow["metadata"]["namespace"]] if all_namespaces else []
        row += [
            flow["metadata"]["name"],
            styled(status.get("phase")),
            str(status.get("progress") or "-"),
            str(status.get("run") or "-"),
            str(spec.get("schedule") or "-"),
            str(status.get("endpoint") or "-"),
        ]
        if wide:
            row += [
                str(bool(spec.get("suspend"))).lower(),
                age(flow["metadata"].get("creationTimestamp"), now),
                str(status.get("message") or ""),
            ]
        listing.rows.append(row)
    return listing


def flows_table(flows: Sequence[Mapping[str, Any]], all_namespaces: bool) -> Table:
    return flows_listing(flows, all_namespaces).rich()


def runs_listing(flow: Mapping[str, Any]) -> Listing:
    """The kept runs; with a workspace (spec.workspace), each run's claim too."""
    runs = (flow.get("status") or {}).get("runs") or []
    with_claims = any(run.get("workspaceClaim") for run in runs)
    listing = Listing(
        ["RUN", "TRIGGER", "PHASE", "STARTED", "FINISHED", *(["WORKSPACE"] if with_claims else [])]
    )
    for run in runs:
        row: list[str | Text] = [
            str(run["number"]),
            run.get("trigger", ""),
            styled(run.get("phase")),
            run.get("startedAt") or "-",
            run.get("finishedAt") or "-",
        ]
        listing.rows.append([*row, str(run.get("workspaceClaim") or "-")] if with_claims else row)
    return listing


def runs_table(flow: Mapping[str, Any]) -> Table:
    return runs_listing(flow).rich()


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
    works = {work.name: work for work in spec.all_works}
    phases = phases or {}

    def label(work_name: str) -> str:
        work = works[work_name]
        kind = "serve" if work.serve is not None else ("matrix" if work.matrix is not None else "job")
        if spec.is_finally(work_name):
            kind = "finally"
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
