"""The dashboard's defences that need no cluster: its stream re-checks a reader on a clock however
busy the namespace is and ends when the reader's token expires; it answers only its own host and
pages; names in URLs are Kubernetes names; every answer carries a Content-Security-Policy;
`dagflow ui` does not share the kubeconfig's identity with the network unless told to."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dagflow.client.cli import app as cli
from dagflow.ui.access import Access, AuthMode, jwt_expiry
from dagflow.ui.guard import host_allowed
from dagflow.ui.server import create_app
from dagflow.ui.stream import EXPIRED, FORBIDDEN, reader_events

with warnings.catch_warnings():
    # Starlette's test client calls its own use of httpx deprecated; what it tests is the same.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class FakeClient:
    """The FlowClient surface the dashboard's server uses, with flows that exist nowhere."""

    namespace = "default"
    asked: list[str]

    def __init__(self) -> None:
        self.asked = []

    def in_namespace(self, namespace: str) -> FakeClient:
        self.asked.append(namespace)
        return self

    def with_bearer_token(self, token: str) -> FakeClient:
        return self

    def list_flows(self) -> list[dict[str, Any]]:
        return []

    def may(self, group: str, resource: str, verb: str) -> bool:
        return True


def dashboard(mode: AuthMode = AuthMode.KUBECONFIG, **options: Any) -> tuple[TestClient, FakeClient]:
    fake = FakeClient()
    application = create_app(Access(fake, mode), "default", **options)  # type: ignore[arg-type]
    return TestClient(application, base_url="http://127.0.0.1:8080"), fake


def token_expiring_at(expiry: float) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': 'someone', 'exp': expiry})}.c2lnbmF0dXJl"


# -- the stream's re-check ----------------------------------------------------------------------


async def first_events(stream: Any, limit: float) -> list[str]:
    seen: list[str] = []

    async def read() -> None:
        async for message in stream:
            seen.append(message)

    await asyncio.wait_for(read(), limit)
    return seen


def test_a_busy_namespace_still_has_its_readers_rechecked() -> None:
    """A change every 10 ms never leaves the stream idle: the reader who lost the right is cut off
    at the next check all the same."""

    async def scenario() -> list[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        checks: list[float] = []

        async def busy() -> None:
            while True:
                await queue.put("event: flow\ndata: {}\n\n")
                await asyncio.sleep(0.01)

        async def lost_the_right() -> bool:
            checks.append(time.monotonic())
            return False

        producer = asyncio.create_task(busy())
        try:
            return await first_events(
                reader_events(queue, lost_the_right, recheck_seconds=0.3, keepalive_seconds=15), limit=3
            )
        finally:
            producer.cancel()

    seen = asyncio.run(scenario())
    assert seen[-1] == FORBIDDEN
    assert 5 < len(seen) < 200, "changes were delivered until the check, and none after it"


def test_a_stream_ends_when_its_token_expires() -> None:
    async def scenario() -> list[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def allowed() -> bool:
            return True

        expires_at = time.monotonic() + 0.2
        return await first_events(reader_events(queue, allowed, expires_at, recheck_seconds=60), limit=3)

    assert asyncio.run(scenario()) == [EXPIRED]


def test_the_expiry_of_a_token_is_read_from_its_claims() -> None:
    assert jwt_expiry(token_expiring_at(1_900_000_000)) == 1_900_000_000
    assert jwt_expiry("an-opaque-token") is None
    assert jwt_expiry("a.!!!.c") is None


# -- host, origin, names and headers ------------------------------------------------------------


def test_a_page_that_rebinds_its_domain_to_the_dashboard_gets_nothing() -> None:
    client, _ = dashboard()
    assert client.get("/api/namespaces/default/flows").status_code == 200
    for host in ("attacker.example:8080", "attacker.example", ""):
        answer = client.get("/api/namespaces/default/flows", headers={"Host": host})
        assert answer.status_code == 421, (host, answer.status_code)
        assert "flows" not in answer.text
        assert client.get("/", headers={"Host": host}).status_code == 421
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "10.1.2.3"):
        assert client.get("/api/namespaces/default/flows", headers={"Host": host}).status_code == 200, host
    named, _ = dashboard(allowed_hosts=["dashboard.lan"])
    assert named.get("/api/config", headers={"Host": "dashboard.lan:8080"}).status_code == 200


def test_requests_from_other_sites_pages_are_refused() -> None:
    client, _ = dashboard()
    for headers in (
        {"Origin": "http://attacker.example"},
        {"Origin": "http://localhost:3000"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        answer = client.get("/api/namespaces/default/flows", headers=headers)
        assert answer.status_code == 403, headers
        assert "flows" not in answer.text
    own = {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}
    assert client.get("/api/namespaces/default/flows", headers=own).status_code == 200


def test_host_names_the_dashboard_answers_to() -> None:
    assert host_allowed("localhost", [])
    assert host_allowed("[::1]:80", [])
    assert not host_allowed("localhost.attacker.example", [])
    assert not host_allowed(None, [])
    assert host_allowed("Dashboard.LAN", ["dashboard.lan"])


def test_every_answer_forbids_framing_and_anything_from_elsewhere() -> None:
    client, _ = dashboard()
    for path in ("/", "/static/app.js", "/api/config", "/api/namespaces/Bad/flows", "/nothing-here"):
        answer = client.get(path)
        policy = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy, path
        assert "default-src 'none'" in policy and "script-src 'self'" in policy, path
        assert answer.headers.get("x-frame-options") == "DENY", path
        assert answer.headers.get("x-content-type-options") == "nosniff", path
    refused = client.get("/", headers={"Host": "attacker.example"})
    assert "frame-ancestors 'none'" in refused.headers.get("content-security-policy", "")


def test_a_namespace_in_a_url_must_be_a_dns_label() -> None:
    client, fake = dashboard()
    for path in (
        "/api/namespaces/Default/flows",
        "/api/namespaces/a_b/flows",
        "/api/namespaces/" + "n" * 64 + "/flows",
        "/api/namespaces/-x/stream",
        "/api/namespaces/default/flows/a,b",
        "/api/namespaces/default/flows/f/works/Not_A_Label",
    ):
        answer = client.get(path)
        assert answer.status_code == 400, (path, answer.status_code)
        assert "is not a DNS-1123" in answer.json()["error"]
    assert fake.asked == [], "a bad name reached the cluster"


def test_hub_and_config_need_a_token_like_the_rest() -> None:
    client, _ = dashboard(AuthMode.BEARER)
    for path in ("/api/config", "/api/hub", "/api/namespaces/default/flows"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer t"}).status_code == 200, path


# -- dagflow ui's options -------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.20", "my-laptop.lan"])
def test_the_kubeconfig_identity_is_not_served_to_the_network_unless_asked(
    address: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli, ["ui", "--address", address, "--kubeconfig", str(tmp_path / "none")], catch_exceptions=False
    )
    assert result.exit_code == 1
    assert "--allow-remote" in result.output
    assert "kubeconfig:" not in result.output, "it went on to read the kubeconfig"


def test_allow_remote_and_bearer_tokens_may_listen_elsewhere(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    for args in (["--allow-remote"], ["--auth", "bearer"]):
        result = CliRunner().invoke(cli, ["ui", "--address", "0.0.0.0", *args, "--kubeconfig", missing])
        assert "--allow-remote" not in result.output
        assert "kubeconfig" in result.output, "it should go on to read the (missing) kubeconfig"
    loopback = CliRunner().invoke(cli, ["ui", "--address", "127.0.0.1", "--kubeconfig", missing])
    assert "--allow-remote" not in loopback.output
