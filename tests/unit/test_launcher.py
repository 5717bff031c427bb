"""The launcher (images/launcher), built with Go and run as a pod would run it: matrix instances
and notifications."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from dagflow.controller.builders import LAUNCHER_EXIT_CODE
from tests.kube import REPO_ROOT

SOURCE = REPO_ROOT / "images" / "launcher"
# The launcher's own exit code for a launch that cannot happen (main.go), which the matrix Job's
# pod failure policy names (builders.py).
LAUNCH_FAILURE = LAUNCHER_EXIT_CODE


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "Go is needed to build the launcher (images/launcher)"
    binary = tmp_path_factory.mktemp("launcher") / "dagflow-launcher"
    env = {**os.environ, "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-trimpath", "-o", str(binary), "."], cwd=SOURCE, env=env, check=True)
    subprocess.run([go, "test", "./..."], cwd=SOURCE, env=env, check=True, capture_output=True)
    return binary


def run_instance(
    launcher: Path, tmp_path: Path, index: int, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    values = tmp_path / "values.json"
    values.write_text(
        json.dumps([{"model": "linear", "lr": "0.1"}, {"model": "random forest", "lr": "0.01"}])
    )
    return subprocess.run(
        [str(launcher), "run", "--", *argv],
        env={
            "PATH": os.environ["PATH"],
            "JOB_COMPLETION_INDEX": str(index),
            "DAGFLOW_MATRIX_VALUES": str(values),
            **(env or {}),
        },
        capture_output=True,
        text=True,
    )


def test_the_instance_of_the_pods_index_gets_its_values_in_args_and_env(
    launcher: Path, tmp_path: Path
) -> None:
    result = run_instance(
        launcher,
        tmp_path,
        1,
        "sh",
        "-c",
        'printf "%s|%s|%s" "$1" "$LR" "$HOME_REF"',
        "sh",
        "--model=$(matrix.model)",
        # The operator names the variables whose value holds a matrix reference (builders.py).
        env={"LR": "lr=$(matrix.lr)", "HOME_REF": "$(HOME)", "DAGFLOW_MATRIX_ENV": '["LR", "HOME_REF"]'},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--model=random forest|lr=0.01|$(HOME)"


def test_the_launcher_runs_the_command_and_keeps_its_exit_code(launcher: Path, tmp_path: Path) -> None:
    result = run_instance(launcher, tmp_path, 0, "sh", "-c", "exit 7")
    assert result.returncode == 7


@pytest.mark.parametrize(
    ("index", "argv", "reason"),
    [
        (2, ["true"], "index 2, but"),
        (0, ["true", "$(matrix.depth)"], "no matrix value depth"),
        (0, ["no-such-command-anywhere"], "executable file not found"),
    ],
)
def test_a_launch_that_cannot_happen_says_why_and_fails(
    launcher: Path, tmp_path: Path, index: int, argv: list[str], reason: str
) -> None:
    result = run_instance(launcher, tmp_path, index, *argv)
    assert result.returncode == LAUNCH_FAILURE
    assert reason in result.stderr


def test_install_copies_the_launcher_where_the_work_container_finds_it(
    launcher: Path, tmp_path: Path
) -> None:
    target = tmp_path / "shared" / "launcher"
    target.parent.mkdir()
    subprocess.run([str(launcher), "install", str(target)], check=True)
    assert os.access(target, os.X_OK)
    assert target.read_bytes() == launcher.read_bytes()


# The launcher's exit code for a notification that was not delivered (main.go's notifyFailure).
NOTIFY_FAILURE = 243


def run_notify(
    launcher: Path, tmp_path: Path, url: str, fmt: str, event: dict[str, object]
) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    termination_log = tmp_path / "termination-log"
    result = subprocess.run(
        [str(launcher), "notify"],
        env={
            "DAGFLOW_NOTIFY_URL": url,
            "DAGFLOW_NOTIFY_FORMAT": fmt,
            "DAGFLOW_NOTIFY_EVENT": json.dumps(event),
            "DAGFLOW_NOTIFY_ATTEMPTS": "1",
            "DAGFLOW_TERMINATION_LOG": str(termination_log),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, json.loads(termination_log.read_text())


def test_notify_posts_the_event_and_says_in_its_termination_message_whether_it_was_sent(
    launcher: Path, tmp_path: Path
) -> None:
    received: list[tuple[str, str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200 if self.path == "/ok" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    event = {
        "namespace": "team-a",
        "flow": "ml-pipeline",
        "run": 4,
        "phase": "Succeeded",
        "failedWorks": [],
        "message": "",
        "startedAt": "2025-01-02T03:04:05Z",
        "finishedAt": "2025-01-02T03:10:00Z",
    }
    try:
        result, message = run_notify(launcher, tmp_path, base + "/ok", "slack", event)
        assert result.returncode == 0, result.stderr
        assert message == {"sent": True, "status": 200, "attempts": 1}
        assert received == [
            ("/ok", "application/json", b'{"text":"DAGFlow team-a/ml-pipeline run 4 Succeeded"}')
        ]

        result, message = run_notify(launcher, tmp_path, base + "/secret-token", "json", event)
        assert result.returncode == NOTIFY_FAILURE
        refused = "HTTP 404 Not Found, not retried"
        assert message == {"sent": False, "status": 404, "attempts": 1, "error": refused}
        assert json.loads(received[-1][2]) == event
        assert "secret-token" not in result.stderr
    finally:
        server.shutdown()
        server.server_close()

    result, message = run_notify(launcher, tmp_path, base + "/ok", "teams", event)
    assert result.returncode == LAUNCH_FAILURE
    assert message["sent"] is False and "it must be slack or json" in str(message["error"])
