"""What every request to the dashboard must pass before it reaches a page or the API, and the headers
every answer carries.

`dagflow ui` on a laptop reads the cluster as the person who started it: any page their browser
opens could ask it for data. The browser keeps other sites from reading its answers (same-origin
policy) unless a site rebinds its own domain name to 127.0.0.1, so that its pages are same-origin
with the dashboard. Such a request still names the site in its Host header: the dashboard answers
only to loopback names, IP addresses and the names it was told (`--allowed-host`). A request that
another origin's page makes carries that origin (Origin, Sec-Fetch-Site) and is refused too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Only the dashboard's own files, nothing inline, no frame may embed it (clickjacking).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
LOOPBACK_NAMES = frozenset({"localhost"})
# Sec-Fetch-Site of a request the dashboard's own page made, or the person typed in the address bar.
OWN_FETCH_SITES = frozenset({"same-origin", "none"})


def host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8080` -> `::1`, `a.b:80` -> `a.b`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host: str | None, allowed_hosts: Iterable[str]) -> bool:
    """Whether the dashboard answers to a request for `host`. An IP address cannot be rebound (a
    rebinding page always names its own domain), `localhost` never leaves the machine, and the
    names given with --allowed-host are the person's own choice."""
    if not host:
        return False
    name = host_name(host)
    return name in LOOPBACK_NAMES or is_ip_address(name) or name in {h.lower() for h in allowed_hosts}


def from_own_page(headers: Headers) -> bool:
    """Whether a request comes from the dashboard's own pages (or the address bar, or a client that
    is no browser): an Origin, when the browser sends one, names the host asked, and the browser's
    Sec-Fetch-Site, when sent, says the request is same-origin."""
    origin = headers.get("origin")
    if origin is not None:
        scheme, _, authority = origin.partition("://")
        if scheme not in ("http", "https") or authority.lower() != (headers.get("host") or "").lower():
            return False
    site = headers.get("sec-fetch-site")
    return site is None or site in OWN_FETCH_SITES


class RequestGuard:
    """ASGI middleware: refuses requests for a foreign host (421) or from a foreign page (403)
    before any endpoint runs, and adds SECURITY_HEADERS to every answer."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], check_host: bool) -> None:
        self.app = app
        self.allowed_hosts = frozenset(host.lower() for host in allowed_hosts)
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.decode("latin-1").lower() not in SECURITY_HEADERS
                ]
                headers += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        headers = Headers(scope=scope)
        refusal: PlainTextResponse | None = None
        if self.check_host and not host_allowed(headers.get("host"), self.allowed_hosts):
            refusal = PlainTextResponse(
                f"this dashboard does not answer to host {headers.get('host')!r}: open it as localhost "
                "or by IP address, or start it with --allowed-host NAME",
                status_code=421,
            )
        elif not from_own_page(headers):
            refusal = PlainTextResponse("requests from other sites' pages are refused", status_code=403)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
