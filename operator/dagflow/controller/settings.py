"""Operator-wide settings, read from DAGFLOW_* environment variables (the Helm chart sets them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# How a matrix work's pods get the launcher (builders.py, `_launched`).
LauncherDelivery = Literal["initContainer", "imageVolume"]


class OperatorSettings(BaseSettings):
    """What an operator instance applies to every flow it runs."""

    model_config = SettingsConfigDict(env_prefix="DAGFLOW_", frozen=True)

    gpu_resource: str = Field(
        "nvidia.com/gpu", description="Extended resource name a GPU work's `gpu` count is requested as."
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Node selector added to every GPU work's pod (JSON in the environment).",
    )
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations added to every GPU work's pod (JSON in the environment).",
    )
    launcher_image: str = Field(
        "dagflow/launcher:0.1.0",
        description="Image of the launcher every matrix work's pod starts its instance through.",
    )
    launcher_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the launcher's image, in either delivery."
    )
    launcher_delivery: LauncherDelivery = Field(
        "initContainer",
        description=(
            "How the launcher reaches a matrix work's pod: `initContainer` copies it into an emptyDir"
            " (works on every runtime), `imageVolume` mounts its image read-only (no init container;"
            " needs the `image` volume source on the API server and on every node's runtime). The"
            " chart's `launcher.delivery: auto` picks one for its cluster."
        ),
    )
    artifact_store: dict[str, str] | None = Field(
        None,
        description=(
            "The artifact store of every namespace that names none in its ConfigMap"
            " `dagflow-artifacts` (JSON: endpoint, bucket, secretName, region, prefix; the Secret is"
            " the flow's namespace's). Unset: only such namespaces have one."
        ),
    )
    history_runs: int = Field(
        2, ge=1, description="Runs whose finished Jobs are kept; Jobs of older runs are deleted."
    )
    reconcile_delay_seconds: float = Field(
        0.01,
        ge=0,
        description="How long a reconcile waits after the first event so a burst becomes one status patch.",
    )
    status_interval_per_1000_works: float = Field(
        5.0,
        ge=0,
        description=(
            "Least time between two status patches of one flow, in seconds per 1,000 works: a big"
            " flow's object costs the API server more per patch. A final phase is never held back."
        ),
    )
    relist_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "How often the operator lists its flows and children to forget those deleted while a"
            " watch was down (a watch that comes back too late to resume lists anew, but is told of"
            " no deletion in between)."
        ),
    )
    queue_order: Literal["flow", "job"] = Field(
        "flow",
        description=(
            "How queued flows share a Kueue ClusterQueue: `flow` keeps each flow's place (while a work"
            " of an older flow waits for a GPU, the waiting Workloads of newer flows of no higher"
            " priority are held inactive), `job` leaves Kueue to order every Job on its own."
        ),
    )
    api_concurrency: int = Field(16, ge=1, description="Kubernetes API calls in flight at once.")
    reconcile_workers: int = Field(
        8, ge=1, description="Flows reconciled at once (each flow is only ever reconciled by one)."
    )
    metrics_port: int = Field(
        9090, ge=0, description="Port of the Prometheus metrics endpoint; 0 turns it off."
    )
    webhook_enabled: bool = Field(True, description="Serve the validating admission webhook.")
    webhook_port: int = Field(9443, description="Port of the admission webhook server.")
    webhook_host: str | None = Field(
        None,
        description="Host the API server reaches the webhook at; unset: kopf detects it for a local run.",
    )
    webhook_service: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "`<namespace>/<name>` of the Service in front of the operator (port: webhook_port): the"
            " webhook is registered as that Service, as in a cluster; unset: registered by URL."
        ),
    )
    webhook_cert_file: str | None = Field(None, description="TLS certificate of the webhook server.")
    webhook_key_file: str | None = Field(None, description="TLS private key of the webhook server.")
    webhook_managed: bool = Field(
        True,
        description=(
            "Let the operator register its webhooks in the ValidatingWebhookConfiguration `dagflow.dev`:"
            " patched in place where it exists (the chart makes it), created where it does not."
        ),
    )
    webhook_certificate_lifetime_seconds: int = Field(
        365 * 24 * 3600,
        ge=10,
        description=(
            "Lifetime of the self-signed webhook certificate the operator makes when none is given;"
            " a new one is made and registered when a third of it is left."
        ),
    )
    user_permissions_policy: str | None = Field(
        None,
        description=(
            "Name of the ValidatingAdmissionPolicy that checks the requesting user's permissions (the"
            " chart sets it where it installs the policy). With the webhook off and no such policy,"
            " nothing checks them: the operator says so at start and every few minutes."
        ),
    )
    approval_policy: str | None = Field(
        None,
        description=(
            "Name of the admission policies that stamp and check who approves a gate (the chart sets"
            " it where it installs them, approvals.policies). Unset, the operator takes in no"
            " approval: without them a request's approver is a name anyone could type."
        ),
    )
    unchecked_warning_interval_seconds: float = Field(
        300,
        gt=0,
        description="How often the operator repeats that nothing checks the users' permissions.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Log lines as plain text or JSON.")
    peering: str | None = Field(
        "dagflow",
        description=(
            "kopf peering object through which operators on one cluster see each other: the one that"
            " started first works, the others stand by. Created at start if absent. Empty: standalone."
        ),
    )
    liveness_stall_seconds: float = Field(
        300,
        gt=0,
        description=(
            "The liveness probe fails once reconcile passes have been wanted for this long without"
            " one finishing (a loop stuck on a call), so Kubernetes restarts the operator."
        ),
    )
    watch_timeout_seconds: int = Field(
        300,
        ge=1,
        description=(
            "How long a watch of the API server lasts before it is made anew; one that brings nothing"
            " for 30 s longer (an API server that stopped answering) is given up and made anew too."
        ),
    )
    shutdown_timeout_seconds: float = Field(
        5,
        gt=0,
        description=(
            "Longest the clean-up on SIGTERM may take; the operator then exits anyway (with its API"
            " server gone, it exits a second after its first clean-up call fails)."
        ),
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (comma-free JSON list); empty: all."
    )

    @field_validator("peering")
    @classmethod
    def _empty_peering_is_standalone(cls, value: str | None) -> str | None:
        return value or None
