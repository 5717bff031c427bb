"""Whose identity each request of the dashboard reads the cluster with.

`dagflow ui` on a laptop reads as the person who started it, with their kubeconfig, like
`kubectl proxy`. In the cluster the dashboard forwards each request's bearer token (set by the
authenticating proxy in front of it, or by the person) to the API server, and uses no credential of
its own for what it shows: a person sees exactly what they may read.
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum

from starlette.requests import HTTPConnection

from dagflow.client.flowclient import FlowClient


class AuthMode(StrEnum):
    KUBECONFIG = "kubeconfig"  # every request reads as the kubeconfig's user
    BEARER = "bearer"  # every request reads as the holder of its Authorization: Bearer token


class Unauthenticated(Exception):
    """A request without the bearer token the dashboard needs to act for someone."""


class Access:
    """Clients that act for the person behind a request, and the server's own for the shared watch."""

    def __init__(self, server: FlowClient, mode: AuthMode) -> None:
        self.server = server
        self.mode = mode

    def client_for(self, request: HTTPConnection, namespace: str) -> FlowClient:
        if self.mode is AuthMode.KUBECONFIG:
            return self.server.in_namespace(namespace)
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise Unauthenticated("this dashboard needs an `Authorization: Bearer <token>` header")
        return self.server.with_bearer_token(token).in_namespace(namespace)

    def authenticate(self, request: HTTPConnection, namespace: str) -> FlowClient:
        """The request's client, once the API server accepted its identity. Any authenticated
        identity may ask a SelfSubjectAccessReview: a token the API server does not accept is
        answered 401 (raised as ClusterError), whatever the review's answer."""
        reader = self.client_for(request, namespace)
        if self.mode is AuthMode.BEARER:
            reader.may("dagflow.dev", "dagflows", "list")
        return reader

    def token_expiry(self, request: HTTPConnection) -> float | None:
        """When the request's bearer token expires (seconds since the epoch), if it says so."""
        if self.mode is AuthMode.KUBECONFIG:
            return None
        token = bearer_token(request.headers.get("authorization"))
        return jwt_expiry(token) if token else None

    def watcher(self, namespace: str) -> FlowClient:
        """The server's own client for a namespace's shared watch. What the watch sees reaches a
        browser only after that person's own read of the namespace succeeded (see `server`)."""
        return self.server.in_namespace(namespace)


def bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def may_watch_flows(user: FlowClient) -> bool:
    """Whether the client's identity may list and watch DAGFlows in its namespace, as the API
    server's authorizer answers a SelfSubjectAccessReview made with that identity."""
    return all(user.may("dagflow.dev", "dagflows", verb) for verb in ("list", "watch"))


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JSON Web Token (ServiceAccount and OIDC tokens are such), unverified:
    the API server verifies the token on every read; this only tells when to stop trusting a
    stream opened with it. None for a token of another kind or without an expiry."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return float(expiry) if isinstance(expiry, int | float) and not isinstance(expiry, bool) else None
