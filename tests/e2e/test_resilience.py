"""No call hangs forever: an API server that stops answering, or vanishes, neither wedges the
operator's loop nor its shutdown, and the liveness probe tells when the loop is stuck.

Most tests put a relay (tests/e2e/api_proxy.py) between their own operator and the API server and
make it hang or vanish for that operator only; the last one stops the shared cluster's API server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api_proxy import ApiProxy
from tests.e2e.conftest import delete_webhook_configurations, forget_peer
from tests.e2e.flows import create, flow, jobs_per_run_and_work, status, wait_for_phase, work, works_by_name
from tests.kube import control_plane_pid, kubectl, paused, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

SHUTDOWN_LIMIT = 10.0


def chain(name: str, length: int, duration: str = "2s") -> dict[str, object]:
    works = [work("w0", duration=duration)]
    works += [work(f"w{index}", f"w{index - 1}", duration=duration) for index in range(1, length)]
    return flow(name, works)


def phase_of(namespace: str, flow_name: str, work_name: str) -> str | None:
    found = works_by_name(status(namespace, flow_name)).get(work_name) or {}
    return found.get("phase")


def health(operator: OperatorProcess) -> int:
    """The HTTP status of the operator's liveness endpoint."""
    try:
        with urllib.request.urlopen(operator.health_url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def stop_timed(operator: OperatorProcess) -> float:
    """SIGTERM; how long the process took to exit (killed after 30 s, and then the test fails)."""
    assert operator.process is not None
    process = operator.process
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
    operator.process = None
    return time.monotonic() - started


@pytest.fixture
def relayed(cluster: object, tmp_path: Path) -> Iterator[ApiProxy]:
    kubeconfig = Path(os.environ["KUBECONFIG"])
    proxy = ApiProxy.for_kubeconfig(kubeconfig, tmp_path / "relayed.kubeconfig")
    yield proxy
    proxy.close()
    # An operator that could not reach the API server on its way out left its webhook behind.
    delete_webhook_configurations()


@pytest.mark.usefixtures("without_shared_operator")
@pytest.mark.parametrize("failure", ["gone", "hung"])
def test_sigterm_stops_the_operator_within_10s_when_its_api_server_is_gone_or_hung(
    failure: str, namespace: str, tmp_path: Path, relayed: ApiProxy
) -> None:
    operator = OperatorProcess(tmp_path, kubeconfig=tmp_path / "relayed.kubeconfig")
    operator.start()
    try:
        create(chain("busy", 3), namespace)
        # A fresh operator first lists (through the relay) what earlier tests left to the garbage collector.
        wait_for(lambda: phase_of(namespace, "busy", "w0") == "Running", timeout=120, what="w0 to run")
        if failure == "gone":
            relayed.close()
        else:
            relayed.hang_requests()
        time.sleep(1)
        took = stop_timed(operator)
    finally:
        operator.stop()
        forget_peer(operator.identity)
    log = operator.log_path.read_text()
    assert took < SHUTDOWN_LIMIT, f"the operator took {took:.1f}s to stop; see {operator.log_path}"
    assert "Clean-up did not finish in time" in log, f"see {operator.log_path}"


@pytest.mark.usefixtures("without_shared_operator")
def test_liveness_fails_while_the_reconcile_loop_is_stuck_and_recovers_after(
    namespace: str, tmp_path: Path, relayed: ApiProxy
) -> None:
    operator = OperatorProcess(
        tmp_path,
        kubeconfig=tmp_path / "relayed.kubeconfig",
        env={"DAGFLOW_LIVENESS_STALL_SECONDS": "5"},
    )
    operator.start()
    try:
        manifest = chain("stuck", 3, duration="1s")
        create(manifest, namespace)
        wait_for(lambda: status(namespace, "stuck").get("phase") == "Succeeded", timeout=60, what="run 1")
        assert health(operator) == 200
        # The operator's calls hang from now on, while its watches still bring news (here: a stop
        # request, which its webhook admits without asking the API server, unlike an edit or a
        # rerun, whose author's permissions it checks there): its passes wait for answers that do
        # not come.
        relayed.hang_requests()
        kubectl("annotate", "dagflow", "stuck", "dagflow.dev/stop=late", namespace=namespace)
        started = time.monotonic()
        wait_for(lambda: health(operator) == 500, timeout=60, interval=1, what="the liveness probe to fail")
        failed_after = time.monotonic() - started
        relayed.resume()
        wait_for(
            lambda: (status(namespace, "stuck").get("handledRequests") or {}).get("stop") == "late",
            timeout=60,
            what="the stop request to be answered",
        )
        final = wait_for_phase(namespace, "stuck", timeout=120)
        assert final["phase"] == "Succeeded" and final["run"] == 1, final
        wait_for(lambda: health(operator) == 200, timeout=30, interval=1, what="the liveness probe to pass")
        assert operator.process is not None and operator.process.poll() is None, "the operator exited"
    finally:
        operator.stop()
    assert failed_after < 45, f"liveness failed only after {failed_after:.0f}s"
    assert set(jobs_per_run_and_work(namespace).values()) == {1}


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


@pytest.mark.disruptive
def test_flow_completes_after_the_api_server_stopped_answering_for_90s(
    namespace: str, running_operator: OperatorProcess
) -> None:
    assert running_operator.process is not None
    operator_pid = running_operator.process.pid
    create(chain("paused", 4), namespace)
    wait_for(lambda: phase_of(namespace, "paused", "w1") == "Running", timeout=60, what="w1 to run")
    for component in ("kube-controller-manager", "kube-scheduler"):
        assert "--leader-elect=false" in command_line(control_plane_pid(component)), (
            f"{component} would exit after losing its lease; the cluster predates leader-elect=false:"
            " recreate it (tests/cluster/cluster.sh down, then up)"
        )
    with paused("kube-apiserver"):
        time.sleep(90)
    final = wait_for_phase(namespace, "paused", timeout=240)
    assert final["phase"] == "Succeeded", final
    assert running_operator.process is not None and running_operator.process.pid == operator_pid
    assert running_operator.process.poll() is None, "the operator exited"
    assert set(jobs_per_run_and_work(namespace).values()) == {1}
