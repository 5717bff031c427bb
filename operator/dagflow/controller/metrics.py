"""Prometheus metrics of the operator, served on DAGFLOW_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

FLOWS = Gauge("dagflow_flows", "DAGFlows the operator tracks, by phase.", ["phase"])
WORK_DURATION = Histogram(
    "dagflow_work_duration_seconds",
    "Time from a work's start to its end, by outcome.",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
RECONCILE_DURATION = Histogram(
    "dagflow_reconcile_duration_seconds",
    "Time one reconcile of one flow takes, API calls included.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_ERRORS = Counter(
    "dagflow_api_errors_total",
    "Kubernetes API calls that failed, by verb, resource and HTTP status.",
    ["verb", "resource", "code"],
)
CHILDREN_CREATED = Counter(
    "dagflow_children_created_total", "Jobs, Deployments and Services created.", ["kind"]
)

USER_PERMISSIONS_UNCHECKED = Gauge(
    "dagflow_user_permissions_unchecked",
    "1 while nothing checks that a flow's author may create what the operator creates for it (the"
    " admission webhook is off and no user-permissions policy is installed), else 0.",
)


def serve(port: int) -> None:
    """Start the metrics endpoint in a background thread."""
    start_http_server(port)
