"""DAGFlow: a Kubernetes operator that runs ML pipelines written as DAGs.

The package has six rooms. Imports only go down this list (a test keeps it so):

- `api`: the dagflow.dev/v1alpha1 models, the single source of the CRD and its schemas.
- `rules`: what every side shares and that touches no cluster: validation, names, references and
  their substitution, matrices, parameters, outputs, cron. Imports only `api`.
- `controller`: the operator: plans runs from observed children, builds manifests, talks to the
  API server, serves the admission webhook and metrics (`dagflow-operator`).
- `client`: the command line (`dagflow`, `kubectl dagflow`) and its flow client and views.
- `sdk`: flows written in Python (`from dagflow.sdk import Flow, Work`), on top of the client.
- `ui`: the web dashboard (`dagflow ui`), on top of the client.

The controller never imports the client, the SDK or the dashboard; the client and the dashboard
never import the controller. A new module goes into the room of the one side that uses it, or into
`rules` when pure and shared.
"""

__version__ = "0.1.0"
