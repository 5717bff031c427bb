"""The simulation in the suite: a fixed set of seeded histories, the regression histories of defects
found, and the model's own semantics (no cluster needed; tests/sim/test_contract.py checks the model
against a real API server)."""

from __future__ import annotations

import asyncio
from random import Random
from typing import Any

import pytest

from dagflow.api.models import API_VERSION, KIND, PLURAL
from dagflow.controller.kube import ApiGroups, FlowReplacedError, KubeClient
from tests.sim.apiserver import (
    ApiServer,
    AppsApi,
    BatchApi,
    Clock,
    CoreApi,
    CustomApi,
    json_patch,
    merge_patch,
)
from tests.sim.run import HISTORY_LENGTH, parse_kept, replay_line, run_history
from tests.sim.world import (
    NAMESPACE,
    RELIST_SECONDS,
    InlineExecutor,
    World,
    admitted_request,
    generate,
    make_spec,
)

# Seeds of the fixed set that break an invariant through a defect not fixed yet, with why.
# Seeds every `make test` plays (about 100 s); `make sim SEEDS=N` searches further.
FIXED_SEEDS = list(range(500))


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_a_seeded_history_keeps_every_invariant(seed: int) -> None:
    violation = run_history(seed, generate(seed, HISTORY_LENGTH))
    assert violation is None, f"{violation}\nreplay: {replay_line(seed)}"


# Histories that broke an invariant, shrunk: (seed, the steps kept of its history). These and the
# REGRESSION_SEEDS were found before flows had approval gates, and replay in that world: a gate drawn
# into one of their flows would change what they replay.
KNOWN_DEFECTS = [
    pytest.param(
        174,
        "13,34,53,58,62-63,65",
        # A Job the operator made and had not seen yet, deleted by someone else and replaced by
        # one the flow does not own, was deleted when its run was retired: now by uid only.
        id="a-retired-job-is-deleted-by-name-only",
    ),
    pytest.param(
        32,
        "46,68,82,84,96,100",
        id="a-retired-job-is-deleted-by-name-only-after-a-timeout",
    ),
    pytest.param(
        379,
        "80-81,86,92,94,102-103,111,119-120,125-126",
        # A matrix work's Job, made and not seen yet, was taken for a Job of one completion: its
        # first instance's pod made the work succeed, and the Job's own event took it back.
        id="a-just-created-matrix-job-is-not-settled-by-one-pod",
    ),
    pytest.param(
        1821,
        "0,6-7,9,23,26,31-32,38-42",
        # A work that succeeded when its pod did went back to Running when the pod left the watch
        # before the Job controller counted it.
        id="a-success-by-pod-stands-until-the-job-catches-up",
    ),
    pytest.param(
        598,
        "8,12-13,26,28,33,37,41,72-74",
        # A stop answered in the pass that also saw a spec change recorded the new generation as
        # observed, with the works of the run of the spec before.
        id="a-stopped-run-does-not-claim-a-newer-spec",
    ),
    pytest.param(
        47,
        "0,13,132-133,139,145",
        # A stopped run's Serving condition stayed as the stop left it when the serving pods were
        # lost later: a stopped flow's serve works are still watched and told.
        id="serving-is-told-after-a-stop",
    ),
    pytest.param(
        271,
        "19,21-22,31,34-35,132,135-136",
        # A retired Job deleted while the Jobs' watch was cut stayed in the index (a list anew
        # tells of no deletion), and kept its ConfigMap for ever: the operator now lists what its
        # indexes hold from time to time and forgets what is gone.
        id="a-job-deleted-while-its-watch-was-cut-is-forgotten",
    ),
    pytest.param(
        654,
        "98,107,114,116-117,119,125,127,129,131,134",
        # A flow the operator had found gone by listing came back with an older event still on
        # its way, whose deletion the cut watch never told: its run-1 Job was made again.
        id="a-flow-found-gone-is-not-brought-back-by-a-late-event",
    ),
    pytest.param(
        2,
        "0-1,9,26",
        # With the status written by a merge patch, an output whose value is JSON null vanished
        # from it: the status is now written whole by a JSON patch.
        id="a-null-output-survives-the-status-write",
    ),
    pytest.param(
        75,
        "10-11",
        # A ConfigMap planted under the name of a matrix work's values was read and mounted.
        id="a-planted-config-map-is-never-used",
    ),
    pytest.param(
        130,
        "0,20,22-23,27,29,46,48-50",
        # A flow made again under its name found the ConfigMap of the flow before it, not collected
        # yet, and used it: ConfigMaps are read only when the flow's uid owns them.
        id="a-config-map-of-the-flow-before-is-never-used",
    ),
]
# Histories found since flows have approval gates, shrunk, and replayed with them.
KNOWN_DEFECTS_WITH_GATES = [
    pytest.param(
        4261,
        "0-2,14,35,53-54,57,60",
        # phases_move_forward took the serve works from the flow's newest spec, which the operator had
        # not seen yet: a serve work of the spec the status was planned from, which the newer spec
        # dropped, was held to the phases of a batch work.
        id="a-serve-work-of-the-spec-a-status-was-planned-from-is-told-as-one",
    ),
    # Under FailFast a work that failed in the pass that planned it (a gate timed out, a rejection,
    # a child whose name was taken) left a gate of that pass Waiting in a run written as Failed:
    # those gates are Skipped in that pass now.
    pytest.param(287, "79", id="a-gate-timed-out-skips-the-gates-of-its-pass"),
    pytest.param(76, "10,19,63,66,74", id="a-refused-child-skips-the-gates-of-its-pass"),
    pytest.param(1872, "45,47-48,77,105,109", id="a-rejection-skips-the-gates-of-its-pass"),
    # A gate's Job was made in the pass that took its decision in, before the status held it: the
    # decision is written first now.
    pytest.param(5, "24,73,78-79,82-84,87-88", id="a-decision-is-recorded-before-its-gate-runs"),
    pytest.param(259, "0,19-20,26,40-41,53,62-63,69-73", id="a-second-decision-never-meets-a-running-gate"),
    # Under Continue a serve work that can no longer serve fails the run while a gate waits: the
    # invariant once took that for a defect.
    pytest.param(185, "0,18-19,24,35,39,45,53,55,60,62", id="a-continue-run-failed-by-its-serve-work"),
]
# Whole histories (beyond the fixed set) that once broke an invariant.
REGRESSION_SEEDS = [
    pytest.param(950, id="a-service-planted-under-the-name-does-not-fail-every-pass"),
    pytest.param(2411, id="a-serve-work-that-failed-its-rollout-stays-failed-in-its-run"),
    pytest.param(2593, id="a-failed-run-stays-failed"),
    pytest.param(8145, id="a-skipped-serve-work-stays-skipped-when-its-deployment-shows-up"),
    # The invariant took a ConfigMap's Job from its name, which a partly cached matrix work's values
    # (named after the instances its Job runs) do not follow: a Job uses what its pods mount.
    pytest.param(7647, id="a-partly-cached-matrix-works-values-are-used-by-its-job"),
    # A stop before the finally works: a work's Job not yet seen by the stopping pass ran on; it is
    # now stopped once seen, and a stopped work whose Job ended meanwhile stays Stopped.
    pytest.param(784, id="a-job-that-escaped-a-stop-before-the-finally-works-is-stopped"),
    # A finally work began once the works had ended, then a lost status write and a work's Job
    # deleted by someone else made that work run again: the invariant knew no such case.
    pytest.param(1613, id="a-work-run-again-after-its-job-was-deleted-beside-a-finally-work"),
    pytest.param(2030, id="the-works-after-a-deleted-job-wait-again-beside-a-finally-work"),
    # A run whose finally works had run (a serve work's rollout, not recorded, came back Running)
    # was taken, on a stop, as stopped before them: it went back from Failed to Running.
    pytest.param(8212, id="a-stop-after-the-finally-works-ran-ends-the-run"),
]


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_a_regression_seed_keeps_every_invariant(seed: int) -> None:
    violation = run_history(seed, generate(seed, HISTORY_LENGTH), gates=False)
    assert violation is None, f"{violation}\nreplay: {replay_line(seed, gates=False)}"


@pytest.mark.parametrize(("seed", "kept"), KNOWN_DEFECTS)
def test_a_regression_history_keeps_every_invariant(seed: int, kept: str) -> None:
    violation = run_history(seed, generate(seed, HISTORY_LENGTH), parse_kept(kept), gates=False)
    assert violation is None, f"{violation}\nreplay: {replay_line(seed, parse_kept(kept), gates=False)}"


@pytest.mark.parametrize(("seed", "kept"), KNOWN_DEFECTS_WITH_GATES)
def test_a_regression_history_with_gates_keeps_every_invariant(seed: int, kept: str) -> None:
    violation = run_history(seed, generate(seed, HISTORY_LENGTH), parse_kept(kept))
    assert violation is None, f"{violation}\nreplay: {replay_line(seed, parse_kept(kept))}"


def test_a_history_replays_exactly() -> None:
    assert writes_of(7) == writes_of(7)


def writes_of(seed: int) -> list[tuple[str, str, str, str]]:
    """Every write of the first 60 steps of a seed's history."""
    world = World(seed)
    try:
        for step in generate(seed, 60):
            world.apply(step)
        return [(write.actor, write.verb, write.resource, write.name) for write in world.server.writes]
    finally:
        world.close()


# -- the model's semantics that the operator relies on ----------------------------------------


def test_merge_patch_deletes_a_null_member_and_replaces_lists() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    assert merge_patch(target, {"b": {"c": None}, "e": [None]}) == {"a": 1, "b": {"d": 3}, "e": [None]}


def test_json_patch_keeps_a_null_value() -> None:
    patched = json_patch(
        {"status": {}}, [{"op": "add", "path": "/status", "value": {"outputs": {"x": None}}}]
    )
    assert patched == {"status": {"outputs": {"x": None}}}


def flow_client() -> tuple[ApiServer, KubeClient]:
    server = ApiServer(Clock())
    apis = ApiGroups(BatchApi(server), AppsApi(server), CoreApi(server), CustomApi(server), None)
    return server, KubeClient(4, apis, InlineExecutor())


def new_flow(server: ApiServer, name: str) -> dict[str, Any]:
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": {"works": []}}
    return server.create(PLURAL, "sim", body)


def test_a_status_written_for_a_replaced_flow_is_told_apart() -> None:
    server, kube = flow_client()
    old_uid = new_flow(server, "f")["metadata"]["uid"]
    server.delete(PLURAL, "sim", "f")
    new_flow(server, "f")
    with pytest.raises(FlowReplacedError):
        asyncio.run(kube.replace_flow_status("sim", "f", old_uid, {"phase": "Running"}))


def test_a_status_write_keeps_a_null_output() -> None:
    server, kube = flow_client()
    uid = new_flow(server, "f")["metadata"]["uid"]
    status = {"phase": "Running", "works": [{"name": "a", "outputs": {"x": None}}]}
    written = asyncio.run(kube.replace_flow_status("sim", "f", uid, status))
    assert written["status"]["works"][0]["outputs"] == {"x": None}


def test_a_flow_deleted_while_its_watch_was_cut_is_forgotten() -> None:
    world = World(0)
    try:
        world.server.actor = "user"
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "pipe"},
            "spec": make_spec(Random(1)),
        }
        world.server.create(PLURAL, NAMESPACE, body)
        world.operator.deliver_all()
        key = (NAMESPACE, "pipe")
        assert key in world.operator.reconciler.flows
        world.server.delete(PLURAL, NAMESPACE, "pipe")
        world.server.compact()
        world.operator.cut(PLURAL)
        # The list anew no longer has the flow, and kopf tells of no deletion.
        assert key in world.operator.reconciler.flows
        world.advance(RELIST_SECONDS)
        assert key not in world.operator.reconciler.flows
    finally:
        world.close()


def test_a_request_is_stamped_with_its_sender_as_the_admission_policy_stamps_it() -> None:
    request = '{"run": 1, "decision": "Approved", "token": "t1"}'
    first = admitted_request({}, "promote", request, "ada")
    assert first == {"approval.dagflow.dev/promote": request, "approved-by.dagflow.dev/promote": "ada"}
    # Sent again unchanged by someone else: the policy writes no name, the one there stays.
    on_flow = {key: value for key, value in first.items() if value is not None}
    assert admitted_request(on_flow, "promote", request, "grace") == {"approval.dagflow.dev/promote": request}
    # Without the mutating policy no name comes with it, whatever was there.
    assert admitted_request(on_flow, "promote", request.replace("t1", "t2"), "grace", policy=False) == {
        "approval.dagflow.dev/promote": request.replace("t1", "t2"),
        "approved-by.dagflow.dev/promote": None,
    }
