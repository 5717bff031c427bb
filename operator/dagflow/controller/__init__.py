"""The operator (`dagflow-operator`): pure planning and manifest builders, the reconciler that applies
them through the Kubernetes API, and the kopf wiring, webhook, peering, metrics and settings around it.
`main` is the entry point; docs/operator.md maps the modules."""
