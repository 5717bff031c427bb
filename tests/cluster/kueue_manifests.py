"""Kueue's install manifests for the local cluster, made from the files of Kueue's own module.

kueue.sh copies the CRDs and the webhook manifests that Kueue generates (config/components) into the
tools cache when it builds the manager; this turns them into what its kustomize overlay would make for
a manager that runs as a process on this machine:

- the CRDs, with the conversion webhook that Kueue's overlay adds to five of them (Kueue serves its
  v1beta1 and v1beta2 versions through it);
- the webhooks of Kueue's own kinds and of batch Jobs only (the one integration enabled): a webhook of a
  kind whose integration is off would still make every create of that kind wait on the manager, as
  they all fail closed;
- the webhook Service without a selector and an EndpointSlice at this machine's address, which the API
  server calls directly (it runs with enable-aggregator-routing; an endpoint may not be a loopback
  address). Kueue's own certificate management writes the serving certificate for the Service's DNS
  name and puts its CA into the webhook configurations and the CRDs.

Usage: kueue_manifests.py MANIFESTS_DIR NODE_IP WEBHOOK_PORT > install.yaml
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "kueue-system"
# Kueue derives its webhook configurations' names from the Service's (kueue-*-webhook-configuration).
SERVICE = "kueue-webhook-service"
SERVICE_PORT = 443
# The CRDs that Kueue's overlay gives a conversion webhook, and whose CA its certificate rotator keeps.
CONVERTED = {"localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters"}
WEBHOOK_CONFIGURATIONS = {
    "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
    "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration",
}
LABELS = {"app.kubernetes.io/name": "kueue", "app.kubernetes.io/managed-by": "dagflow-local-cluster"}


def service_reference(path: str) -> dict[str, Any]:
    return {"namespace": NAMESPACE, "name": SERVICE, "path": path, "port": SERVICE_PORT}


def crds(directory: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        crd: dict[str, Any] = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["plural"] in CONVERTED:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"service": service_reference("/convert")},
                    "conversionReviewVersions": ["v1"],
                },
            }
        crd["metadata"].setdefault("labels", {}).update(LABELS)
        documents.append(crd)
    return documents


def wanted(webhook: dict[str, Any]) -> bool:
    """Kueue's own kinds, and batch Jobs."""
    return any(
        "kueue.x-k8s.io" in rule["apiGroups"]
        or ("batch" in rule["apiGroups"] and "jobs" in rule["resources"])
        for rule in webhook["rules"]
    )


def webhook_configurations(path: Path) -> list[dict[str, Any]]:
    documents = []
    for document in yaml.safe_load_all(path.read_text()):
        if not document:
            continue
        configuration = copy.deepcopy(document)
        configuration["metadata"] = {"name": WEBHOOK_CONFIGURATIONS[document["kind"]], "labels": dict(LABELS)}
        configuration["webhooks"] = [
            {
                **webhook,
                "clientConfig": {"service": service_reference(webhook["clientConfig"]["service"]["path"])},
            }
            for webhook in document["webhooks"]
            if wanted(webhook)
        ]
        documents.append(configuration)
    return documents


def webhook_service(node_ip: str, port: int) -> list[dict[str, Any]]:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"ports": [{"name": "https", "port": SERVICE_PORT, "protocol": "TCP", "targetPort": port}]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{SERVICE}-local",
            "namespace": NAMESPACE,
            # Not the EndpointSlice controller's: it leaves a slice of a Service without a selector alone.
            "labels": {**LABELS, "kubernetes.io/service-name": SERVICE},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    return [service, endpoints]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    directory, node_ip, port = Path(argv[0]), argv[1], int(argv[2])
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": dict(LABELS)},
    }
    documents = [
        namespace,
        *webhook_service(node_ip, port),
        *crds(directory / "crds"),
        *webhook_configurations(directory / "webhooks.yaml"),
    ]
    yaml.safe_dump_all(documents, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
