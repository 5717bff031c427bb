"""The admission webhook as a cluster install runs it: registered as a Service the API server
resolves itself, or switched off, in which case the operator still refuses invalid flows in status.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import delete_webhook_configurations
from tests.e2e.flows import create, flow, wait_for_phase, work
from tests.kube import apply, get_json, kubectl
from tests.operator_process import OperatorProcess, free_port

pytestmark = pytest.mark.local_cluster

CONFIGURATION = "dagflow.dev"
CYCLE = [work("a", "c"), work("b", "a"), work("c", "b")]


def host_address() -> str:
    """This machine's address on its network: where the API server can reach a local process.

    Endpoints may not be loopback addresses, so the webhook's Service points here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; this picks the outgoing interface
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "this machine has no non-loopback IPv4 address"
    return address


def service_in_front_of_this_machine(namespace: str, name: str, port: int) -> None:
    """A Service without selector whose one endpoint is this machine's `port`, as a pod's would be."""
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "webhook", "port": port, "protocol": "TCP"}]},
    }
    endpoints: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name},
        "subsets": [
            {
                "addresses": [{"ip": host_address()}],
                "ports": [{"name": "webhook", "port": port, "protocol": "TCP"}],
            }
        ],
    }
    apply([service, endpoints], namespace=namespace)


def names_the_cycle(message: str) -> bool:
    return any(cycle in message for cycle in ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"))


@pytest.mark.usefixtures("without_shared_operator")
def test_webhook_registered_as_a_service_is_called_through_it(namespace: str, tmp_path: Path) -> None:
    port = free_port()
    service = f"dagflow-webhook-{uuid.uuid4().hex[:6]}"
    service_in_front_of_this_machine(namespace, service, port)
    operator = OperatorProcess(
        tmp_path,
        env={"DAGFLOW_WEBHOOK_SERVICE": f"{namespace}/{service}", "DAGFLOW_WEBHOOK_PORT": str(port)},
    )
    operator.start()
    try:
        webhooks = get_json("validatingwebhookconfiguration", CONFIGURATION)["webhooks"]
        # Three webhooks: the flows, their status and the cache entries, which only the operator
        # may write.
        assert [hook["clientConfig"].get("service") for hook in webhooks] == [
            {"namespace": namespace, "name": service, "port": port, "path": "/validate-dagflow"},
            {"namespace": namespace, "name": service, "port": port, "path": "/validate-dagflow-status"},
            {"namespace": namespace, "name": service, "port": port, "path": "/validate-dagflow-cache-entry"},
        ]
        assert all("url" not in hook["clientConfig"] for hook in webhooks)

        # Refused at apply with the cycle: the API server reached the operator through the Service.
        result = apply(flow("loop", CYCLE), namespace=namespace, check=False)
        assert result.returncode != 0 and names_the_cycle(result.stderr), result.stderr
        create(flow("fine", [work("first"), work("second", "first")]), namespace)
        assert wait_for_phase(namespace, "fine")["phase"] == "Succeeded"
    finally:
        operator.stop()
    delete_webhook_configurations()


@pytest.mark.usefixtures("without_shared_operator")
def test_operator_without_webhook_runs_flows_and_fails_invalid_ones_in_status(
    namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(tmp_path, env={"DAGFLOW_WEBHOOK_ENABLED": "false"})
    operator.start()
    try:
        assert kubectl("get", "validatingwebhookconfiguration", CONFIGURATION, check=False).returncode != 0
        create(flow("fine", [work("first"), work("second", "first")]), namespace)
        assert wait_for_phase(namespace, "fine")["phase"] == "Succeeded"

        # Nothing refuses the cycle at apply; the operator reports it and runs nothing.
        create(flow("loop", CYCLE), namespace)
        final = wait_for_phase(namespace, "loop", "Failed")
        assert names_the_cycle(final["message"]), final
        assert final["conditions"][0]["reason"] == "Invalid"
        loop_jobs = kubectl("get", "jobs", "-l", "dagflow.dev/flow=loop", "-o", "name", namespace=namespace)
        assert not loop_jobs.stdout.strip()
        assert operator.process is not None and operator.process.poll() is None, "the operator exited"
    finally:
        operator.stop()


@pytest.mark.usefixtures("without_shared_operator")
def test_an_invalid_flow_that_got_in_without_the_webhook_can_still_be_cleaned_up(
    namespace: str, tmp_path: Path
) -> None:
    """The webhook judges new specs only: labels, finalizers and deletions of a flow pass."""
    doomed_namespace = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", doomed_namespace)
    # No operator and no webhook: invalid flows get in, one held by a finalizer of some other tool.
    held = flow("loop", CYCLE)
    held["metadata"]["finalizers"] = ["example.com/hold"]
    create(held, namespace)
    create(flow("loop", CYCLE), doomed_namespace)
    operator = OperatorProcess(tmp_path)
    operator.start()
    try:
        assert wait_for_phase(namespace, "loop", "Failed")["conditions"][0]["reason"] == "Invalid"
        # A new invalid spec is still refused.
        changed = flow("loop", [*CYCLE, work("d")])
        refused = apply(changed, namespace=namespace, check=False)
        assert refused.returncode != 0 and names_the_cycle(refused.stderr), refused.stderr

        kubectl("label", "dagflow", "loop", "team=ml", namespace=namespace)
        kubectl("annotate", "dagflow", "loop", "note=cleaning up", namespace=namespace)
        kubectl("delete", "dagflow", "loop", "--wait=false", namespace=namespace)
        assert get_json("dagflow", "loop", namespace=namespace)["metadata"].get("deletionTimestamp")
        kubectl(
            "patch",
            "dagflow",
            "loop",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            namespace=namespace,
        )
        gone = kubectl("get", "dagflow", "loop", namespace=namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout

        # Deleting a namespace deletes its flows, and ends.
        kubectl("delete", "namespace", doomed_namespace, "--timeout=90s", timeout=120)
        assert kubectl("get", "namespace", doomed_namespace, check=False).returncode != 0
    finally:
        operator.stop()
        kubectl("delete", "namespace", doomed_namespace, "--wait=false", "--ignore-not-found", check=False)
    delete_webhook_configurations()
