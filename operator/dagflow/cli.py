"""The `dagflow` command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from dagflow.validation import ValidationProblem, is_dagflow, validate_object

app = typer.Typer(
    name="dagflow",
    help="Tools for DAGFlow, ML pipelines as DAGs of Kubernetes Jobs and Deployments.",
    no_args_is_help=True,
    add_completion=False,
)
STDIN = "-"


@app.callback()
def _main() -> None:
    """Tools for DAGFlow, ML pipelines as DAGs of Kubernetes Jobs and Deployments."""


@dataclass
class FileReport:
    """What validating one file found."""

    source: str
    flows: int = 0
    problems: list[tuple[str, ValidationProblem]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@app.command()
def validate(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...",
            help="YAML files with DAGFlow objects (several documents per file are fine); '-' reads stdin.",
        ),
    ],
) -> None:
    """Check DAGFlow manifests offline with the same rules the cluster applies.

    Prints every problem with its file, flow and field path, and exits with 1 when there is any.
    """
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    reports = [validate_file(name) for name in files]
    for report in reports:
        for skipped in report.skipped:
            err.print(f"[dim]{escape(report.source)}: skipped {escape(skipped)} (not a DAGFlow)[/dim]")
        for owner, problem in report.problems:
            out.print(
                f"[bold]{escape(report.source)}[/bold]: {escape(owner)}: "
                f"[cyan]{escape(problem.path)}[/cyan]: {escape(problem.message)}"
            )
    problems = sum(len(report.problems) for report in reports)
    flows = sum(report.flows for report in reports)
    files_text = _plural(len(reports), "file")
    if problems:
        out.print(f"[red]Found {_plural(problems, 'problem')} in {files_text}.[/red]")
        raise typer.Exit(code=1)
    if flows == 0:
        err.print(f"[yellow]No DAGFlow found in {files_text}.[/yellow]")
    else:
        out.print(f"[green]OK[/green]: {_plural(flows, 'DAGFlow')} in {files_text}, no problems found.")


def validate_file(name: str) -> FileReport:
    """Validate every DAGFlow in one file (or stdin for '-')."""
    report = FileReport(source="<stdin>" if name == STDIN else name)
    try:
        text = sys.stdin.read() if name == STDIN else Path(name).read_text(encoding="utf-8")
    except OSError as error:
        report.problems.append(("file", ValidationProblem("-", f"cannot read: {error.strerror or error}")))
        return report
    validate_text(text, report)
    return report


def validate_text(text: str, report: FileReport) -> None:
    """Validate every DAGFlow among the YAML documents of `text` into `report`."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        report.problems.append(("file", ValidationProblem("-", f"not valid YAML: {error}")))
        return
    for number, document in enumerate(_objects(documents), start=1):
        owner = _describe(document, number)
        if not is_dagflow(document):
            report.skipped.append(owner)
            continue
        report.flows += 1
        report.problems += [(owner, problem) for problem in validate_object(document)]


def _objects(documents: list[Any]) -> Iterator[Any]:
    """The objects of the documents, with `kind: List` (as `kubectl get -o yaml` writes) unpacked."""
    for document in documents:
        if document is None:
            continue
        if isinstance(document, Mapping) and document.get("kind") == "List":
            yield from document.get("items") or []
        else:
            yield document


def _describe(document: Any, number: int) -> str:
    if not isinstance(document, Mapping):
        return f"document {number}"
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    kind = document.get("kind") or "object"
    return f"{kind} {name}" if name else f"{kind} (document {number})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


if __name__ == "__main__":
    app()
