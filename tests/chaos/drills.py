"""What the chaos drills share: the flows they run, the operator killer, run requests that wait out
an operator that is down, and the report of each drill's numbers."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.e2e.flows import FINAL_PHASES, flow, status, work
from tests.kube import REPO_ROOT, kubectl, wait_for
from tests.operator_process import OperatorProcess

REPORT_PATH = REPO_ROOT / "build" / "chaos-report.json"


@dataclass
class DrillResult:
    """One drill's numbers, as docs/reliability.md shows them."""

    drill: str
    runs: int = 0
    disruptions: int = 0
    jobs_made: int = 0
    jobs_expected: int = 0
    recover_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def line(self) -> str:
        worst = f"{max(self.recover_seconds):.1f}s" if self.recover_seconds else "-"
        return (
            f"{self.drill}: {self.runs} runs, {self.disruptions} disruptions, Jobs made"
            f" {self.jobs_made}/{self.jobs_expected} expected, slowest recovery {worst},"
            f" {self.seconds:.0f}s in all"
        )


RESULTS: list[DrillResult] = []


def record(result: DrillResult) -> None:
    """Keep a drill's numbers for the session's summary and `build/chaos-report.json`."""
    RESULTS.append(result)
    REPORT_PATH.parent.mkdir(exist_ok=True)
    REPORT_PATH.write_text(json.dumps([asdict(each) for each in RESULTS], indent=2) + "\n")


def layered(name: str, branches: int, depth: int, duration: str, **spec: Any) -> dict[str, Any]:
    """root -> `branches` chains of `depth` works -> join: branches * depth + 2 works."""
    works = [work("root", duration=duration)]
    for branch in range(branches):
        previous = "root"
        for step in range(depth):
            current = f"b{branch}-{step}"
            works.append(work(current, previous, duration=duration))
            previous = current
    works.append(work("join", *[f"b{branch}-{depth - 1}" for branch in range(branches)], duration=duration))
    return flow(name, works, **spec)


def until_accepted(*args: str, namespace: str, what: str) -> None:
    """A kubectl change, tried again while the API server refuses it because the operator's webhook
    does not answer (the operator is being restarted), as a person would."""
    wait_for(
        lambda: kubectl(*args, namespace=namespace, check=False).returncode == 0,
        timeout=120,
        interval=1,
        what=what,
    )


def request_rerun(namespace: str, name: str, token: str) -> None:
    until_accepted(
        "annotate",
        "dagflow",
        name,
        f"dagflow.dev/rerun={token}",
        "--overwrite",
        namespace=namespace,
        what=f"the rerun request {token} to be accepted",
    )


def wait_for_run_end(namespace: str, name: str, run: int, timeout: float) -> dict[str, Any]:
    """The flow's status once run `run` reached a final phase."""

    def ended() -> dict[str, Any] | None:
        current = status(namespace, name)
        if current.get("run") == run and current.get("phase") in FINAL_PHASES:
            return current
        return None

    result: dict[str, Any] = wait_for(
        ended, timeout=timeout, interval=0.5, what=f"run {run} of {name} to end"
    )
    return result


class OperatorKiller:
    """SIGKILLs the operator at random intervals and starts it again at once, in a thread."""

    def __init__(self, operator: OperatorProcess, low: float, high: float, seed: int) -> None:
        self.operator = operator
        self.low, self.high = low, high
        self.random = random.Random(seed)
        self.kills = 0
        # Seconds from each kill until the restarted operator was healthy and its webhook registered.
        self.recoveries: list[float] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="operator-killer")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.random.uniform(self.low, self.high)):
                killed = time.monotonic()
                self.operator.kill()
                self.kills += 1
                self.operator.start()
                self.recoveries.append(time.monotonic() - killed)
        except BaseException as error:  # reported by stop(), in the test's thread
            self.error = error

    def __enter__(self) -> OperatorKiller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=120)
        self.operator.ensure_running()
        if self.error is not None:
            raise AssertionError(f"the operator did not come back: {self.error}") from self.error
