"""How the webhook is registered and what it lets through."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from typing import Any

import pytest
from cryptography import x509

from dagflow.controller.settings import OperatorSettings
from dagflow.controller.webhook import (
    ADMITTED_OPERATIONS,
    ServiceWebhookServer,
    admission_problem,
    build_webhook_server,
)


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
    assert isinstance(server, ServiceWebhookServer)

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
