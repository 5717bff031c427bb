"""The `dagflow` command line, also `kubectl dagflow` (installed as kubectl-dagflow).

`validate` and `graph FILE` work offline; every other command acts on the cluster of the kubeconfig
kubectl would use, with kubectl's -n/--namespace, --context and --kubeconfig.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from dagflow.api.models import READY_PHASES, ApprovalDecision, DAGFlowSpec, RunRequest, duration_seconds
from dagflow.client import flowview
from dagflow.client.archive import ArchiveUnavailable, archived_logs
from dagflow.client.cacheplan import HIT, MISS, plan_cache
from dagflow.client.flowclient import ClusterError, FlowClient, Target
from dagflow.rules import naming
from dagflow.rules.approvals import ApprovalError
from dagflow.rules.validation import ValidationProblem, is_dagflow, validate_object

app = typer.Typer(
    name="dagflow",
    help="Tools for DAGFlow, ML pipelines as DAGs of Kubernetes Jobs and Deployments.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
STDIN = "-"


@dataclass
class Options:
    """kubectl's options, given before the command or after it."""

    target: Target = field(default_factory=Target)


NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace (default: the context's, else default).")
]
ContextOption = Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.")]
KubeconfigOption = Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file to use.")]
OUTPUT_FORMATS = ("wide", "json", "yaml", "name")
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FORMAT",
        help="wide (more columns), json, yaml or name, as kubectl get writes them.",
        case_sensitive=False,
    ),
]


@app.callback()
def _main(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Tools for DAGFlow, ML pipelines as DAGs of Kubernetes Jobs and Deployments."""
    ctx.obj = Options(Target(namespace=namespace, context=context, kubeconfig=kubeconfig))


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


# -- on the cluster --------------------------------------------------------------------------------


def _target(ctx: typer.Context, namespace: str | None, context: str | None, kubeconfig: str | None) -> Target:
    """The cluster and namespace a command acts on: its own options, else those given before it."""
    given: Target = ctx.obj.target if isinstance(ctx.obj, Options) else Target()
    return Target(
        namespace=namespace or given.namespace,
        context=context or given.context,
        kubeconfig=kubeconfig or given.kubeconfig,
    )


def _client(
    ctx: typer.Context, namespace: str | None, context: str | None, kubeconfig: str | None
) -> FlowClient:
    target = _target(ctx, namespace, context, kubeconfig)
    try:
        return FlowClient(target)
    except ClusterError as error:
        _fail(str(error))


def _fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code=code)


def _get(client: FlowClient, name: str) -> dict[str, Any]:
    try:
        return client.get(name)
    except ClusterError as error:
        _fail(str(error))


def _parse_params(values: list[str] | None) -> dict[str, str]:
    params = {}
    for value in values or []:
        key, sign, given = value.partition("=")
        if not sign or not key:
            _fail(f"--param {value!r}: write NAME=VALUE")
        params[key] = given
    return params


def _with_params(objects: list[dict[str, Any]], params: dict[str, str]) -> None:
    """Set the defaults of the given parameters in every DAGFlow of the manifest."""
    flows = [obj for obj in objects if is_dagflow(obj)]
    for flow in flows:
        declared = {param.get("name"): param for param in flow.get("spec", {}).get("params") or []}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            listed = ", ".join(str(name) for name in declared) or "none"
            _fail(
                f"DAGFlow {flow['metadata']['name']} has no parameter {', '.join(unknown)} (it has: {listed})"
            )
        for name, value in params.items():
            declared[name]["default"] = value


@app.command()
def submit(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(metavar="FILE", help="Manifest with a DAGFlow (and other objects); '-' reads stdin."),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="NAME=VALUE", help="Value of a parameter (repeatable)."),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the flow until its run is over.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: give up after this many seconds.")
    ] = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Validate and apply a manifest; with --watch, follow the flow live.

    With --watch the exit code is 0 when the run succeeds or serves and 1 when it fails or is stopped.
    """
    report = validate_file(file)
    if report.problems:
        for owner, problem in report.problems:
            Console(stderr=True, soft_wrap=True).print(f"{escape(owner)}: {escape(str(problem))}")
        _fail(f"{file} is not valid: nothing applied")
    text = sys.stdin.read() if file == STDIN else Path(file).read_text(encoding="utf-8")
    objects = [dict(obj) for obj in _objects(list(yaml.safe_load_all(text)))]
    flows = [obj["metadata"]["name"] for obj in objects if is_dagflow(obj)]
    if not flows:
        _fail(f"{file} holds no DAGFlow")
    _with_params(objects, _parse_params(param))
    client = _client(ctx, namespace, context, kubeconfig)
    try:
        client.apply(objects)
    except ClusterError as error:
        _fail(str(error))
    out = Console(highlight=False)
    for name in flows:
        out.print(f"dagflow.dagflow.dev/{name} applied in namespace {client.namespace}")
    if watch:
        if len(flows) > 1:
            _fail("--watch follows one flow; the file holds several")
        raise typer.Exit(code=_watch(client, flows[0], timeout))


def _output_format(output: str | None) -> str | None:
    if output is None:
        return None
    if output.lower() not in OUTPUT_FORMATS:
        _fail(f"--output {output!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    return output.lower()


def _show_table(console: Console, listing: flowview.Listing) -> None:
    """A rich table fitted to a terminal; anywhere else every value whole, as kubectl prints."""
    if console.is_terminal:
        console.print(listing.rich())
    else:
        console.file.write(listing.plain() + "\n")
        console.file.flush()


def _show_objects(objects: list[dict[str, Any]], form: str, as_list: bool) -> None:
    """Flows as json, yaml or their names (`dagflow.dagflow.dev/NAME`), as kubectl get writes them;
    several (`as_list`) in a `kind: List`."""
    if form == "name":
        for obj in objects:
            typer.echo(f"dagflow.dagflow.dev/{obj['metadata']['name']}")
        return
    shown: dict[str, Any] = (
        {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}}
        if as_list
        else objects[0]
    )
    if form == "json":
        typer.echo(json.dumps(shown, indent=4, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True), nl=False)


def _watch(client: FlowClient, name: str, timeout: float | None) -> int:
    """Follow a flow until its run is over: redrawn in place on a terminal, a line per change
    elsewhere (a log, a pipe). The exit code for how the run ended."""
    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=4) as live:
                final = client.follow(name, lambda flow: live.update(flowview.live_view(flow)), timeout)
        else:
            last: list[str] = []

            def log(flow: dict[str, Any]) -> None:
                line = flowview.summary_line(flow)
                if [line] != last:
                    console.print(line)
                    last[:] = [line]

            final = client.follow(name, log, timeout)
            _show_table(console, flowview.works_listing(final))
    except (ClusterError, TimeoutError) as error:
        _fail(str(error))
    status = final.get("status") or {}
    if status.get("phase") in READY_PHASES:
        endpoint = f" at {status['endpoint']}" if status.get("endpoint") else ""
        console.print(f"[green]{name}: {status['phase']}{escape(endpoint)}[/green]")
        return 0
    console.print(f"[red]{name}: {status.get('phase')}: {escape(str(status.get('message') or ''))}[/red]")
    for work in status.get("works") or []:
        if work.get("phase") == "Failed":
            console.print(f"  [red]{work['name']}[/red]: {escape(str(work.get('message') or 'failed'))}")
    return 1


@app.command("list")
def list_flows(
    ctx: typer.Context,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Flows of every namespace.")
    ] = False,
    output: OutputOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """List flows: phase, progress, run, schedule, endpoint (-o wide: suspended, age, message)."""
    form = _output_format(output)
    client = _client(ctx, namespace, context, kubeconfig)
    try:
        flows = client.list_flows(all_namespaces)
    except ClusterError as error:
        _fail(str(error))
    if form in ("json", "yaml"):
        _show_objects(flows, form, as_list=True)  # an empty list too, as kubectl does
        return
    if not flows:
        where = "any namespace" if all_namespaces else f"namespace {client.namespace}"
        Console(stderr=True).print(f"No DAGFlows in {where}.")
        return
    if form == "name":
        _show_objects(flows, form, as_list=True)
        return
    listing = flowview.flows_listing(flows, all_namespaces, wide=form == "wide")
    _show_table(Console(highlight=False), listing)


@app.command()
def get(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(metavar="FLOW")],
    output: OutputOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Show a flow: its works, its runs, its endpoint and its outputs (-o wide: Jobs and starts)."""
    form = _output_format(output)
    client = _client(ctx, namespace, context, kubeconfig)
    found = _get(client, flow)
    if form in ("json", "yaml", "name"):
        _show_objects([found], form, as_list=False)
        return
    status = found.get("status") or {}
    out = Console(highlight=False, soft_wrap=True)
    out.print(flowview.progress(found))
    if status.get("message"):
        out.print(escape(str(status["message"])))
    try:  # the operator's Warning while nothing checks its author's permissions (docs/security.md)
        unchecked = [
            event
            for event in client.events()
            if event.get("reason") == "PermissionsUnchecked"
            and (event.get("involvedObject") or {}).get("uid") == found["metadata"].get("uid")
        ]
    except ClusterError:  # a reader who may not list Events sees the rest
        unchecked = []
    if unchecked:
        out.print(f"[yellow]Warning:[/] {escape(str(unchecked[-1].get('message')))}")
    out.print()
    _show_table(out, flowview.works_listing(found, wide=form == "wide"))
    gates = flowview.waiting_gates(found)
    if gates:
        out.print("\nWaiting for approval:")
        for line in gates:
            out.print(f"  {escape(line)}")
    if status.get("runs"):
        out.print()
        _show_table(out, flowview.runs_listing(found))
    if status.get("endpoint"):
        out.print(f"\nEndpoint: {escape(status['endpoint'])}")
    if status.get("workspaceClaim"):
        claim = escape(status["workspaceClaim"])
        out.print(f"\nWorkspace: PersistentVolumeClaim {claim}, at /workspace in the works")
    outputs = flowview.outputs_lines(found)
    if outputs:
        out.print("\nOutputs:")
        for line in outputs:
            out.print(f"  {escape(line)}")


@app.command()
def graph(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="FLOW|FILE", help="A flow on the cluster, or a manifest file.")
    ],
    output: Annotated[
        str, typer.Option("--format", "-o", help="text, mermaid or dot.", case_sensitive=False)
    ] = "text",
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Draw a flow's DAG: as text, or as Mermaid or Graphviz dot source."""
    form = output.lower()
    if form not in flowview.GRAPH_FORMATS:
        _fail(f"--format {output!r}: use one of {', '.join(flowview.GRAPH_FORMATS)}")
    phases: dict[str, str] = {}
    if Path(source).is_file() or source == STDIN:
        report = validate_file(source)
        if report.problems:
            _fail(f"{source}: {report.problems[0][0]}: {report.problems[0][1]}")
        text = sys.stdin.read() if source == STDIN else Path(source).read_text(encoding="utf-8")
        found = next(obj for obj in _objects(list(yaml.safe_load_all(text))) if is_dagflow(obj))
    else:
        found = _get(_client(ctx, namespace, context, kubeconfig), source)
        phases = {
            work["name"]: work.get("phase", "Pending")
            for work in (found.get("status") or {}).get("works") or []
        }
    spec = DAGFlowSpec.model_validate(found["spec"])
    typer.echo(flowview.graph(spec, form, found["metadata"]["name"], phases), nl=False)


@app.command()
def logs(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(metavar="FLOW")],
    work: Annotated[str | None, typer.Argument(metavar="[WORK]", help="Only this work's pods.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the pods write.")] = False,
    run: Annotated[
        int | None, typer.Option("--run", help="Pods of this run (default: the current one).")
    ] = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Print the logs of a flow's pods, each line prefixed with its work (and matrix instance)."""
    client = _client(ctx, namespace, context, kubeconfig)
    found = _get(client, flow)
    run = run or (found.get("status") or {}).get("run")
    try:
        pods = client.pods(flow, work, run)
    except ClusterError as error:
        _fail(str(error))
    if not pods:
        what = f"{flow}{f' work {work}' if work else ''} in run {run}"
        try:
            archived = archived_logs(client, found, work, int(run or 0))
        except ArchiveUnavailable as error:
            _fail(f"no pods of {what}: {error}")
        if not archived:
            _fail(f"no pods of {what}, and no log of theirs in the artifact store")
        typer.echo(f"The pods of {what} are gone: their logs as archived in the artifact store.", err=True)
        matrix_works = {
            entry.get("name") for entry in (found.get("spec") or {}).get("works") or [] if "matrix" in entry
        }
        for log in archived:
            prefix = log.work + (_instance_of(log.pod) if log.work in matrix_works else "")
            for line in log.lines:
                typer.echo(f"[{prefix}] {line}")
        return
    printing = threading.Lock()

    def show(pod: dict[str, Any]) -> None:
        annotations = pod["metadata"].get("annotations") or {}
        prefix = annotations.get("dagflow.dev/work-name", "?")
        if _is_matrix_pod(pod):
            prefix += f"[{annotations.get('batch.kubernetes.io/job-completion-index', '?')}]"
        container = pod["spec"]["containers"][0]["name"]
        try:
            for line in client.logs(pod, container, follow):
                with printing:
                    typer.echo(f"[{prefix}] {line}")
        except ClusterError as error:
            with printing:
                typer.echo(f"[{prefix}] ({error})", err=True)

    threads = [threading.Thread(target=show, args=(pod,), daemon=True) for pod in pods]
    for thread in threads:
        thread.start()
        if not follow:
            thread.join()
    for thread in threads:
        thread.join()


def _instance_of(pod_name: str) -> str:
    """`[N]` for the pod of a matrix work's instance N, from its name (`{job}-{index}-{suffix}`)."""
    parts = pod_name.rsplit("-", 2)
    return f"[{parts[1]}]" if len(parts) == 3 and parts[1].isdigit() else ""


def _is_matrix_pod(pod: dict[str, Any]) -> bool:
    return any(volume.get("name") == "dagflow-matrix" for volume in pod["spec"].get("volumes") or [])


@app.command()
def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8080,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            help="Address to listen on (0.0.0.0: every interface; with --auth kubeconfig it needs "
            "--allow-remote).",
        ),
    ] = "127.0.0.1",
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="With --auth kubeconfig, listen on an --address other machines reach: whoever "
            "reaches it reads the cluster as you.",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="A host name the dashboard answers to, besides localhost and IP addresses (repeatable).",
        ),
    ] = None,
    auth: Annotated[
        str,
        typer.Option(
            "--auth",
            help="kubeconfig: every request reads as you (default); bearer: as the holder of the "
            "request's Authorization: Bearer token (the chart's in-cluster mode).",
        ),
    ] = "kubeconfig",
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Serve the web dashboard: the flows of a namespace, each flow's DAG coloured live by phase.

    Read-only, with your kubeconfig and permissions (like kubectl proxy); open the address it
    prints in a browser. Stop it with Ctrl-C.
    """
    from dagflow.ui.access import AuthMode  # the web server's modules load only for this command
    from dagflow.ui.server import serve

    try:
        mode = AuthMode(auth.lower())
    except ValueError:
        _fail(f"--auth {auth!r}: use kubeconfig or bearer")
    if mode is AuthMode.KUBECONFIG and not _is_loopback(address) and not allow_remote:
        _fail(
            f"--address {address}: with --auth kubeconfig everyone who reaches that address reads "
            "the cluster as you; add --allow-remote if you mean it, or listen on 127.0.0.1"
        )
    try:
        serve(_target(ctx, namespace, context, kubeconfig), address, port, mode, allowed_host or ())
    except ClusterError as error:
        _fail(str(error))


def _is_loopback(address: str) -> bool:
    """Whether only this machine reaches `address`."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


FlowArgument = Annotated[str, typer.Argument(metavar="FLOW")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", metavar="NAME=VALUE", help="Value of a parameter for the new run (repeatable)."
    ),
]


def _on_flow(
    ctx: typer.Context, target: tuple[str | None, str | None, str | None], act: Callable[[FlowClient], str]
) -> None:
    """Do something to one flow and say what was done."""
    client = _client(ctx, *target)
    try:
        message = act(client)
    except ClusterError as error:
        _fail(str(error))
    Console(highlight=False).print(message)


def _requested(client: FlowClient, flow: str, request: RunRequest, params: dict[str, str]) -> str:
    client.get(flow)
    token = client.request(flow, request, params)
    return f"{request.value} of {client.namespace}/{flow} requested (token {token})"


def _suspended(client: FlowClient, flow: str, suspended: bool) -> str:
    client.get(flow)
    client.set_suspend(flow, suspended)
    return f"{client.namespace}/{flow} {'suspended' if suspended else 'resumed'}"


def _deleted(client: FlowClient, flow: str) -> str:
    client.delete(flow)
    return f"dagflow.dagflow.dev/{flow} deleted from namespace {client.namespace}"


def _run_request_verb(request: RunRequest, summary: str) -> None:
    """A command `NAME FLOW [-p NAME=VALUE]...` that asks for a run of the flow."""

    def command(
        ctx: typer.Context,
        flow: FlowArgument,
        param: ParamOption = None,
        namespace: NamespaceOption = None,
        context: ContextOption = None,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        params = _parse_params(param)
        _on_flow(
            ctx, (namespace, context, kubeconfig), lambda client: _requested(client, flow, request, params)
        )

    command.__doc__ = summary
    app.command(request.value)(command)


@app.command("rerun")
def rerun(
    ctx: typer.Context,
    flow: FlowArgument,
    param: ParamOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every work: take nothing from the cache.")
    ] = False,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Start a new run of every work (ends an active run); cached works whose inputs did not change
    are taken from the cache unless --no-cache."""
    params = _parse_params(param)

    def act(client: FlowClient) -> str:
        client.get(flow)
        token = client.request(flow, RunRequest.RERUN, params, no_cache=no_cache)
        without = " without the cache" if no_cache else ""
        return f"rerun of {client.namespace}/{flow} requested{without} (token {token})"

    _on_flow(ctx, (namespace, context, kubeconfig), act)


MessageOption = Annotated[str | None, typer.Option("--message", "-m", help="Why: kept with the decision.")]


def _decided(
    client: FlowClient,
    flow: str,
    work: str,
    decision: ApprovalDecision,
    params: dict[str, str],
    message: str | None,
) -> str:
    try:
        run, token = client.decide(flow, work, decision, params, message)
    except ApprovalError as error:
        _fail(str(error))
    verb = "approval" if decision == ApprovalDecision.APPROVED else "rejection"
    return f"{verb} of {work} in run {run} of {client.namespace}/{flow} requested (token {token})"


@app.command()
def approve(
    ctx: typer.Context,
    flow: FlowArgument,
    work: Annotated[str, typer.Argument(metavar="WORK", help="The gate that waits.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help="Value of a parameter the gate lets its approver set (repeatable).",
        ),
    ] = None,
    message: MessageOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Approve a gate that waits: it runs, and the works after it follow. Needs the approve verb on
    dagflows; you are recorded as the approver, as the API server knows you."""
    params = _parse_params(param)
    _on_flow(
        ctx,
        (namespace, context, kubeconfig),
        lambda client: _decided(client, flow, work, ApprovalDecision.APPROVED, params, message),
    )


@app.command()
def reject(
    ctx: typer.Context,
    flow: FlowArgument,
    work: Annotated[str, typer.Argument(metavar="WORK", help="The gate that waits.")],
    message: MessageOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Reject a gate that waits: it fails (reason Rejected) and the works that need it are skipped."""
    _on_flow(
        ctx,
        (namespace, context, kubeconfig),
        lambda client: _decided(client, flow, work, ApprovalDecision.REJECTED, {}, message),
    )


@app.command()
def plan(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="FILE|FLOW", help="A manifest file, or a flow on the cluster.")
    ],
    param: ParamOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Tell, for each work, whether a new run would take it from the cache (hit) or run it (miss),
    and for a miss which part of its key changed since the newest entry of that work. Creates nothing."""
    client = _client(ctx, namespace, context, kubeconfig)
    if Path(source).is_file() or source == STDIN:
        report = validate_file(source)
        if report.problems:
            _fail(f"{source}: {report.problems[0][0]}: {report.problems[0][1]}")
        text = sys.stdin.read() if source == STDIN else Path(source).read_text(encoding="utf-8")
        found = next(obj for obj in _objects(list(yaml.safe_load_all(text))) if is_dagflow(obj))
    else:
        found = _get(client, source)
    spec = DAGFlowSpec.model_validate(found["spec"])
    params = {param.name: param.default for param in spec.params}
    given = _parse_params(param)
    unknown = sorted(set(given) - set(params))
    if unknown:
        _fail(f"the flow has no parameter {', '.join(unknown)}")
    params.update(given)
    run = int((found.get("status") or {}).get("run") or 0) + 1
    try:
        planned = plan_cache(
            spec, found["metadata"]["name"], params, client.cache_entries, datetime.now(UTC), run=run
        )
    except ClusterError as error:
        _fail(str(error))
    out = Console(highlight=False, soft_wrap=True)
    for work in planned:
        if work.verdict == HIT:
            out.print(f"{escape(work.work)}: [green]hit[/] ({escape(str(work.cached_from))})")
        elif work.verdict == MISS:
            out.print(f"{escape(work.work)}: [yellow]miss[/]: {escape('; '.join(work.reasons))}")
        else:
            out.print(f"{escape(work.work)}: runs ({escape('; '.join(work.reasons))})")
        for warning in work.warnings:
            out.print(f"  [yellow]warning:[/] {escape(warning)}")
    hits = sum(1 for work in planned if work.verdict == HIT)
    out.print(f"{hits} of {len(planned)} works from the cache")


cache_app = typer.Typer(help="List and delete the cache entries of a namespace.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
WorkFilter = Annotated[str | None, typer.Option("--work", help="Only the entries of this work.")]
AgeFilter = Annotated[
    str | None,
    typer.Option("--older-than", metavar="DURATION", help="Only entries older than this (e.g. 72h)."),
]


def _entries(client: FlowClient, work: str | None, older_than: str | None) -> list[dict[str, Any]]:
    try:
        limit = duration_seconds(older_than) if older_than else None
    except ValueError as error:
        _fail(f"--older-than: {error}")
    now = datetime.now(UTC)
    selector = f"dagflow.dev/work={naming.label_value(work)}" if work else None
    try:
        listed = client.cache_entries(selector)
    except ClusterError as error:
        _fail(str(error))
    found = []
    for entry in listed:
        spec = entry.get("spec") or {}
        if work and spec.get("work") != work:
            continue
        created = datetime.fromisoformat(str(spec.get("createdAt")).replace("Z", "+00:00"))
        if limit is not None and (now - created).total_seconds() <= limit:
            continue
        found.append(entry)
    return sorted(
        found, key=lambda entry: (entry["spec"].get("work", ""), entry["spec"].get("createdAt", ""))
    )


@cache_app.command("ls")
def cache_ls(
    ctx: typer.Context,
    work: WorkFilter = None,
    older_than: AgeFilter = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """List the cache entries: work, the flow and run that ran it, its image, age and key."""
    client = _client(ctx, namespace, context, kubeconfig)
    listing = flowview.Listing(["NAME", "WORK", "FLOW", "RUN", "IMAGE", "AGE", "KEY"])
    for entry in _entries(client, work, older_than):
        spec = entry["spec"]
        listing.rows.append(
            [
                entry["metadata"]["name"],
                str(spec.get("work")),
                str(spec.get("flow")),
                str(spec.get("run")),
                str(spec.get("image") or "-"),
                flowview.age(spec.get("createdAt")),
                str(spec.get("key", ""))[:12],
            ]
        )
    _show_table(Console(highlight=False, soft_wrap=True), listing)


@cache_app.command("rm")
def cache_rm(
    ctx: typer.Context,
    work: WorkFilter = None,
    older_than: AgeFilter = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Every entry of the namespace.")] = False,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Delete cache entries (of a work, older than a duration, or --all): their works run again."""
    if not (work or older_than or all_entries):
        _fail("say which entries: --work W, --older-than D, or --all")
    client = _client(ctx, namespace, context, kubeconfig)
    entries = _entries(client, work, older_than)
    for entry in entries:
        try:
            client.delete_cache_entry(entry["metadata"]["name"])
        except ClusterError as error:
            _fail(str(error))
    noun = "entry" if len(entries) == 1 else "entries"
    Console(highlight=False).print(f"{len(entries)} cache {noun} deleted from namespace {client.namespace}")


_run_request_verb(
    RunRequest.RETRY,
    "Start a run of the works that failed, were skipped or stopped; the others keep their outcomes.",
)


def _flow_verb(name: str, summary: str, act: Callable[[FlowClient, str], str]) -> None:
    """A command `NAME FLOW` that does `act` to the flow, with kubectl's options as every command."""

    def command(
        ctx: typer.Context,
        flow: FlowArgument,
        namespace: NamespaceOption = None,
        context: ContextOption = None,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        _on_flow(ctx, (namespace, context, kubeconfig), lambda client: act(client, flow))

    command.__doc__ = summary
    app.command(name)(command)


_flow_verb(
    "stop",
    "Stop the current run: its running Jobs are deleted, what did not finish ends Stopped.",
    lambda client, flow: _requested(client, flow, RunRequest.STOP, {}),
)
_flow_verb(
    "suspend",
    "Hold the flow: no work starts and no scheduled run begins; running works finish.",
    lambda client, flow: _suspended(client, flow, True),
)
_flow_verb(
    "resume",
    "Let a suspended flow go on where it stood.",
    lambda client, flow: _suspended(client, flow, False),
)
_flow_verb("delete", "Delete a flow, and with it its Jobs, Deployments, Services and ConfigMaps.", _deleted)


if __name__ == "__main__":
    app()
