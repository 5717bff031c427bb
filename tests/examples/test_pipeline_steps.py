"""The example pipeline's steps as plain local processes, in the order the flow runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.kube import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "images" / "examples"
MODELS = ("linear", "forest", "gbr")
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = dict(zip(FEATURES, [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02], strict=True))


def step_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def run_step(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", *args],
        capture_output=True,
        text=True,
        env=step_env(),
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pipeline.{module} failed ({result.returncode}):\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after `process` and the three trainings (run at once, as in the flow)."""
    data = tmp_path_factory.mktemp("data")
    termination_log = data.parent / "process-termination-log"
    termination_log.touch()
    run_step("process", "--data", str(data), "--termination-log", str(termination_log))
    assert termination_log.read_text().startswith("process: 353 training rows, 89 test rows")
    for model in MODELS:
        (data.parent / f"train-{model}-termination-log").touch()
    trainings = {
        model: subprocess.Popen(
            [
                *(sys.executable, "-m", "pipeline.train", "--model", model, "--data", str(data)),
                *("--termination-log", str(data.parent / f"train-{model}-termination-log")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=step_env(),
        )
        for model in MODELS
    }
    for model, process in trainings.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"training {model} failed:\n{stderr}"
        assert stdout.startswith(f"train {model}: r2="), stdout
    return data


def outputs_of(trained: Path) -> dict[str, dict[str, Any]]:
    """Each training's outputs, as the flow reads them from its termination message."""
    return {
        model: json.loads((trained.parent / f"train-{model}-termination-log").read_text()) for model in MODELS
    }


@contextmanager
def serving(trained: Path, *choice: str) -> Iterator[str]:
    """`pipeline.serve` on a free port, told which model by `choice`; its URL once it answers."""
    port = free_port()
    log_path = trained.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "pipeline.serve", "--data", str(trained), *choice]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=step_env(),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"pipeline.serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            http(f"{url}/healthz")
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, f"serve did not stop cleanly on SIGTERM:\n{log_path.read_text()}"


@pytest.fixture(scope="module")
def server(trained: Path) -> Iterator[str]:
    # The flow passes the trainings' outputs as lists, in the order of the matrix.
    outputs = [outputs_of(trained)[model] for model in MODELS]
    with serving(
        trained,
        *("--models", json.dumps([entry["model"] for entry in outputs])),
        *("--scores", json.dumps([entry["score"] for entry in outputs])),
    ) as url:
        yield url


def test_process_writes_the_split(trained: Path) -> None:
    train = (trained / "dataset" / "train.csv").read_text().splitlines()
    test = (trained / "dataset" / "test.csv").read_text().splitlines()
    assert train[0].split(",") == [*FEATURES, "target"]
    assert (len(train) - 1, len(test) - 1) == (353, 89)


def test_each_training_reports_its_model_and_score_as_outputs(trained: Path) -> None:
    for model, outputs in outputs_of(trained).items():
        metrics = json.loads((trained / "models" / f"{model}.json").read_text())
        assert outputs == {"model": model, "score": metrics["r2"]}


def test_serve_picks_the_best_of_the_models_it_is_given(trained: Path) -> None:
    scores = {model: entry["score"] for model, entry in outputs_of(trained).items()}
    worst = min(scores, key=lambda model: scores[model])
    program = (
        "import json, sys; from pathlib import Path; from pipeline.layout import Layout; "
        "from pipeline.serve import best_model, chosen_model; "
        "models, scores = json.loads(sys.argv[1]), json.loads(sys.argv[2]); "
        "print(best_model(Layout(Path(sys.argv[3])), chosen_model(models, scores)).name)"
    )

    def served(models: list[str]) -> str:
        given = [json.dumps(models), json.dumps([scores[model] for model in models]), str(trained)]
        result = subprocess.run(
            [sys.executable, "-c", program, *given],
            capture_output=True,
            text=True,
            env=step_env(),
            check=True,
        )
        return result.stdout.strip()

    assert served([worst]) == worst
    assert served(list(MODELS)) == max(scores, key=lambda model: scores[model])


def test_each_training_writes_its_model_and_metrics(trained: Path) -> None:
    for model in MODELS:
        assert (trained / "models" / f"{model}.joblib").stat().st_size > 0
        metrics = json.loads((trained / "models" / f"{model}.json").read_text())
        assert metrics["model"] == model
        assert 0.3 < metrics["r2"] < 1, metrics
        assert metrics["mae"] > 0 and metrics["rmse"] >= metrics["mae"]
        assert (metrics["train_rows"], metrics["test_rows"]) == (353, 89)
    # No temporary files are left behind by the atomic writes.
    assert sorted(path.name for path in (trained / "models").iterdir()) == sorted(
        f"{model}.{suffix}" for model in MODELS for suffix in ("joblib", "json")
    )


def test_serve_answers_health_and_predictions_with_the_best_model(trained: Path, server: str) -> None:
    scores = {model: json.loads((trained / "models" / f"{model}.json").read_text())["r2"] for model in MODELS}
    best = max(scores, key=lambda model: scores[model])

    status, health = http(f"{server}/healthz")
    assert status == 200
    assert health["status"] == "ok"
    assert health["model"] == best
    assert health["features"] == FEATURES

    status, answer = http(f"{server}/predict", {"rows": [ROW, list(ROW.values())]})
    assert status == 200, answer
    assert answer["model"] == best
    first, second = answer["predictions"]
    assert first == pytest.approx(second)
    assert 25 <= first <= 346  # the range of the data set's target

    status, answer = http(f"{server}/predict", [ROW])  # a bare list of rows works too
    assert status == 200 and answer["predictions"] == [first]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"rows": [{"age": 0.1}]}, "row 0 lacks sex"),
        ({"rows": [[1, 2]]}, "row 0 has 2 values, the model takes 10"),
        ({"rows": [{**ROW, "bmi": "high"}]}, "not a number"),
        ({"rows": []}, "rows"),
        (b"not json", "not JSON"),
    ],
)
def test_serve_refuses_bad_rows_with_400(server: str, body: Any, error: str) -> None:
    status, answer = http(f"{server}/predict", body)
    assert status == 400
    assert error in answer["error"]


def test_unknown_paths_answer_404(server: str) -> None:
    assert http(f"{server}/nope")[0] == 404
    assert http(f"{server}/healthz", {"rows": [ROW]})[0] == 404


def test_training_before_process_fails_with_a_clear_message(tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    arguments = ["--model", "linear", "--data", str(tmp_path / "empty")]
    result = run_step("train", *arguments, "--termination-log", str(termination_log), check=False)
    assert result.returncode == 1
    assert "run `python -m pipeline.process` first" in result.stderr
    assert "run `python -m pipeline.process` first" in termination_log.read_text()


def test_serve_without_a_model_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = run_step("serve", "--data", str(tmp_path), "--port", "0", check=False)
    assert result.returncode == 1
    assert "no trained model" in result.stderr


def test_the_termination_log_is_left_alone_where_it_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    run_step("process", "--data", str(tmp_path / "data"), "--termination-log", str(missing))
    assert not missing.exists()


# The steps of examples/ml-pipeline-gated.yaml after the trainings: evaluate, promote (the gate's
# work), serve of the promoted model, and the finally work report.


def run_logged(module: str, *args: str | Path, log: Path, check: bool = True) -> tuple[str, str, int]:
    """Run a step with a termination log of its own, as in its pod; its stdout and stderr, what it left
    in the log, and its exit code."""
    log.touch()
    result = run_step(module, *map(str, args), "--termination-log", str(log), check=check)
    return result.stdout + result.stderr, log.read_text().strip(), result.returncode


def flow_lists(trained: Path) -> tuple[str, str]:
    """The trainings' models and scores as the flow hands a matrix work's outputs on: JSON lists in the
    matrix's order."""
    outputs = [outputs_of(trained)[model] for model in MODELS]
    return json.dumps([entry["model"] for entry in outputs]), json.dumps(
        [entry["score"] for entry in outputs]
    )


def ranked(trained: Path) -> tuple[dict[str, float], str, str]:
    scores = {model: entry["score"] for model, entry in outputs_of(trained).items()}
    best = max(scores, key=lambda model: scores[model])
    worst = min(scores, key=lambda model: scores[model])
    assert best != worst
    return scores, best, worst


def test_the_gated_steps_promote_the_approvers_choice_serve_it_and_report_it(
    trained: Path, server: str, tmp_path: Path
) -> None:
    scores, best, worst = ranked(trained)
    models, listed_scores = flow_lists(trained)

    printed, evaluated, _ = run_logged(
        "evaluate", "--models", models, "--scores", listed_scores, log=tmp_path / "e"
    )
    assert json.loads(evaluated) == {"model": best, "score": scores[best]}
    assert printed.startswith(f"evaluate: best model {best} (score {scores[best]:.4f})"), printed

    # The approver chose another model than the best: that one is promoted.
    printed, promoted, _ = run_logged(
        "promote", "--data", trained, "--best", best, f"--chosen={worst}", log=tmp_path / "p"
    )
    assert json.loads(promoted) == {"model": worst}
    assert printed.startswith(f"promote: {worst} (chosen by the approver, over the best, {best}"), printed
    record = json.loads((trained / "promoted.json").read_text())
    assert (record["model"], record["best"], record["chosen_by_approver"]) == (worst, best, True)
    assert record["metrics"]["r2"] == scores[worst]

    with serving(trained, "--model", json.loads(promoted)["model"]) as url:
        status, health = http(f"{url}/healthz")
        assert (status, health["model"]) == (200, worst)
        status, answer = http(f"{url}/predict", {"rows": [ROW]})
        assert (status, answer["model"]) == (200, worst), answer
        [prediction] = answer["predictions"]
        assert 25 <= prediction <= 346
        # Another model than the one the best-score server answers with.
        best_answer = http(f"{server}/predict", {"rows": [ROW]})[1]
        assert best_answer["model"] == best and best_answer["predictions"][0] != pytest.approx(prediction)

    report_file = trained / "reports" / "run-7.json"
    printed, summary, _ = run_logged(
        "report",
        *("--data", trained, "--run", "7", "--phase", "Serving", "--failed-works", "[]"),
        f"--model={worst}",
        log=tmp_path / "r",
    )
    assert summary == f"report: run 7 Serving, failed works: none, promoted {worst} (r2={scores[worst]:.4f})"
    assert printed == f"{summary} -> {report_file}\n"
    report = json.loads(report_file.read_text())
    assert {key: report[key] for key in ("run", "phase", "failed_works", "promoted")} == {
        "run": 7,
        "phase": "Serving",
        "failed_works": [],
        "promoted": {"model": worst, "r2": scores[worst]},
    }


@pytest.mark.parametrize("chosen", [["--chosen="], []], ids=["empty", "absent"])
def test_promote_without_a_choice_promotes_the_best(trained: Path, tmp_path: Path, chosen: list[str]) -> None:
    _, best, worst = ranked(trained)
    # What the gate's default, "", promotes: evaluate's best, even over an earlier promotion.
    run_logged("promote", "--data", trained, "--best", worst, "--chosen=" + worst, log=tmp_path / "before")
    printed, promoted, _ = run_logged(
        "promote", "--data", trained, "--best", best, *chosen, log=tmp_path / "p"
    )
    assert json.loads(promoted) == {"model": best}
    assert printed.startswith(f"promote: {best} (the best, r2="), printed
    record = json.loads((trained / "promoted.json").read_text())
    assert (record["model"], record["chosen_by_approver"]) == (best, False)


@pytest.mark.parametrize("chosen", ["xgboost", "../models/gbr", "GBR"])
def test_promote_refuses_a_model_that_was_not_trained(trained: Path, tmp_path: Path, chosen: str) -> None:
    before = (trained / "promoted.json").read_text() if (trained / "promoted.json").exists() else None
    printed, message, code = run_logged(
        "promote", "--data", trained, "--best", "gbr", f"--chosen={chosen}", log=tmp_path / "p", check=False
    )
    error = f"no trained model {chosen!r} under {trained / 'models'} (trained: forest, gbr, linear)"
    assert code == 1
    assert printed == f"promote: {error}\n"
    # No outputs: the work fails, and serve, which needs them, is skipped.
    assert message == f"promote: {error}"
    after = (trained / "promoted.json").read_text() if (trained / "promoted.json").exists() else None
    assert after == before


def test_serve_refuses_a_model_it_was_not_given(trained: Path) -> None:
    result = run_step("serve", "--data", str(trained), "--port", "0", "--model", "xgboost", check=False)
    assert result.returncode == 1
    assert f"model xgboost is not in {trained / 'models'}" in result.stderr


def test_evaluate_refuses_outputs_it_cannot_rank(tmp_path: Path) -> None:
    for models, scores, error in [
        ('["linear","gbr"]', "[0.4]", "--models and --scores must be lists of the same length"),
        ('["linear","gbr"]', "[null,null]", "no numeric score among [None, None]"),
    ]:
        printed, message, code = run_logged(
            "evaluate", "--models", models, "--scores", scores, log=tmp_path / "e", check=False
        )
        assert code == 1
        assert error in printed and error in message


def test_report_of_a_run_that_promoted_nothing_is_written_all_the_same(tmp_path: Path) -> None:
    # A run that failed before anything was trained: the data directory holds nothing yet.
    data = tmp_path / "data"
    printed, summary, code = run_logged(
        "report",
        *("--data", data, "--run", "8", "--phase", "Failed", "--failed-works", '["train"]', "--model="),
        log=tmp_path / "r",
    )
    assert code == 0
    assert summary == "report: run 8 Failed, failed works: train, nothing promoted"
    assert printed == f"{summary} -> {data / 'reports' / 'run-8.json'}\n"
    report = json.loads((data / "reports" / "run-8.json").read_text())
    assert (report["phase"], report["failed_works"], report["promoted"]) == ("Failed", ["train"], None)
