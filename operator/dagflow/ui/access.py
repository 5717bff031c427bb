"""Whose identity each request of the dashboard reads the cluster with.

`dagflow ui` on a laptop reads as the person who started it, with their kubeconfig, like
`kubectl proxy`. In the cluster the dashboard forwards each request's bearer token (set by the
authenticating proxy in front of it, or by the person) to the API server, and uses no credential of
its own for what it shows: a person sees exactly what they may read.
"""

from __future__ import annotations

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
