"""The `dagflow` command (and `kubectl dagflow`) against the local cluster, run as a person runs it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pexpect
import pyte
import pytest
import yaml

from tests.e2e.flows import create, failing, flow, status, wait_for_phase, work, works_by_name
from tests.e2e.test_runs import wait_for_run
from tests.kube import VENV_BIN, get_json, wait_for
from tests.operator_process import OperatorProcess

DAGFLOW = str(VENV_BIN / "dagflow")


def dagflow(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DAGFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160"},
    )


def manifest(tmp_path: Path, document: dict[str, Any]) -> str:
    path = tmp_path / f"{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.local_cluster
def test_submit_watch_exits_0_when_the_flow_succeeds(
    namespace: str, running_operator: OperatorProcess, tmp_path: Path
) -> None:
    path = manifest(tmp_path, flow("fine", [work("a"), work("b", "a")]))
    result = dagflow("submit", path, "--watch", "-n", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fine: Succeeded" in result.stdout
    assert status(namespace, "fine")["phase"] == "Succeeded"


@pytest.mark.local_cluster
def test_submit_watch_exits_1_when_the_flow_fails_naming_the_failed_work(
    namespace: str, running_operator: OperatorProcess, tmp_path: Path
) -> None:
    path = manifest(tmp_path, flow("broken", [work("a"), work("b", "a", annotations=failing(exit_code=3))]))
    result = dagflow("submit", path, "--watch", "-n", namespace)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken: Failed: work b failed" in result.stdout, result.stdout
    # The failed work is named with the message its status gives.
    message = works_by_name(status(namespace, "broken"))["b"]["message"]
    assert f"  b: {message}" in result.stdout.splitlines(), result.stdout
    # Outside a terminal the view is a line per change, then the works.
    assert any(line.startswith("broken  run 1  Running") for line in result.stdout.splitlines()), (
        result.stdout
    )


@pytest.mark.local_cluster
def test_submit_sets_parameters_and_refuses_unknown_ones(
    namespace: str, running_operator: OperatorProcess, tmp_path: Path
) -> None:
    train = work("train")
    train["container"]["args"] = ["--lr", "$(params.lr)"]
    path = manifest(tmp_path, flow("tuned", [train], params=[{"name": "lr", "default": "0.1"}]))
    refused = dagflow("submit", path, "-p", "epochs=3", "-n", namespace)
    assert refused.returncode != 0 and "has no parameter epochs (it has: lr)" in refused.stderr
    assert dagflow("submit", path, "-p", "lr=0.05", "-n", namespace, "--watch").returncode == 0
    assert status(namespace, "tuned")["params"] == {"lr": "0.05"}


@pytest.mark.local_cluster
def test_every_run_control_verb_changes_the_flow_as_documented(
    namespace: str, running_operator: OperatorProcess, tmp_path: Path
) -> None:
    slow = {"sim.dagflow.dev/duration": "4s"}
    path = manifest(tmp_path, flow("ctl", [work("a", annotations=slow), work("b", "a", annotations=slow)]))
    assert dagflow("submit", path, "-n", namespace).returncode == 0

    assert dagflow("suspend", "ctl", "-n", namespace).returncode == 0
    assert get_json("dagflow", "ctl", namespace=namespace)["spec"]["suspend"] is True
    wait_for(
        lambda: works_by_name(status(namespace, "ctl")).get("a", {}).get("phase") == "Succeeded", timeout=60
    )
    time.sleep(2)
    assert works_by_name(status(namespace, "ctl"))["b"]["phase"] == "Pending", "held while suspended"
    assert dagflow("resume", "ctl", "-n", namespace).returncode == 0
    wait_for_run(namespace, "ctl", 1, "Succeeded")

    assert dagflow("rerun", "ctl", "-n", namespace).returncode == 0
    wait_for(lambda: status(namespace, "ctl").get("run") == 2, timeout=30, what="run 2")
    assert dagflow("stop", "ctl", "-n", namespace).returncode == 0
    stopped = wait_for_run(namespace, "ctl", 2, "Stopped")
    assert stopped["runs"][-1]["trigger"] == "Rerun"

    assert dagflow("retry", "ctl", "-n", namespace).returncode == 0
    retried = wait_for_run(namespace, "ctl", 3, "Succeeded")
    assert retried["runs"][-1]["trigger"] == "Retry"

    listed = dagflow("list", "-n", namespace)
    assert listed.returncode == 0 and "ctl" in listed.stdout and "Succeeded" in listed.stdout
    shown = dagflow("get", "ctl", "-n", namespace)
    assert shown.returncode == 0
    for text in ("WORK", "PHASE", "a", "b", "Retry", "Rerun", "Stopped"):
        assert text in shown.stdout, shown.stdout

    assert dagflow("delete", "ctl", "-n", namespace).returncode == 0
    wait_for(
        lambda: (
            subprocess.run(
                ["kubectl", "get", "dagflow", "ctl", "-n", namespace], capture_output=True
            ).returncode
            != 0
        ),
        timeout=30,
        what="the flow to be gone",
    )


@pytest.mark.local_cluster
def test_kubectl_finds_the_command_as_its_dagflow_plugin(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("plugged", [work("only")]), namespace)
    wait_for_phase(namespace, "plugged", "Succeeded")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "COLUMNS": "160"}
    result = subprocess.run(
        [str(VENV_BIN / "kubectl"), "dagflow", "get", "plugged", "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "plugged" in result.stdout and "Succeeded" in result.stdout and "only" in result.stdout
    plugins = subprocess.run(
        [str(VENV_BIN / "kubectl"), "plugin", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "kubectl-dagflow" in plugins.stdout


@pytest.mark.local_cluster
def test_the_live_view_as_a_person_sees_it_in_a_terminal(
    namespace: str, running_operator: OperatorProcess, tmp_path: Path
) -> None:
    slow = {"sim.dagflow.dev/duration": "3s"}
    grid = work("train", "prep", annotations=slow)
    grid["matrix"] = {"model": ["a", "b", "c"]}
    grid["container"]["command"] = ["train", "$(matrix.model)"]
    path = manifest(tmp_path, flow("watched", [work("prep", annotations=slow), grid]))
    screen = pyte.Screen(120, 30)
    stream = pyte.ByteStream(screen)
    child = pexpect.spawn(
        DAGFLOW,
        ["submit", path, "--watch", "-n", namespace],
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"},
        dimensions=(30, 120),
        timeout=120,
    )
    seen_running = False
    while child.isalive() or not child.eof():
        try:
            stream.feed(child.read_nonblocking(65536, timeout=1))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            break
        text = "\n".join(screen.display)
        seen_running = seen_running or ("Running" in text and "prep" in text and "train" in text)
    child.close()
    text = "\n".join(line.rstrip() for line in screen.display)
    assert child.exitstatus == 0, text
    assert seen_running, "the view showed the flow while it ran"
    lines = [line for line in text.splitlines() if line.strip()]
    assert any(
        line.startswith("watched") and "Succeeded" in line and "2/2 works" in line for line in lines
    ), text
    train_row = next(line for line in lines if line.startswith("train"))
    assert "Succeeded" in train_row and "3/3" in train_row, text
    assert "watched: Succeeded" in text


def test_context_and_kubeconfig_choose_the_cluster_as_with_kubectl(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("chosen", [work("only")]), namespace)
    kubeconfig = os.environ["KUBECONFIG"]
    context = subprocess.run(
        ["kubectl", "config", "current-context"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env_without = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    listed = subprocess.run(
        [DAGFLOW, "--kubeconfig", kubeconfig, "--context", context, "list", "-n", namespace],
        capture_output=True,
        text=True,
        env={**env_without, "HOME": "/nonexistent", "COLUMNS": "160"},
        timeout=60,
    )
    assert listed.returncode == 0 and "chosen" in listed.stdout, listed.stderr
    wrong = dagflow("list", "--context", "no-such-context", "-n", namespace)
    assert wrong.returncode == 1 and "no-such-context" in wrong.stderr
