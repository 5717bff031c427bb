"""kopf peering for the operator: who it is among its peers, its priority, and the peering object.

Of the operators on one cluster, the one that started first works and the others stand by.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from dagflow.controller import kube as kube_module

logger = logging.getLogger("dagflow")

# Start times count down from here (the year 2286) into peering priorities.
PRIORITY_EPOCH_MILLIS = 10**13


def own_identity() -> str:
    """This operator's name among its peers: the pod's name (POD_ID) if set, which a restarted
    container keeps, so it takes over its own record at once; else user, host, time and a random
    suffix, new at every start."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    started = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{getpass.getuser()}@{socket.gethostname()}/{started}/{secrets.token_hex(3)}"


def start_priority(now: float | None = None) -> int:
    """kopf peering priority: the earlier an operator started, the higher, so one that is already
    working keeps working and a newcomer stands by. Distinct per millisecond, plus a random last
    digits so two operators started at once never tie (a tie would pause both)."""
    millis = int((time.time() if now is None else now) * 1000)
    return (PRIORITY_EPOCH_MILLIS - millis) * 100 + secrets.randbelow(100)


def ensure_peering(name: str, namespaces: list[str], identity: str, priority: int) -> list[str]:
    """Create the kopf peering object(s) `name` unless they exist: cluster-wide, or one per namespace.

    Without it, kopf would keep the operator paused. The chart creates it itself (its operator may
    only read and patch it). Returns the live peers that kopf will let work instead of this one.
    """
    kube = kube_module.KubeClient(1)
    custom = kube.custom
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        scope: tuple[str, ...] = (namespace, "kopfpeerings") if namespace else ("clusterkopfpeerings",)
        kind = "KopfPeering" if namespace else "ClusterKopfPeering"
        where = f"{kind} {namespace + '/' if namespace else ''}{name}"
        create = custom.create_namespaced_custom_object if namespace else custom.create_cluster_custom_object
        read = custom.get_namespaced_custom_object if namespace else custom.get_cluster_custom_object
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
        try:
            kube_module.read_body(create, "kopf.dev", "v1", *scope, body)
            logger.info("Created the peering object %s", where)
        except ApiException as error:
            if error.status == 403:
                # May not create it (the chart makes it and grants only reading and patching it).
                try:
                    kube_module.read_body(read, "kopf.dev", "v1", *scope, name)
                    continue
                except ApiException as read_error:
                    error = read_error
            if error.status == 409:
                continue
            if error.status == 404:
                raise kopf.PermanentError(
                    f"{where} is missing and cannot be created: are kopf's peering CRDs installed?"
                    " Apply them (`make install`, or `kubectl apply -f crds/`), or run standalone with"
                    " DAGFLOW_PEERING=''"
                ) from error
            raise
    return [
        peer
        for peer, its_priority in other_live_peers(kube, name, namespaces, identity).items()
        if its_priority >= priority
    ]


def other_live_peers(
    kube: kube_module.KubeClient, name: str, namespaces: list[str], identity: str
) -> dict[str, int]:
    """The other operators alive in the peering object(s) `name`, with their priorities."""
    return {
        peer: int(status[peer].get("priority") or 0)
        for status in kube.peering_status(name, namespaces)
        for peer in live_peers(status, identity)
    }


def live_peers(peering_status: dict[str, Any], own_identity: str, now: datetime | None = None) -> list[str]:
    """Identities of the other operators whose keep-alive in a kopf peering object has not expired."""
    moment = now or datetime.now(UTC)
    alive = []
    for identity, peer in peering_status.items():
        if not isinstance(peer, dict) or identity == own_identity:
            continue
        try:
            seen = datetime.fromisoformat(str(peer["lastseen"]))
            lifetime = timedelta(seconds=int(peer.get("lifetime", 60)))
        except (KeyError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if seen + lifetime > moment:
            alive.append(identity)
    return alive
