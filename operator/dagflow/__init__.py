"""DAGFlow: a Kubernetes operator that runs ML pipelines written as DAGs."""

__version__ = "0.1.0"
