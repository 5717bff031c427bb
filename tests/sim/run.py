"""Run seeded histories, shrink a failing one, and replay it.

    python -m tests.sim.run --seeds 1000          # seeds 0..999, histories per second at the end
    python -m tests.sim.run --seed 123            # one seed; shrunk if it fails
    python -m tests.sim.run --seed 123 --keep 0,4-9,17   # exactly those steps of seed 123's history
    python -m tests.sim.run --seed 2 --keep 0-1,9,26 --no-gates   # a history found before flows had gates

`make sim SEEDS=N`, `make sim SEED=S [KEEP=...]` wrap these.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.sim.invariants import check_settled, check_step
from tests.sim.world import Step, Violation, World, generate

HISTORY_LENGTH = 150


@dataclass(frozen=True)
class Outcome:
    seed: int
    kept: tuple[int, ...]
    violation: Violation | None


def trace(world: World, step: object) -> None:
    """Print a step and the flows as it left them."""
    print(f"-- {step} (t={world.clock.seconds:g}s)")
    for flow in world.flows():
        status = flow.get("status") or {}
        works = " ".join(
            f"{work['name']}={work.get('phase')}" + _approval_of(work) for work in status.get("works") or []
        )
        annotations = {
            key.removeprefix("dagflow.dev/"): value
            for key, value in (flow["metadata"].get("annotations") or {}).items()
        }
        print(
            f"   {flow['metadata']['name']} uid ..{flow['metadata']['uid'][-3:]}"
            f" gen {flow['metadata'].get('generation')}"
            f" run {status.get('run')} {status.get('phase')} {works} {annotations or ''}"
            f" handled {status.get('handledRequests') or {}}"
        )


def _approval_of(work: dict[str, object]) -> str:
    approval = work.get("approval")
    if not isinstance(approval, dict) or not approval.get("decision"):
        return ""
    values = f" {approval['params']}" if approval.get("params") else ""
    return f"({approval['decision']} by {approval.get('by')}, {approval.get('token')}{values})"


def run_history(
    seed: int,
    steps: Sequence[Step],
    kept: Sequence[int] | None = None,
    verbose: bool = False,
    gates: bool = True,
) -> Violation | None:
    """Play `steps` (those at the positions `kept`, all when None), checking the invariants after
    every step, then let the world settle and check what must hold then. Without `gates`, in the
    world as it was before flows had approval gates."""
    world = World(seed, gates)
    positions = range(len(steps)) if kept is None else kept
    try:
        for position in positions:
            try:
                world.apply(steps[position])
                if verbose:
                    trace(world, f"{position} {steps[position]}")
                check_step(world)
            except Violation as violation:
                violation.step = position
                return violation
        try:
            # Schedules would start runs for ever: their author takes them out first.
            world.unschedule()
            check_step(world)
            check_settled(world, world.settle())
            if verbose:
                trace(world, "settled")
            check_step(world)
            # Then every serving node goes out, and comes back: the Serving conditions must follow
            # their Deployments, whatever state the runs were left in.
            if any(world.server.items("deployments")):
                for outage in (True, False):
                    world.deployments.outage = outage
                    check_settled(world, world.settle())
                    if verbose:
                        trace(world, "settled, serving nodes " + ("out" if outage else "back"))
                    check_step(world)
        except Violation as violation:
            violation.step = len(steps)
            return violation
        return None
    finally:
        world.close()


def shrink(
    seed: int, steps: Sequence[Step], failing: Violation, budget: float = 120.0, gates: bool = True
) -> tuple[list[int], Violation]:
    """Drop steps while the history still breaks the same invariant: first everything after the step
    that broke it, then halves, quarters... down to single steps (delta debugging)."""
    deadline = time.monotonic() + budget
    kept = list(range(min(failing.step + 1, len(steps))))
    violation = failing
    chunk = max(len(kept) // 2, 1)
    while chunk >= 1 and time.monotonic() < deadline:
        start, progressed = 0, False
        while start < len(kept) and time.monotonic() < deadline:
            candidate = kept[:start] + kept[start + chunk :]
            found = run_history(seed, steps, candidate, gates=gates) if candidate else None
            if found is not None and found.invariant == failing.invariant:
                kept, violation, progressed = candidate, found, True
                # The failure may come earlier now: what follows it is not needed.
                kept = kept[: _position_in(kept, found.step) + 1]
            else:
                start += chunk
        if not progressed:
            chunk //= 2
    return kept, violation


def _position_in(kept: Sequence[int], step: int) -> int:
    return kept.index(step) if step in kept else len(kept) - 1


def format_kept(kept: Sequence[int]) -> str:
    """Positions as ranges: 0,4-9,17."""
    parts: list[str] = []
    run_start = previous = None
    for position in [*kept, None]:
        if previous is not None and position == previous + 1:
            previous = position
            continue
        if run_start is not None:
            parts.append(str(run_start) if run_start == previous else f"{run_start}-{previous}")
        run_start = previous = position
    return ",".join(parts)


def parse_kept(text: str) -> list[int]:
    kept: list[int] = []
    for part in text.split(","):
        if part:
            first, _, last = part.partition("-")
            kept.extend(range(int(first), int(last or first) + 1))
    return kept


def replay_line(seed: int, kept: Sequence[int] | None = None, gates: bool = True) -> str:
    if not gates:
        keep = f" --keep {format_kept(kept)} --verbose" if kept is not None else ""
        return f"python -m tests.sim.run --seed {seed}{keep} --no-gates"
    return f"make sim SEED={seed}" + (f" KEEP={format_kept(kept)}" if kept is not None else "")


def explain(seed: int, length: int = HISTORY_LENGTH, shrink_budget: float = 120.0, gates: bool = True) -> str:
    """A failing seed's report: the invariant, the shrunk history and the lines that replay it."""
    steps = generate(seed, length)
    violation = run_history(seed, steps, gates=gates)
    if violation is None:
        return f"seed {seed}: passes"
    kept, shrunk = shrink(seed, steps, violation, shrink_budget, gates)
    lines = [
        f"seed {seed} breaks {violation}",
        f"  shrunk to {len(kept)} of {len(steps)} steps: {shrunk}",
        "  steps: " + " ".join(str(steps[position]) for position in kept),
        f"  replay: {replay_line(seed, gates=gates)}",
        f"  replay the shrunk history: {replay_line(seed, kept, gates)}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, help="run this seed (and shrink it if it fails)")
    parser.add_argument("--keep", help="with --seed: only these steps of its history (0,4-9,17)")
    parser.add_argument("--seeds", type=int, default=100, help="run seeds start..start+N-1")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--length", type=int, default=HISTORY_LENGTH, help="steps per history")
    parser.add_argument("--no-shrink", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="with --keep: print every step and the flows")
    parser.add_argument(
        "--no-gates",
        action="store_true",
        help="flows without approval gates, as in the histories found before they were drawn",
    )
    args = parser.parse_args(argv)
    gates = not args.no_gates
    if args.seed is not None:
        steps = generate(args.seed, args.length)
        if args.keep:
            violation = run_history(args.seed, steps, parse_kept(args.keep), args.verbose, gates)
            print(f"seed {args.seed} (steps {args.keep}): {violation or 'passes'}")
            return 1 if violation else 0
        if args.no_shrink:
            violation = run_history(args.seed, steps, gates=gates)
            print(f"seed {args.seed}: {violation or 'passes'}")
            return 1 if violation else 0
        report = explain(args.seed, args.length, gates=gates)
        print(report)
        return 0 if report.endswith("passes") else 1
    started = time.monotonic()
    failures = []
    for seed in range(args.start, args.start + args.seeds):
        violation = run_history(seed, generate(seed, args.length), gates=gates)
        if violation is not None:
            failures.append(seed)
            print(f"seed {seed} breaks {violation}\n  replay: {replay_line(seed, gates=gates)}", flush=True)
    elapsed = time.monotonic() - started
    print(
        f"{args.seeds} histories of {args.length} steps in {elapsed:.1f} s "
        f"({args.seeds / elapsed:.1f} histories/s), {len(failures)} failing"
        + (f": {' '.join(map(str, failures))}" if failures else "")
    )
    if failures and not args.no_shrink:
        print(explain(failures[0], args.length, gates=gates))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
