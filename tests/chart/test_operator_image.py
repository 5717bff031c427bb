"""What images/operator/Dockerfile does, done without Docker: the wheel from the same sources,
installed into a fresh virtualenv, and the installed operator started. Plus hadolint on every Dockerfile.

Installing the wheel fetches its dependencies from PyPI, so this takes a few minutes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube import REPO_ROOT, VENV_BIN

DOCKERFILE = REPO_ROOT / "images" / "operator" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ALL_DOCKERFILES = sorted((REPO_ROOT / "images").glob("*/Dockerfile"))


def stages(dockerfile: Path) -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def copied_sources(dockerfile: Path) -> list[str]:
    """What the builder stage copies from the build context (the repository root)."""
    sources: list[str] = []
    for instruction in stages(dockerfile)[0]:
        parts = instruction.split()
        if parts[0].upper() == "COPY" and not any(part.startswith("--from") for part in parts):
            sources += parts[1:-1]
    return sources


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel built from exactly what the Dockerfile copies, installed into a new virtualenv."""
    root = tmp_path_factory.mktemp("image")
    context = root / "src"
    context.mkdir()
    for source in copied_sources(DOCKERFILE):
        origin = REPO_ROOT / source
        if origin.is_dir():
            shutil.copytree(
                origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(origin, context / source)
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=600,
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", *map(str, wheels.glob("*.whl"))],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    yield venv


def test_dockerfile_copies_only_what_dockerignore_lets_through() -> None:
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    sources = [source.rstrip("/").removeprefix("./") for source in copied_sources(DOCKERFILE)]
    assert sources and set(sources) <= allowed


def test_final_stage_is_slim_non_root_and_runs_the_operator() -> None:
    builder, final = stages(DOCKERFILE)
    assert builder[0].split()[1] == final[0].split()[1] == "${PYTHON_IMAGE}"
    default_base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert default_base and re.fullmatch(r"python:3\.11-slim(-\w+)?", default_base.group(1))
    (user,) = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert final[-1] == 'ENTRYPOINT ["dagflow-operator"]'
    text = " ".join(final)
    assert not re.search(r"apt-get|apk |gcc|build-essential|COPY (?!--from)", text)


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda path: path.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "hadolint is missing from the venv: run `make venv`"
    result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(1200)
def test_installed_operator_prints_its_usage(installed_venv: Path) -> None:
    result = subprocess.run(
        [str(installed_venv / "bin" / "dagflow-operator"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: dagflow-operator")
    assert "--liveness" in result.stdout


@pytest.mark.timeout(1200)
def test_installed_package_carries_its_data_files(installed_venv: Path) -> None:
    python = str(installed_venv / "bin" / "python")
    imported = subprocess.run(
        [python, "-c", "import dagflow.api.crd, dagflow.controller.main"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    # The CRD is generated from the models and the Kubernetes schemas shipped as package data.
    rendered = subprocess.run(
        [python, "-m", "dagflow.api.crd"], capture_output=True, text=True, timeout=60, cwd=installed_venv
    )
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == (REPO_ROOT / "crds" / "dagflow.dev_dagflows.yaml").read_text()


@pytest.mark.timeout(1200)
def test_wheel_holds_the_package_and_nothing_else(installed_venv: Path) -> None:
    (wheel,) = (installed_venv.parent / "wheels").glob("dagflow_operator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"dagflow"}
    assert "dagflow/api/k8s-core-v1-schemas.json" in names
    assert "dagflow/py.typed" in names
