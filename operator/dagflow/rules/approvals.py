"""Approval gates, pure: the requests on a flow's annotations, taking one in, and the parameter
values an approver set for the works after a gate.

A request is the annotation `approval.dagflow.dev/WORK`, a JSON object
`{"run": 3, "decision": "Approved", "token": "...", "params": {...}, "message": "..."}`. Who made it
is not in it: the API server's admission writes the requester's authenticated name into
`approved-by.dagflow.dev/WORK` on every write that sets the request (the chart's
MutatingAdmissionPolicy), and refuses the write unless the requester may `approve` the flow (its
ValidatingAdmissionPolicy). A request counts for the run it names only, once (its token).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagflow.api.models import (
    APPROVAL_ANNOTATION_PREFIX,
    APPROVER_ANNOTATION_PREFIX,
    ApprovalDecision,
    DAGFlowSpec,
    WorkPhase,
)
from dagflow.rules.params import given_values

MAX_TOKEN_LENGTH = 253
MAX_APPROVAL_MESSAGE = 1024


@dataclass(frozen=True)
class ApprovalRequest:
    """A decision on gate `work` of run `run`, as its annotations say."""

    work: str
    run: int
    decision: ApprovalDecision
    token: str
    by: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    message: str | None = None


@dataclass(frozen=True)
class Unreadable:
    """An approval annotation that is not a request: why."""

    work: str
    token: str
    why: str


def approval_annotation(work: str) -> str:
    return f"{APPROVAL_ANNOTATION_PREFIX}{work}"


def approver_annotation(work: str) -> str:
    return f"{APPROVER_ANNOTATION_PREFIX}{work}"


def approval_requests(annotations: Mapping[str, str]) -> dict[str, ApprovalRequest | Unreadable]:
    """The approval requests on a flow, by gate."""
    found: dict[str, ApprovalRequest | Unreadable] = {}
    for key, value in annotations.items():
        if key.startswith(APPROVAL_ANNOTATION_PREFIX):
            work = key[len(APPROVAL_ANNOTATION_PREFIX) :]
            found[work] = read_request(work, value, annotations.get(approver_annotation(work)))
    return found


def read_request(work: str, text: str, by: str | None) -> ApprovalRequest | Unreadable:
    try:
        given = json.loads(text)
    except json.JSONDecodeError as error:
        return Unreadable(work, text[:MAX_TOKEN_LENGTH], f"it is not JSON: {error.msg}")
    if not isinstance(given, dict):
        return Unreadable(work, text[:MAX_TOKEN_LENGTH], "it is not a JSON object")
    token = given.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return Unreadable(work, text[:MAX_TOKEN_LENGTH], "its token must be a non-empty string")
    run = given.get("run")
    if not isinstance(run, int) or isinstance(run, bool) or run < 1:
        return Unreadable(work, token, "its run must be the number of the run whose gate it decides")
    decision = given.get("decision")
    if decision not in ApprovalDecision._value2member_map_:
        return Unreadable(work, token, "its decision must be Approved or Rejected")
    params = given.get("params") or {}
    if not isinstance(params, dict):
        return Unreadable(work, token, "its params must be a JSON object of names to values")
    message = given.get("message")
    if message is not None and not isinstance(message, str):
        return Unreadable(work, token, "its message must be a string")
    return ApprovalRequest(
        work=work,
        run=run,
        decision=ApprovalDecision(str(decision)),
        token=token,
        by=by or None,
        params=params,
        message=message[:MAX_APPROVAL_MESSAGE] if message else None,
    )


def take_in(
    spec: DAGFlowSpec,
    run: int,
    works: MutableMapping[str, Mapping[str, Any]],
    requests: Mapping[str, ApprovalRequest | Unreadable],
    now: str,
    stamps_trusted: bool = True,
) -> tuple[list[ApprovalRequest], list[Unreadable]]:
    """Record in `works` (status.works of run `run`, by name; each entry taken in is replaced, not
    changed) the decisions on its waiting gates: the requests taken in, and those that cannot be,
    each saying why. Without `stamps_trusted` (no admission policy writes and checks who asks)
    nothing is taken in: a name anyone could type decides nothing."""
    taken: list[ApprovalRequest] = []
    refused: list[Unreadable] = []
    for work in spec.works:
        entry = works.get(work.name)
        request = requests.get(work.name)
        if work.approval is None or entry is None or request is None:
            continue
        if entry.get("phase") != WorkPhase.WAITING.value:
            continue  # not waiting yet (the request waits too), or decided already
        if isinstance(request, Unreadable):
            refused.append(request)
            continue
        approval = dict(entry.get("approval") or {})
        if request.run != run or approval.get("token") == request.token or approval.get("decision"):
            continue  # for another run, or taken in already, or decided already
        if not stamps_trusted:
            refused.append(
                Unreadable(
                    work.name,
                    request.token,
                    "the operator takes in no approval without the admission policies that record and "
                    "check who approves (the chart's approvals.policies, DAGFLOW_APPROVAL_POLICY)",
                )
            )
            continue
        if request.by is None:
            refused.append(
                Unreadable(
                    work.name,
                    request.token,
                    f"it has no {approver_annotation(work.name)}: the admission policy that records "
                    "who approves is not installed",
                )
            )
            continue
        values, problems = given_values(
            request.params, work.approval.params, approval_annotation(work.name), "the gate sets", "it sets"
        )
        if problems:
            refused.append(Unreadable(work.name, request.token, "; ".join(problems)))
            continue
        approval.update(decision=request.decision.value, by=request.by, decidedAt=now, token=request.token)
        approval.setdefault("requestedAt", now)
        if request.message:
            approval["message"] = request.message
        if values and request.decision == ApprovalDecision.APPROVED:
            approval["params"] = values
        works[work.name] = {**entry, "approval": approval}
        taken.append(request)
    return taken, refused


def approved_params(works: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The parameter values each approved gate's approver set, by gate."""
    return {
        entry["name"]: dict(entry["approval"]["params"])
        for entry in works
        if (entry.get("approval") or {}).get("decision") == ApprovalDecision.APPROVED.value
        and (entry.get("approval") or {}).get("params")
    }


@dataclass(frozen=True)
class RunParams:
    """A run's parameter values, and those approvers set for the works after their gates."""

    values: Mapping[str, str]
    approved: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    depends_on: Mapping[str, Sequence[str]] = field(default_factory=dict)
    finally_works: frozenset[str] = frozenset()
    # Filled as works are asked about: a work's gates are those of its dependencies, and its own.
    _gates_of: dict[str, frozenset[str]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of_run(
        cls, spec: DAGFlowSpec, values: Mapping[str, str], works: Sequence[Mapping[str, Any]]
    ) -> RunParams:
        approved = approved_params(works)
        if not approved:
            return cls(values)
        return cls(
            values,
            approved,
            {work.name: work.depends_on for work in spec.all_works},
            frozenset(work.name for work in spec.finally_works),
        )

    def of(self, work: str) -> Mapping[str, str]:
        """The values `work` sees: the run's, with those set at the gates it is after (or is); the
        finally works are after every gate."""
        if not self.approved:
            return self.values
        gates = self.approved.keys() if work in self.finally_works else self._gates_up_to(work)
        values = dict(self.values)
        for gate in sorted(gates):
            values.update(self.approved[gate])
        return values

    def _gates_up_to(self, work: str) -> frozenset[str]:
        """The approved gates among `work` and its ancestors, each work's found once per run. Walked
        with a stack of its own: a chain of 2,000 works is deeper than Python's recursion."""
        todo = [work]
        while todo:
            name = todo[-1]
            if name in self._gates_of:
                todo.pop()
                continue
            dependencies = self.depends_on.get(name, ())
            unknown = [dependency for dependency in dependencies if dependency not in self._gates_of]
            if unknown:
                todo.extend(unknown)
                continue
            todo.pop()
            self._gates_of[name] = frozenset({name} & self.approved.keys()).union(
                *(self._gates_of[dependency] for dependency in dependencies)
            )
        return self._gates_of[work]


class ApprovalError(ValueError):
    """A decision that cannot be asked for: why, in words."""


def decision_annotations(
    flow: Mapping[str, Any],
    work: str,
    decision: ApprovalDecision,
    params: Mapping[str, str],
    message: str | None,
    token: str,
) -> dict[str, str]:
    """The annotations that ask for `decision` on gate `work` of the flow's current run (who decides
    is stamped by the API server); ApprovalError when the gate does not wait or the values are wrong."""
    name = (flow.get("metadata") or {}).get("name")
    spec = DAGFlowSpec.model_validate(flow.get("spec") or {})
    try:
        gate = spec.work(work)
    except KeyError:
        raise ApprovalError(f"DAGFlow {name} has no work {work}") from None
    if gate.approval is None:
        raise ApprovalError(f"work {work} of DAGFlow {name} is not a gate: it has no approval")
    status = flow.get("status") or {}
    entry: Mapping[str, Any] = next(
        (item for item in status.get("works") or [] if item.get("name") == work), {}
    )
    phase = entry.get("phase") or WorkPhase.PENDING.value
    if phase != WorkPhase.WAITING.value:
        raise ApprovalError(f"work {work} of DAGFlow {name} is not waiting for approval (it is {phase})")
    if params and decision == ApprovalDecision.REJECTED:
        raise ApprovalError("a rejection sets no parameters")
    values, problems = given_values(params, gate.approval.params, f"work {work}", "the gate sets", "it sets")
    if problems:
        raise ApprovalError("; ".join(problems))
    if message is not None and len(message) > MAX_APPROVAL_MESSAGE:
        raise ApprovalError(f"the message is longer than {MAX_APPROVAL_MESSAGE} characters")
    request: dict[str, Any] = {"run": int(status.get("run") or 0), "decision": decision.value, "token": token}
    if values:
        request["params"] = values
    if message:
        request["message"] = message
    return {approval_annotation(work): json.dumps(request, separators=(",", ":"))}
