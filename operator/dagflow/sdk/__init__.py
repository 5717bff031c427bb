"""Build DAGFlows in Python, on the same API models and the same validation as the cluster.

```python
from dagflow.sdk import Flow, Serve, Work

with Flow("ml-pipeline", params={"data": "/data"}) as flow:
    process = Work("process", image=IMAGE, command=["python", "-m", "pipeline.process"])
    train = Work("train", image=IMAGE, gpu=1, matrix={"model": ["linear", "forest", "gbr"]},
                 command=["python", "-m", "pipeline.train", "--model", "$(matrix.model)"],
                 outputs=["model", "score"])
    serve = Work("serve", image=IMAGE, serve=Serve(port=8080),
                 args=["--scores", train.outputs["score"]])
    process >> train >> serve

print(flow.to_yaml())
flow.apply(namespace="ml")
final = flow.wait()          # the flow's status once it succeeded, serves, failed or stopped
```

A `Work` made inside `with Flow(...)` joins that flow. `a >> b` makes `b` depend on `a` (also
`a >> [b, c]` and `[b, c] >> d`); `work.outputs["key"]` and `flow.params["name"]` are references
(`$(works.work.outputs.key)`, `$(params.name)`) that fail at once when the key was never declared.
`flow.add_finally(report)` makes a work a finally work, run once the others have ended whatever the
outcome, told it by `RUN_PHASE` and `FAILED_WORKS`.
`flow.spec()` and everything that emits the flow raise `FlowError` with every problem the webhook
would refuse (cycles, unknown references, bad names...). Only the fields given are emitted, so a flow
written in Python and its YAML compare equal.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

import yaml
from pydantic import BaseModel

from dagflow.api.models import (
    API_VERSION,
    FINAL_PHASES,
    KIND,
    ConcurrencyPolicy,
    DAGFlowSpec,
    FailurePolicy,
    PodDefaults,
    Serve,
    TriggerRule,
    WorkspaceSpec,
    WorkWorkspace,
)
from dagflow.api.models import Work as WorkModel
from dagflow.client.flowclient import FlowClient, Target
from dagflow.rules.validation import ValidationProblem, validate_flow

__all__ = ["FAILED_WORKS", "FINAL_PHASES", "RUN_PHASE", "Flow", "FlowError", "Serve", "TriggerRule", "Work"]

_CURRENT: contextvars.ContextVar[Flow | None] = contextvars.ContextVar("dagflow_sdk_flow", default=None)


# What a finally work is told of the run it ends: how its works ended, and which of them failed.
RUN_PHASE = "$(run.phase)"
FAILED_WORKS = "$(run.failedWorks)"


class FlowError(ValueError):
    """A flow the cluster would refuse; `problems` lists why, each with the field's path."""

    def __init__(self, name: str, problems: Sequence[ValidationProblem]) -> None:
        self.problems = list(problems)
        listed = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"DAGFlow {name} is not valid:\n{listed}")


class References(Mapping[str, str]):
    """Names that may be referenced, as `$(...)` texts: `outputs["score"]`, `params["lr"]`."""

    def __init__(self, owner: str, kind: str, names: Iterable[str], template: str) -> None:
        self._owner, self._kind, self._names, self._template = owner, kind, list(names), template

    def __getitem__(self, name: str) -> str:
        if name not in self._names:
            declared = ", ".join(self._names) or "none"
            raise KeyError(f"{self._owner} declares no {self._kind} {name!r} (it has: {declared})")
        return self._template.format(name=name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Work:
    """One work of a flow: a batch Job, or with `serve` a Deployment and a Service.

    The keyword arguments are the API's fields in Python spelling (`timeout_seconds`,
    `node_selector`...); `image`, `command`, `args`, `env` (a mapping or a list of core/v1 EnvVars),
    `volume_mounts` and `resources` make the container, and `container` adds any other field of it.
    `outputs` names the outputs the work reports, or maps them to their descriptions.
    """

    def __init__(
        self,
        name: str,
        *,
        image: str,
        command: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | Sequence[Mapping[str, Any]] | None = None,
        volume_mounts: Sequence[Mapping[str, Any]] | None = None,
        resources: Mapping[str, Any] | None = None,
        container: Mapping[str, Any] | None = None,
        depends_on: Sequence[Work | str] = (),
        when: TriggerRule | str | None = None,
        gpu: int | None = None,
        retries: int | None = None,
        timeout_seconds: int | None = None,
        serve: Serve | None = None,
        matrix: Mapping[str, Any] | None = None,
        max_parallel: int | None = None,
        outputs: Sequence[str] | Mapping[str, str] = (),
        volumes: Sequence[Mapping[str, Any]] | None = None,
        node_selector: Mapping[str, str] | None = None,
        tolerations: Sequence[Mapping[str, Any]] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        service_account_name: str | None = None,
        workspace: WorkWorkspace | Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        spec_container: dict[str, Any] = {"image": image}
        spec_container.update(
            _given(
                command=list(command) if command is not None else None,
                args=list(args) if args is not None else None,
                env=_env(env),
                volumeMounts=[dict(mount) for mount in volume_mounts] if volume_mounts is not None else None,
                resources=dict(resources) if resources is not None else None,
            )
        )
        spec_container.update(dict(container or {}))
        self._fields: dict[str, Any] = _given(
            when=TriggerRule(when) if when is not None else None,
            gpu=gpu,
            retries=retries,
            timeout_seconds=timeout_seconds,
            serve=serve,
            matrix=dict(matrix) if matrix is not None else None,
            max_parallel=max_parallel,
            outputs=_outputs(outputs) or None,
            volumes=[dict(volume) for volume in volumes] if volumes is not None else None,
            node_selector=dict(node_selector) if node_selector is not None else None,
            tolerations=[dict(item) for item in tolerations] if tolerations is not None else None,
            labels=dict(labels) if labels is not None else None,
            annotations=dict(annotations) if annotations is not None else None,
            service_account_name=service_account_name,
            workspace=_model(WorkWorkspace, workspace),
        )
        self._container = spec_container
        self.depends_on: list[str] = []
        self.after(*depends_on)
        self.outputs = References(f"work {name}", "output", outputs, f"$(works.{name}.outputs.{{name}})")
        flow = _CURRENT.get()
        if flow is not None:
            flow.add(self)

    def after(self, *works: Work | str) -> Work:
        """Make this work depend on `works`; returns it."""
        for work in works:
            dependency = work.name if isinstance(work, Work) else work
            if dependency not in self.depends_on:
                self.depends_on.append(dependency)
        return self

    def __rshift__(self, other: Work | Sequence[Work]) -> Work | Sequence[Work]:
        for work in [other] if isinstance(other, Work) else other:
            work.after(self)
        return other

    def __rrshift__(self, other: Sequence[Work]) -> Work:
        return self.after(*other)

    def raw(self) -> dict[str, Any]:
        """The work as the API spells it, with only the fields given (unchecked: see Flow.spec)."""
        raw: dict[str, Any] = {"name": self.name, "container": dict(self._container)}
        if self.depends_on:
            raw["dependsOn"] = list(self.depends_on)
        raw.update({_alias(WorkModel, key): _plain(value) for key, value in self._fields.items()})
        return raw

    def model(self) -> WorkModel:
        """The work as the API's model; pydantic's ValidationError when it is not valid on its own."""
        return WorkModel.model_validate(self.raw())

    def __repr__(self) -> str:
        return f"Work({self.name!r})"


class Flow:
    """A DAGFlow under construction; a context manager that collects the works made inside it.

    `params` maps names to defaults; `objects` are other Kubernetes objects emitted and applied with
    the flow, before it (a PersistentVolumeClaim its works mount, say).
    """

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, str] | None = None,
        failure_policy: str | None = None,
        parallelism: int | None = None,
        pod_defaults: PodDefaults | Mapping[str, Any] | None = None,
        schedule: str | None = None,
        time_zone: str | None = None,
        concurrency_policy: str | None = None,
        starting_deadline_seconds: int | None = None,
        suspend: bool | None = None,
        history_runs: int | None = None,
        workspace: WorkspaceSpec | Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        objects: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.name = name
        self.works: list[Work] = []
        self.finally_works: list[Work] = []
        self.objects = [dict(obj) for obj in objects]
        self.labels, self.annotations = dict(labels or {}), dict(annotations or {})
        self._params = dict(params or {})
        self.params = References(f"flow {name}", "parameter", self._params, "$(params.{name})")
        self._fields = _given(
            failure_policy=FailurePolicy(failure_policy) if failure_policy is not None else None,
            parallelism=parallelism,
            pod_defaults=pod_defaults,
            schedule=schedule,
            time_zone=time_zone,
            concurrency_policy=(
                ConcurrencyPolicy(concurrency_policy) if concurrency_policy is not None else None
            ),
            starting_deadline_seconds=starting_deadline_seconds,
            suspend=suspend,
            history_runs=history_runs,
            workspace=_model(WorkspaceSpec, workspace),
        )
        self._token: contextvars.Token[Flow | None] | None = None

    def __enter__(self) -> Flow:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def add(self, *works: Work) -> Flow:
        for work in works:
            if any(existing is work for existing in self.works):
                continue
            self.works.append(work)
        return self

    def add_finally(self, *works: Work) -> Flow:
        """Make `works` finally works: they run once the run's works have ended, whatever the outcome
        (`RUN_PHASE` and `FAILED_WORKS` tell it them). Made inside `with Flow(...)`, they leave the
        works for the finally works."""
        for work in works:
            self.works = [existing for existing in self.works if existing is not work]
            if not any(existing is work for existing in self.finally_works):
                self.finally_works.append(work)
        return self

    def spec(self) -> DAGFlowSpec:
        """The flow's spec as the API's model; FlowError with every problem the webhook would find."""
        raw = self._raw_spec()
        problems = validate_flow(raw, flow_name=self.name)
        if problems:
            raise FlowError(self.name, problems)
        return DAGFlowSpec.model_validate(raw)

    def to_object(self) -> dict[str, Any]:
        """The DAGFlow as a Kubernetes object; FlowError when it is not valid."""
        spec = self.spec()
        metadata: dict[str, Any] = {"name": self.name}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
        }

    def to_objects(self) -> list[dict[str, Any]]:
        """Every object to apply, in order: the other objects, then the flow."""
        return [*self.objects, self.to_object()]

    def to_yaml(self) -> str:
        return yaml.safe_dump_all(self.to_objects(), sort_keys=False)

    def apply(
        self, namespace: str | None = None, *, kubeconfig: str | None = None, context: str | None = None
    ) -> dict[str, Any]:
        """Apply every object (server-side apply, field manager `dagflow-sdk`) to the cluster kubectl
        would use (or `kubeconfig`, `context`); namespaced ones go to `namespace`, default the
        context's. Returns the flow as stored."""
        objects = self.to_objects()
        self._target = Target(namespace=namespace, context=context, kubeconfig=kubeconfig)
        client = FlowClient(self._target, field_manager="dagflow-sdk")
        self._target = Target(namespace=client.namespace, context=context, kubeconfig=kubeconfig)
        return client.apply(objects)[-1]

    def wait(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the flow's current run is over (Succeeded, Serving, Failed or Stopped, for the
        spec as it is now) and return its status; TimeoutError after `timeout` seconds. Acts where
        `apply` did."""
        client = FlowClient(getattr(self, "_target", Target()))
        final = client.follow(self.name, lambda _: None, timeout)
        status: dict[str, Any] = final.get("status") or {}
        return status

    def _raw_spec(self) -> dict[str, Any]:
        raw: dict[str, Any] = {_alias(DAGFlowSpec, key): _plain(value) for key, value in self._fields.items()}
        if self._params:
            raw["params"] = [{"name": name, "default": value} for name, value in self._params.items()]
        raw["works"] = [work.raw() for work in self.works]
        if self.finally_works:
            raw["finally"] = [work.raw() for work in self.finally_works]
        return raw


def _alias(model: type[BaseModel], field: str) -> str:
    return model.model_fields[field].alias or field


def _plain(value: Any) -> Any:
    """A field's value as JSON: models with only the fields they were given, enums as their values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, Enum):
        return value.value
    return value


def _model(model: type[BaseModel], value: BaseModel | Mapping[str, Any] | None) -> Any:
    """A field given as its model or as a mapping in the API's spelling, as the model."""
    if value is None or isinstance(value, BaseModel):
        return value
    return model.model_validate(dict(value))


def _given(**fields: Any) -> dict[str, Any]:
    """The fields a caller gave (those not None), to emit only those."""
    return {key: value for key, value in fields.items() if value is not None}


def _outputs(outputs: Sequence[str] | Mapping[str, str]) -> list[dict[str, str]]:
    """Declared outputs: names, or names with their descriptions."""
    if isinstance(outputs, Mapping):
        return [{"name": name, "description": description} for name, description in outputs.items()]
    return [{"name": name} for name in outputs]


def _env(env: Mapping[str, str] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    if env is None:
        return None
    if isinstance(env, Mapping):
        return [{"name": name, "value": value} for name, value in env.items()]
    return [dict(entry) for entry in env]
