"""Small helpers that tests use to talk to the local cluster through kubectl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_ROOT / ".venv" / "bin"
CLUSTER_SCRIPT_PATH = REPO_ROOT / "tests" / "cluster" / "cluster.sh"
KUEUE_SCRIPT_PATH = REPO_ROOT / "tests" / "cluster" / "kueue.sh"


# The tests' own local cluster, unless DAGFLOW_CLUSTER_NAME names another: never the demo's
# (`dagflow`), so `make test` leaves a running `make demo` and its operator alone.
TEST_CLUSTER_NAME = "dagflow-test"


def local_cluster_name() -> str:
    return os.environ.get("DAGFLOW_CLUSTER_NAME") or TEST_CLUSTER_NAME


def run_cluster_script(
    *args: str, check: bool = True, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """Run tests/cluster/cluster.sh (up, down, stop, start, status, env, dir) on the tests' cluster."""
    return run_script(CLUSTER_SCRIPT_PATH, args, check, timeout)


def run_kueue_script(
    *args: str, check: bool = True, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """Run tests/cluster/kueue.sh (build, up, start, stop, down, status, dir) on the tests' cluster."""
    return run_script(KUEUE_SCRIPT_PATH, args, check, timeout)


def run_script(
    script: Path, args: tuple[str, ...], check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DAGFLOW_CLUSTER_NAME": local_cluster_name()},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script.name} {' '.join(args)} failed:\n{result.stderr}")
    return result


def kubectl_binary() -> str:
    """The kubectl of the venv (version-matched to the cluster), else the one on PATH."""
    candidate = VENV_BIN / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found; run `make venv`")
    return found


def kubectl(
    *args: str,
    namespace: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against $KUBECONFIG; raise with its stderr when `check` and it fails."""
    cmd = [kubectl_binary()]
    if namespace:
        cmd += ["--namespace", namespace]
    cmd += list(args)
    result = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
        )
    return result


def apply(
    manifest: dict[str, Any] | list[dict[str, Any]] | str, namespace: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply -f -` of one object, a list of objects, or YAML text."""
    if isinstance(manifest, str):
        text = manifest
    elif isinstance(manifest, list):
        text = yaml.safe_dump_all(manifest)
    else:
        text = yaml.safe_dump(manifest)
    return kubectl("apply", "-f", "-", namespace=namespace, input=text, check=check)


def get_json(*args: str, namespace: str | None = None) -> dict[str, Any]:
    """`kubectl get ... -o json` parsed."""
    result = kubectl("get", *args, "-o", "json", namespace=namespace)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def wait_for(
    condition: Callable[[], Any], timeout: float = 60, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (AssertionError, subprocess.SubprocessError, KeyError, IndexError, ValueError) as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {what}; last error: {last_error}")


def apply_crds(directory: Path) -> list[str]:
    """Apply every CRD in `directory` as users do and wait until each is Established; their names."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    names = [
        document["metadata"]["name"]
        for path in sorted(directory.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document.get("kind") == "CustomResourceDefinition"
    ]

    def established() -> bool:
        return all(
            any(
                condition["type"] == "Established" and condition["status"] == "True"
                for condition in get_json("crd", name).get("status", {}).get("conditions") or []
            )
            for name in names
        )

    # Polled rather than `kubectl wait`, which fails while a new CRD has no conditions at all.
    wait_for(established, timeout=60, what=f"the CRDs {', '.join(names)} to be Established")
    return names


def control_plane_pid(component: str) -> int:
    """The pid of a process of the local cluster (kwokctl's binary runtime keeps pid files)."""
    directory = Path(run_cluster_script("dir").stdout.strip())
    pid = int((directory / "pids" / f"{component}.pid").read_text().strip())
    assert component in Path(f"/proc/{pid}/cmdline").read_text(), f"not the pid of {component}"
    return pid


@contextmanager
def paused(component: str) -> Iterator[None]:
    """A process of the local cluster stopped (SIGSTOP) for as long as the block runs."""
    pid = control_plane_pid(component)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def killed_and_restarted(component: str, down_for: float) -> float:
    """SIGKILL a process of the local cluster, as a crash does; start it again `down_for` seconds
    later exactly as kwokctl started it (command line, environment, folder, log and pid file).
    Returns the seconds from the new start until the API server is ready again."""
    pid = control_plane_pid(component)
    proc = Path(f"/proc/{pid}")
    command = (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    environment = dict(
        entry.split(b"=", 1) for entry in (proc / "environ").read_bytes().split(b"\0") if b"=" in entry
    )
    folder = (proc / "cwd").resolve()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not proc.exists() or _zombie(proc), timeout=30, what=f"{component} to exit")
    time.sleep(down_for)
    with (folder / "logs" / f"{component}.log").open("ab") as log:
        started = subprocess.Popen(
            command, cwd=folder, env=environment, stdout=log, stderr=log, start_new_session=True
        )
    # Exactly as kwokctl writes it (no newline): it parses the file when it deletes the cluster.
    (folder / "pids" / f"{component}.pid").write_text(str(started.pid))
    began = time.monotonic()
    wait_for(
        lambda: kubectl("get", "--raw", "/readyz", "--request-timeout=5s", check=False).returncode == 0,
        timeout=120,
        interval=0.5,
        what=f"the API server to be ready after {component} restarted",
    )
    return time.monotonic() - began


def _zombie(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


@contextmanager
def fresh_namespace(prefix: str) -> Iterator[str]:
    """A new namespace `{prefix}-<random>` for as long as the block runs, deleted without waiting."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def grant(namespace: str, name: str, rules: list[dict[str, Any]], subject: dict[str, str]) -> None:
    """A Role `name` with `rules` in `namespace`, bound to `subject` (a RoleBinding's subject)."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }
    apply([role, binding], namespace=namespace)


def kubectl_as(
    user: str, *args: str, namespace: str, document: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl impersonating `user` (`--as`), with `document` as its `-f -`; never raises."""
    extra = ("-f", "-") if document is not None else ()
    return kubectl(
        *args,
        *extra,
        f"--as={user}",
        namespace=namespace,
        input=yaml.safe_dump(document) if document is not None else None,
        check=False,
    )


def service_account_token(namespace: str, name: str, rules: list[dict[str, Any]] | None = None) -> str:
    """A token of a new ServiceAccount `name` in `namespace`, which may do what `rules` allow there
    (nothing when None)."""
    kubectl("create", "serviceaccount", name, namespace=namespace)
    if rules:
        grant(namespace, name, rules, {"kind": "ServiceAccount", "name": name, "namespace": namespace})
    return kubectl("create", "token", name, "--duration=1h", namespace=namespace).stdout.strip()


def table_row(table: str, name: str) -> dict[str, str]:
    """A row of `kubectl get` output by column header; a column left empty (a field the object does
    not have) reads as ""."""
    lines = table.rstrip("\n").split("\n")
    header = lines[0]
    starts = [
        index for index, char in enumerate(header) if char != " " and (index == 0 or header[index - 1] == " ")
    ]
    row = next(line for line in lines[1:] if line.split()[0] == name)
    bounds = [*starts[1:], None]
    return {
        header[start:end].strip(): row[start:end].strip() for start, end in zip(starts, bounds, strict=True)
    }


def service_account_kubeconfig(account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig for the local API server (server and CA of the admin one) with `account`'s token."""
    admin = json.loads(kubectl("config", "view", "--minify", "--raw", "--flatten", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    token = kubectl("create", "token", account, "--duration", "1h", namespace=namespace).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": "local", "user": account, "namespace": namespace}}
        ],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
