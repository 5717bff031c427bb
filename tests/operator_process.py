"""One `dagflow-operator` process as a user runs it, for the end-to-end tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path

from tests.kube import REPO_ROOT, VENV_BIN, kubectl, wait_for

# The name the chart gives its approval policies (release dagflow, as tests/chart/helm.py renders it).
APPROVAL_POLICY = "dagflow-dagflow-operator-approvals"


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
        # Its name among peers (kopf peering), kept across restarts as a pod's name is: a restart
        # after a kill takes over its own keep-alive at once instead of waiting for it to expire.
        self.identity = f"dagflow-operator-test-{uuid.uuid4().hex[:8]}"
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
            "POD_ID": self.identity,
            # As the chart runs it: told the approval policies (tests/e2e/test_approvals.py applies
            # the chart's, by this name, where gates are decided).
            "DAGFLOW_APPROVAL_POLICY": APPROVAL_POLICY,
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

    def metrics(self) -> str:
        """What its metrics endpoint answers."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def ensure_running(self) -> None:
        """Started again if an earlier test left it stopped."""
        if self.process is None:
            self.start()

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


class DeployedOperator:
    """The operator a Helm release runs in the cluster (`make e2e-kind`), stopped and started by
    scaling its Deployment, as the end-to-end tests stop and start a local process."""

    def __init__(self, namespace: str, release: str) -> None:
        self.namespace = namespace
        self.release = release
        # The release's operator, not its dashboard (`ui.enabled`).
        self.selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component!=ui"
        self.replicas = 1

    @property
    def deployment(self) -> str:
        names = kubectl("get", "deployments", "-l", self.selector, "-o", "name", namespace=self.namespace)
        found = names.stdout.split()
        assert len(found) == 1, f"expected one Deployment labelled {self.selector}, found {found}"
        return found[0]

    def metrics(self) -> str:
        """What its metrics Service answers, read through the API server's service proxy."""
        selector = f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=metrics"
        names = kubectl("get", "services", "-l", selector, "-o", "name", namespace=self.namespace)
        found = names.stdout.split()
        assert len(found) == 1, f"expected one Service labelled {selector}, found {found} (metrics.enabled)"
        service = found[0].removeprefix("service/")
        path = f"/api/v1/namespaces/{self.namespace}/services/{service}:metrics/proxy/metrics"
        return kubectl("get", "--raw", path).stdout

    def ensure_running(self) -> None:
        kubectl("scale", self.deployment, f"--replicas={self.replicas}", namespace=self.namespace)
        kubectl("rollout", "status", self.deployment, "--timeout=180s", namespace=self.namespace, timeout=200)

    def start(self) -> None:
        self.ensure_running()

    def stop(self) -> None:
        """Scale to zero: the pods get SIGTERM and clean up, as on a rollout."""
        deployment = self.deployment
        current = kubectl("get", deployment, "-o", "jsonpath={.spec.replicas}", namespace=self.namespace)
        self.replicas = max(int(current.stdout or 1), 1)
        kubectl("scale", deployment, "--replicas=0", namespace=self.namespace)
        wait_for(self._no_pods, timeout=120, what=f"the pods of {deployment} to be gone")

    def _no_pods(self) -> bool:
        pods = kubectl("get", "pods", "-l", self.selector, "-o", "name", namespace=self.namespace)
        return not pods.stdout.split()
