"""How the webhook is registered and what it lets through."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import socket
import ssl
from typing import Any

import pytest
from cryptography import x509
from kubernetes.client.exceptions import ApiException

from dagflow.controller.kube import names_an_object
from dagflow.controller.settings import OperatorSettings
from dagflow.controller.webhook import (
    ADMITTED_OPERATIONS,
    NO_KUEUE,
    QUEUE_FOUND,
    QUEUE_MISSING,
    DagflowWebhookServer,
    admission_problem,
    build_webhook_server,
    cache_entry_write_problem,
    may_start_a_run,
    permission_checks,
    permission_problem,
    queue_problem,
    registered_webhooks,
    status_write_problem,
)
from tests.chart.helm import render


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def first_client_config(server: Any) -> dict[str, Any]:
    async def never_called(*_: Any, **__: Any) -> Any:
        raise AssertionError("no admission request is sent in this test")

    async with server:
        stream = server(never_called)
        try:
            return dict(await anext(stream))
        finally:
            await stream.aclose()


def test_service_setting_registers_a_service_reference_with_a_certificate_for_its_name() -> None:
    port = free_port()
    settings = OperatorSettings(webhook_service="dagflow-system/dagflow-webhook", webhook_port=port)
    server = build_webhook_server(settings)
    assert isinstance(server, DagflowWebhookServer)

    config = asyncio.run(first_client_config(server))

    assert "url" not in config
    assert config["service"] == {
        "namespace": "dagflow-system",
        "name": "dagflow-webhook",
        "port": port,
        "path": "",
    }
    certificate = x509.load_pem_x509_certificate(base64.b64decode(config["caBundle"]))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The API server checks the serving certificate against this name when it calls the Service.
    assert "dagflow-webhook.dagflow-system.svc" in names.get_values_for_type(x509.DNSName)


def test_without_a_service_the_webhook_is_registered_by_url_on_localhost() -> None:
    port = free_port()
    server = build_webhook_server(OperatorSettings(webhook_port=port))

    config = asyncio.run(first_client_config(server))

    assert config["url"] == f"https://localhost:{port}"
    assert "service" not in config
    assert ssl.PEM_cert_to_DER_cert(base64.b64decode(config["caBundle"]).decode())


@pytest.mark.parametrize("value", ["webhook", "Ns/name", "ns/name/extra", "/name"])
def test_a_service_setting_that_is_not_namespace_slash_name_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="webhook_service"):
        OperatorSettings(webhook_service=value)


CYCLE_SPEC = {
    "works": [
        {"name": "a", "dependsOn": ["b"], "container": {"image": "x"}},
        {"name": "b", "dependsOn": ["a"], "container": {"image": "x"}},
    ]
}
FINE_SPEC = {"works": [{"name": "a", "container": {"image": "x"}}]}


def flow_body(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "f", **metadata}, "spec": spec}


def test_the_webhook_is_registered_for_create_and_update_only() -> None:
    assert ADMITTED_OPERATIONS == ["CREATE", "UPDATE"]


def test_a_new_invalid_spec_is_refused_on_create_and_on_update() -> None:
    assert admission_problem("CREATE", None, flow_body(CYCLE_SPEC), "f")
    problem = admission_problem("UPDATE", flow_body(FINE_SPEC), flow_body(CYCLE_SPEC), "f")
    assert problem and "cycle" in problem
    assert admission_problem("CREATE", None, flow_body(FINE_SPEC), "f") is None
    assert admission_problem("UPDATE", flow_body(CYCLE_SPEC), flow_body(FINE_SPEC), "f") is None


def test_an_update_that_keeps_an_invalid_spec_passes_so_the_flow_can_be_cleaned_up() -> None:
    held = flow_body(CYCLE_SPEC, finalizers=["example.com/hold"])
    labelled = flow_body(CYCLE_SPEC, finalizers=["example.com/hold"], labels={"team": "ml"})
    released = flow_body(CYCLE_SPEC, deletionTimestamp="2026-11-26T12:00:00Z")
    assert admission_problem("UPDATE", held, labelled, "f") is None
    assert admission_problem("UPDATE", labelled, released, "f") is None
    assert admission_problem("DELETE", held, None, "f") is None


def test_a_bad_schedule_or_time_zone_is_refused_naming_it() -> None:
    bad_schedule = {**FINE_SPEC, "schedule": "0 25 * * *"}
    problem = admission_problem("UPDATE", flow_body(FINE_SPEC), flow_body(bad_schedule), "f")
    assert problem and problem.startswith("spec.schedule: schedule '0 25 * * *': bad hour")
    bad_zone = {**FINE_SPEC, "schedule": "@daily", "timeZone": "Europe/Atlantis"}
    problem = admission_problem("CREATE", None, flow_body(bad_zone), "f")
    assert problem and problem.startswith("spec.timeZone: unknown time zone 'Europe/Atlantis'")


def test_a_run_request_changes_no_spec_and_always_passes() -> None:
    requested = flow_body(FINE_SPEC, annotations={"dagflow.dev/rerun": "1735787045"})
    assert admission_problem("UPDATE", flow_body(FINE_SPEC), requested, "f") is None


def test_parameter_values_for_run_requests_are_judged_when_they_change() -> None:
    with_params = {**FINE_SPEC, "params": [{"name": "lr", "default": "0.1"}]}
    good = flow_body(with_params, annotations={"dagflow.dev/params": '{"lr": "0.01"}'})
    unknown = flow_body(with_params, annotations={"dagflow.dev/params": '{"epochs": "3"}'})
    assert admission_problem("UPDATE", flow_body(with_params), good, "f") is None
    problem = admission_problem("UPDATE", good, unknown, "f")
    assert problem == (
        'metadata.annotations["dagflow.dev/params"]: dagflow.dev/params: the flow has no parameter '
        "'epochs' (it has: lr)"
    )
    assert admission_problem("CREATE", None, unknown, "f") == problem
    # Unchanged values on an unchanged spec pass, so such a flow can still be cleaned up.
    assert admission_problem("UPDATE", unknown, {**unknown, "status": {}}, "f") is None


# No privilege beyond the user's: the webhook asks what the chart's ValidatingAdmissionPolicy asks.


def annotated(spec: dict[str, Any], **annotations: str) -> dict[str, Any]:
    return flow_body(spec, annotations=annotations)


def test_the_writes_that_may_start_a_run_are_those_the_policy_checks() -> None:
    assert may_start_a_run("CREATE", None, flow_body(FINE_SPEC))
    assert may_start_a_run("UPDATE", flow_body(FINE_SPEC), flow_body({**FINE_SPEC, "parallelism": 2}))
    for key in ("dagflow.dev/rerun", "dagflow.dev/retry", "dagflow.dev/params"):
        assert may_start_a_run("UPDATE", flow_body(FINE_SPEC), annotated(FINE_SPEC, **{key: "1"})), key
    # Labels, other annotations, a stop request, a deletion: nothing starts.
    assert not may_start_a_run("UPDATE", flow_body(FINE_SPEC), flow_body(FINE_SPEC, labels={"team": "ml"}))
    assert not may_start_a_run(
        "UPDATE", flow_body(FINE_SPEC), annotated(FINE_SPEC, **{"dagflow.dev/stop": "1"})
    )
    assert not may_start_a_run("DELETE", flow_body(FINE_SPEC), None)


SERVE_AND_MATRIX_SPEC = {
    "works": [
        {"name": "train", "matrix": {"model": ["a", "b"]}, "container": {"image": "x"}},
        {"name": "web", "dependsOn": ["train"], "serve": {"port": 8080}, "container": {"image": "x"}},
    ],
    "workspace": {"size": "1Gi"},
}


def test_the_webhook_asks_exactly_the_policys_questions() -> None:
    [policy] = [
        obj
        for obj in render()
        if obj["kind"] == "ValidatingAdmissionPolicy"
        and obj["metadata"]["name"].endswith("-user-permissions")
    ]
    asked_by_policy = [
        re.findall(r"authorizer\.group\('([^']*)'\)\.resource\('([^']+)'\)", validation["expression"])
        for validation in policy["spec"]["validations"]
    ]
    asked_by_webhook = [list(check.resources) for check in permission_checks(SERVE_AND_MATRIX_SPEC)]
    assert asked_by_webhook == asked_by_policy
    assert [list(check.resources) for check in permission_checks(FINE_SPEC)] == asked_by_policy[:1]


def test_a_missing_permission_is_named_in_the_policys_words() -> None:
    def may_create_only_jobs(group: str, resource: str) -> bool:
        return (group, resource) == ("batch", "jobs")

    assert permission_problem("alice", "team-a", FINE_SPEC, may_create_only_jobs) is None
    assert permission_problem("alice", "team-a", SERVE_AND_MATRIX_SPEC, may_create_only_jobs) == (
        "alice may not create Deployments and Services in namespace team-a, which the operator would"
        " create for the serve works of this DAGFlow"
    )
    assert permission_problem("bob", "team-a", FINE_SPEC, lambda group, resource: False) == (
        "bob may not create Jobs in namespace team-a, which the operator would create for this DAGFlow"
    )
    may_not_claim = lambda group, resource: resource != "persistentvolumeclaims"  # noqa: E731
    assert permission_problem(
        "carol", "team-a", {**FINE_SPEC, "workspace": {"size": "1Gi"}}, may_not_claim
    ) == (
        "carol may not create PersistentVolumeClaims in namespace team-a, which the operator would create "
        "for the workspace of this DAGFlow"
    )
    # Bad input (the schema refuses it before) is asked about as a plain flow, never a crash.
    assert permission_problem("bob", "team-a", {"works": "nope"}, lambda group, resource: True) is None


def test_only_the_operator_writes_the_status() -> None:
    operator_user = "system:serviceaccount:dagflow-system:dagflow-dagflow-operator"
    assert status_write_problem(operator_user, operator_user) is None
    problem = status_write_problem("alice", operator_user)
    assert problem and problem.startswith("alice may not write the status of a DAGFlow")


def test_the_webhooks_fail_closed_and_the_operators_status_writes_skip_them() -> None:
    config = {"service": {"namespace": "ns", "name": "svc", "port": 9443, "path": ""}, "caBundle": "Q0E="}
    flows, status, entries = registered_webhooks(config, "system:serviceaccount:ns:op")
    assert flows["rules"][0]["resources"] == ["dagflows"]
    assert flows["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert flows["clientConfig"]["service"]["path"] == "/validate-dagflow"
    assert status["rules"][0]["resources"] == ["dagflows/status"]
    assert status["clientConfig"]["service"]["path"] == "/validate-dagflow-status"
    assert status["matchConditions"] == [
        {
            "name": "not-the-operator",
            "expression": 'request.userInfo.username != "system:serviceaccount:ns:op"',
        }
    ]
    assert entries["rules"][0]["resources"] == ["dagflowcacheentries"]
    assert entries["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert entries["clientConfig"]["service"]["path"] == "/validate-dagflow-cache-entry"
    assert entries["matchConditions"] == status["matchConditions"]
    assert {hook["failurePolicy"] for hook in (flows, status, entries)} == {"Fail"}
    assert {hook["clientConfig"]["caBundle"] for hook in (flows, status, entries)} == {"Q0E="}


def test_only_the_operator_writes_cache_entries() -> None:
    operator_user = "system:serviceaccount:dagflow:op"
    assert cache_entry_write_problem(operator_user, operator_user) is None
    problem = cache_entry_write_problem("alice", operator_user)
    assert problem and problem.startswith("alice may not write DAGFlow cache entries")


def served_certificate(port: int, ca_bundle: bytes) -> x509.Certificate:
    """The server's certificate, as a client that trusts only `ca_bundle` gets it (verified now)."""
    context = ssl.create_default_context(cadata=ca_bundle.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_self_signed_certificate_is_renewed_and_registered_before_it_expires() -> None:
    lifetime = datetime.timedelta(seconds=6)  # renewed with 2 s to spare: room for a busy machine
    port = free_port()
    registered: list[dict[str, Any]] = []

    async def register(config: Any) -> None:
        registered.append(dict(config))

    async def never_called(*_: Any, **__: Any) -> Any:
        raise AssertionError("no admission request is sent in this test")

    async def serve_past_the_first_expiry() -> x509.Certificate:
        server = DagflowWebhookServer(
            hostnames=["localhost", "127.0.0.1"],
            certificate_lifetime=lifetime,
            register=register,
            trust_propagation_seconds=0.2,
            addr="127.0.0.1",
            port=port,
            host="localhost",
        )
        async with server:
            stream = server(never_called)
            first = await anext(stream)
            expiry = x509.load_pem_x509_certificate(base64.b64decode(first["caBundle"])).not_valid_after_utc
            while datetime.datetime.now(datetime.UTC) < expiry + datetime.timedelta(seconds=0.5):
                await asyncio.wait_for(anext(stream), timeout=5)
            # The first certificate has expired: the server answers with one its registered CA trusts.
            bundle = base64.b64decode(registered[-1]["caBundle"])
            return await asyncio.to_thread(served_certificate, port, bundle)

    served = asyncio.run(serve_past_the_first_expiry())
    assert served.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    bundles = [config["caBundle"] for config in registered]
    assert len(set(bundles)) >= 3, "first CA, both CAs while switching, the new CA"
    # The new CA is registered beside the old one before the server switches to it.
    first, both, renewed = (base64.b64decode(bundle) for bundle in bundles[:3])
    assert both == renewed + first


def test_the_certificate_lifetime_is_a_setting() -> None:
    assert OperatorSettings().webhook_certificate_lifetime_seconds == 365 * 24 * 3600
    assert (
        OperatorSettings(webhook_certificate_lifetime_seconds=60).webhook_certificate_lifetime_seconds == 60
    )
    with pytest.raises(ValueError, match="webhook_certificate_lifetime_seconds"):
        OperatorSettings(webhook_certificate_lifetime_seconds=1)


def test_a_flow_naming_a_missing_local_queue_or_no_kueue_is_refused_with_the_queue_named() -> None:
    flow_spec = {
        "queueName": "gpu",
        "works": [
            {"name": "prep", "container": {"image": "x"}, "queueName": "cpu"},
            {"name": "train", "container": {"image": "x"}},
        ],
    }
    asked: list[tuple[str, str]] = []

    def only(answers: dict[str, str]) -> Any:
        def lookup(namespace: str, name: str) -> str:
            asked.append((namespace, name))
            return answers[name]

        return lookup

    assert queue_problem("team-a", flow_spec, only({"gpu": QUEUE_FOUND, "cpu": QUEUE_FOUND})) is None
    assert asked == [("team-a", "gpu"), ("team-a", "cpu")]
    assert queue_problem("team-a", flow_spec, only({"gpu": QUEUE_FOUND, "cpu": QUEUE_MISSING})) == (
        "work 'prep' queueName names LocalQueue 'cpu', which does not exist in namespace team-a "
        "(kubectl get localqueues -n team-a): create it, or name another"
    )
    assert queue_problem("team-a", flow_spec, only({"gpu": NO_KUEUE})) == (
        "spec.queueName names LocalQueue 'gpu', but Kueue is not installed on this cluster (the API "
        "server serves no kueue.x-k8s.io LocalQueues): install Kueue, or leave queueName out"
    )
    unqueued = {"works": [{"name": "train", "container": {"image": "x"}}]}
    assert queue_problem("team-a", unqueued, only({})) is None


def test_a_404_for_an_object_is_told_from_a_404_for_an_api_the_server_lacks() -> None:
    missing_queue = ApiException(status=404)
    missing_queue.body = json.dumps(
        {"reason": "NotFound", "details": {"name": "gpu", "group": "kueue.x-k8s.io", "kind": "localqueues"}}
    )
    missing_api = ApiException(status=404)
    missing_api.body = "404 page not found"
    assert names_an_object(missing_queue)
    assert not names_an_object(missing_api)
