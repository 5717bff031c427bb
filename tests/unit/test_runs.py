"""Which run is current: from the status and the generation stamped on the flow's children."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dagflow.runs import current_run


def test_a_new_flow_starts_run_1() -> None:
    assert current_run({}, 1, []) == 1


def test_the_recorded_run_goes_on_while_the_spec_is_the_same() -> None:
    assert current_run({"run": 3, "observedGeneration": 5}, 5, [(3, 5), (2, 4)]) == 3


def test_a_new_generation_starts_the_next_run() -> None:
    assert current_run({"run": 3, "observedGeneration": 5}, 6, [(3, 5)]) == 4


def test_children_of_a_run_whose_status_was_never_written_are_that_run() -> None:
    # Jobs of run 2 were made for generation 2, then the operator died before patching the status.
    assert current_run({"run": 1, "observedGeneration": 1}, 2, [(1, 1), (2, 2)]) == 2


def test_an_edit_while_the_status_was_held_back_starts_yet_another_run() -> None:
    # Run 2 (generation 2) made its Jobs, its status was held back, then generation 3 came.
    assert current_run({"run": 1, "observedGeneration": 1}, 3, [(1, 1), (2, 2)]) == 3


def test_an_old_status_never_takes_the_run_back() -> None:
    # The status read is older than the Jobs of run 3, made for the current generation.
    assert current_run({"run": 1, "observedGeneration": 1}, 4, [(3, 4)]) == 3


def test_children_without_a_stamp_belong_to_the_recorded_generation() -> None:
    assert current_run({"run": 2, "observedGeneration": 2}, 2, [(2, None)]) == 2
    assert current_run({"run": 2, "observedGeneration": 2}, 3, [(2, None)]) == 3


@given(
    status_run=st.integers(0, 20),
    observed=st.integers(1, 20),
    generation=st.integers(1, 20),
    children=st.lists(st.tuples(st.integers(1, 20), st.one_of(st.none(), st.integers(1, 20))), max_size=8),
)
def test_the_run_never_moves_back_and_moves_at_most_one_ahead(
    status_run: int, observed: int, generation: int, children: list[tuple[int, int | None]]
) -> None:
    status = {"run": status_run, "observedGeneration": observed} if status_run else {}
    run = current_run(status, generation, children)
    newest = max([status_run, *(run for run, _ in children)])
    assert newest <= run <= newest + 1
    assert run >= 1
    # Deterministic, whatever the order the children are listed in.
    assert run == current_run(status, generation, list(reversed(children)))
