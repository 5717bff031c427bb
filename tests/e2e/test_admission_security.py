"""No privilege beyond the user's without the chart's policy, only the operator writes a flow's status,
the webhook's certificate is renewed, validation fails closed, and a taken port stops the operator at
once. The operator runs as `make run` runs it: its own process, webhook registered by itself, no
ValidatingAdmissionPolicy installed."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests import kube
from tests.chart.helm import objects_of, render
from tests.e2e.conftest import delete_webhook_configurations
from tests.e2e.flows import create, flow, jobs, wait_for_phase, work
from tests.kube import VENV_BIN, get_json, kubectl, kubectl_as, wait_for
from tests.operator_process import DeployedOperator, OperatorProcess, free_port

USER = "mallory"
CONFIGURATION = "dagflow.dev"
FLOWS = {
    "apiGroups": ["dagflow.dev"],
    "resources": ["dagflows"],
    "verbs": ["get", "create", "patch", "update"],
}
FLOW_STATUS = {
    "apiGroups": ["dagflow.dev"],
    "resources": ["dagflows/status"],
    "verbs": ["get", "patch", "update"],
}
JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}
CYCLE = [work("a", "b"), work("b", "a")]


def grant(namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    kube.grant(
        namespace, name, rules, {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}
    )


def as_user(*args: str, namespace: str, document: dict[str, Any] | None = None) -> Any:
    return kubectl_as(USER, *args, namespace=namespace, document=document)


def no_policy_installed() -> None:
    policies = kubectl("get", "validatingadmissionpolicies", "-o", "name", check=False).stdout
    assert "user-permissions" not in policies, "this test is about the operator's own check"


@pytest.mark.local_cluster
def test_a_user_who_may_create_flows_but_not_jobs_is_refused_by_the_operators_webhook(
    namespace: str, running_operator: OperatorProcess
) -> None:
    no_policy_installed()
    grant(namespace, "flows", [FLOWS])
    refused = as_user("create", namespace=namespace, document=flow("sneaky", [work("a")]))
    assert refused.returncode != 0
    assert f"{USER} may not create Jobs in namespace {namespace}" in refused.stderr, refused.stderr
    assert "sneaky" not in kubectl("get", "dagflows", "-o", "name", namespace=namespace).stdout
    time.sleep(2)
    assert not jobs(namespace)

    # With Jobs allowed a plain flow gets in; a serve work needs Deployments and Services too.
    grant(namespace, "jobs", [JOBS])
    assert as_user("create", namespace=namespace, document=flow("plain", [work("a")])).returncode == 0
    assert wait_for_phase(namespace, "plain")["phase"] == "Succeeded"
    serving = flow("web", [work("a"), work("web", "a", serve={"port": 8080})])
    refused = as_user("create", namespace=namespace, document=serving)
    assert refused.returncode != 0
    assert f"{USER} may not create Deployments and Services in namespace {namespace}" in refused.stderr

    # A run request on a flow someone else made is checked against the requester too.
    kubectl("delete", "rolebinding", "jobs", namespace=namespace)
    wait_for(
        lambda: as_user("auth", "can-i", "create", "jobs", namespace=namespace).stdout.strip() == "no",
        timeout=30,
        what="the Jobs grant to go",
    )
    rerun = as_user("annotate", "dagflow", "plain", "dagflow.dev/rerun=again", namespace=namespace)
    assert rerun.returncode != 0 and f"{USER} may not create Jobs" in rerun.stderr, rerun.stderr
    # A label starts nothing and passes.
    assert as_user("label", "dagflow", "plain", "team=ml", namespace=namespace).returncode == 0


@pytest.mark.local_cluster
def test_status_writes_by_anyone_but_the_operator_are_refused(
    namespace: str, running_operator: OperatorProcess
) -> None:
    grant(namespace, "status", [FLOWS, FLOW_STATUS, JOBS])
    create(flow("owned", [work("a", duration="1s")]), namespace)
    assert wait_for_phase(namespace, "owned")["phase"] == "Succeeded"
    for forged in ({"runSpecHash": "forged"}, {"outputsConfigMap": "planted"}, {"phase": "Failed"}):
        refused = as_user(
            "patch",
            "dagflow",
            "owned",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": forged}),
            namespace=namespace,
        )
        assert refused.returncode != 0, forged
        assert f"{USER} may not write the status of a DAGFlow" in refused.stderr, refused.stderr
    current = get_json("dagflow", "owned", namespace=namespace)["status"]
    assert current["phase"] == "Succeeded" and current.get("runSpecHash") != "forged"
    # The operator's own status writes go on: a new run is reported.
    kubectl("annotate", "dagflow", "owned", "dagflow.dev/rerun=1", namespace=namespace)
    wait_for(lambda: get_json("dagflow", "owned", namespace=namespace)["status"].get("run") == 2, timeout=60)


def registered_ca() -> str:
    webhooks = get_json("validatingwebhookconfiguration", CONFIGURATION).get("webhooks") or []
    bundles = {hook["clientConfig"].get("caBundle", "") for hook in webhooks}
    assert len(bundles) == 1, bundles
    return bundles.pop()


@pytest.mark.local_cluster
@pytest.mark.usefixtures("without_shared_operator")
def test_the_webhook_certificate_is_renewed_before_it_expires(namespace: str, tmp_path: Path) -> None:
    operator = OperatorProcess(tmp_path, env={"DAGFLOW_WEBHOOK_CERTIFICATE_LIFETIME_SECONDS": "15"})
    operator.start()
    try:
        first = registered_ca()
        expiry = x509.load_pem_x509_certificate(base64.b64decode(first)).not_valid_after_utc.timestamp()
        wait_for(lambda: registered_ca() != first, timeout=30, what="a renewed CA bundle")
        time.sleep(max(0.0, expiry - time.time()) + 2)
        # The first certificate has expired: the webhook still answers (it refuses the cycle itself).
        refused = kubectl(
            "create", "-f", "-", input=yaml.safe_dump(flow("loop", CYCLE)), namespace=namespace, check=False
        )
        assert refused.returncode != 0, refused.stdout
        assert "a -> b -> a" in refused.stderr or "b -> a -> b" in refused.stderr, refused.stderr
        create(flow("fine", [work("a")]), namespace)
        assert wait_for_phase(namespace, "fine")["phase"] == "Succeeded"
        assert "Webhook certificate" in operator.log_path.read_text()
    finally:
        operator.stop()
    delete_webhook_configurations()


@pytest.mark.local_cluster
@pytest.mark.usefixtures("without_shared_operator")
def test_the_charts_webhook_configuration_stays_and_fails_closed_while_no_operator_runs(
    namespace: str, tmp_path: Path
) -> None:
    chart_made = objects_of(render(), "ValidatingWebhookConfiguration")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(chart_made))
    operator = OperatorProcess(tmp_path)
    try:
        operator.start()
        wait_for(
            lambda: bool(get_json("validatingwebhookconfiguration", CONFIGURATION).get("webhooks")),
            timeout=30,
        )
        create(flow("before", [work("a")]), namespace)
        operator.stop()
        left = get_json("validatingwebhookconfiguration", CONFIGURATION)
        assert {hook["failurePolicy"] for hook in left["webhooks"]} == {"Fail"}
        # Nothing answers: a write is refused rather than let in unchecked; a deletion passes.
        refused = kubectl(
            "create",
            "-f",
            "-",
            input=yaml.safe_dump(flow("while-down", [work("a")])),
            namespace=namespace,
            check=False,
        )
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr
        kubectl("delete", "dagflow", "before", namespace=namespace)
    finally:
        operator.stop()
        delete_webhook_configurations()


@pytest.mark.local_cluster
@pytest.mark.usefixtures("without_shared_operator")
def test_with_no_webhook_and_no_policy_the_operator_says_nothing_checks_permissions(
    namespace: str, tmp_path: Path
) -> None:
    no_policy_installed()
    operator = OperatorProcess(
        tmp_path, env={"DAGFLOW_WEBHOOK_ENABLED": "false", "DAGFLOW_UNCHECKED_WARNING_INTERVAL_SECONDS": "3"}
    )
    operator.start()
    try:
        create(flow("unguarded", [work("a")]), namespace)
        wait_for_phase(namespace, "unguarded")

        def warnings_in_log() -> int:
            return operator.log_path.read_text().count("Users' permissions are NOT checked")

        wait_for(lambda: warnings_in_log() >= 2, timeout=30, what="the warning at start and again")
        with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
            assert "dagflow_user_permissions_unchecked 1.0" in response.read().decode()

        def warning_events() -> list[dict[str, Any]]:
            events = get_json(
                "events", "--field-selector", "involvedObject.name=unguarded", namespace=namespace
            )
            return [event for event in events["items"] if event["reason"] == "PermissionsUnchecked"]

        wait_for(warning_events, timeout=30, what="a Warning Event on the flow")
        assert warning_events()[0]["type"] == "Warning"
        shown = subprocess.run(
            [str(VENV_BIN / "dagflow"), "get", "unguarded", "-n", namespace],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "Warning: Nothing checks that this flow's author may create" in shown, shown
    finally:
        operator.stop()


def test_a_checked_operator_reports_its_permission_check_in_its_metrics(
    running_operator: OperatorProcess | DeployedOperator,
) -> None:
    assert "dagflow_user_permissions_unchecked 0.0" in running_operator.metrics()


@pytest.mark.local_cluster
@pytest.mark.parametrize("setting", ["DAGFLOW_METRICS_PORT", "DAGFLOW_WEBHOOK_PORT"])
def test_a_taken_port_stops_the_operator_at_once_naming_the_port_and_its_setting(
    setting: str, tmp_path: Path
) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        env = {
            "DAGFLOW_METRICS_PORT": str(free_port()),
            "DAGFLOW_WEBHOOK_PORT": str(free_port()),
            setting: str(port),
        }
        started = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "dagflow-operator"), "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "POD_ID": f"port-test-{uuid.uuid4().hex[:6]}", **env},
        )
    assert result.returncode != 0
    assert time.monotonic() - started < 15
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"dagflow-operator: port {port} is taken (Address already in use); stop what holds it or move this"
        f" operator's port with {setting}"
    ], lines
