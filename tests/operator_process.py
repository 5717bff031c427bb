"""One `dagflow-operator` process as a user runs it, for the end-to-end tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.kube import REPO_ROOT, VENV_BIN, kubectl, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """One `dagflow-operator` process at a time, which a test may kill and start again."""

    def __init__(
        self, log_dir: Path, kubeconfig: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        """`kubeconfig` (default: $KUBECONFIG) is the identity it runs as; `env` adds settings."""
        self.log_path = log_dir / "operator.log"
        self.kubeconfig = kubeconfig
        self.extra_env = dict(env or {})
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        env = {
            **os.environ,
            "DAGFLOW_METRICS_PORT": str(self.metrics_port),
            "DAGFLOW_WEBHOOK_PORT": str(self.webhook_port),
            **self.extra_env,
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "dagflow-operator"), "--liveness", self.health_url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
        wait_for(self._healthy, timeout=60, what=f"the operator to be healthy (log: {self.log_path})")
        if self.extra_env.get("DAGFLOW_WEBHOOK_ENABLED", "true") != "false":
            wait_for(self._webhook_registered, timeout=30, what="the validating webhook to be registered")

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, exactly like a crash or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """SIGTERM: a graceful stop, as on a rollout."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.process.returncode}; see {self.log_path}")
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    @staticmethod
    def _webhook_registered() -> bool:
        result = kubectl("get", "validatingwebhookconfiguration", "dagflow.dev", "-o", "name", check=False)
        return result.returncode == 0
