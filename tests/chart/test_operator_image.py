"""What images/operator/Dockerfile does, done without Docker: the wheel from the same sources,
installed into a fresh virtualenv, and the installed operator started. Plus hadolint on every Dockerfile.

Installing the wheel fetches its dependencies from PyPI, so this takes a few minutes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.kube import REPO_ROOT, VENV_BIN

DOCKERFILE = REPO_ROOT / "images" / "operator" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
# Every Dockerfile under images/: the project's images, and the kind node image's (images/kind/node).
ALL_DOCKERFILES = sorted((REPO_ROOT / "images").glob("**/*Dockerfile"))
LOCK = REPO_ROOT / "images" / "operator" / "requirements.lock"
DIGEST = r"@sha256:[0-9a-f]{64}"


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
    # As the image does: the locked dependencies, each checked against its hashes (pip refuses any
    # dependency the lock lacks), then the wheel alone.
    for arguments in (["--require-hashes", "-r", str(LOCK)], ["--no-deps", *map(str, wheels.glob("*.whl"))]):
        result = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", *arguments],
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
    assert default_base and re.fullmatch(rf"python:3\.11-slim(-\w+)?{DIGEST}", default_base.group(1))
    (user,) = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert final[-1] == 'ENTRYPOINT ["dagflow-operator"]'
    text = " ".join(final)
    assert not re.search(r"apt-get|apk |gcc|build-essential|COPY (?!--from)", text)


@pytest.mark.parametrize(
    "dockerfile", ALL_DOCKERFILES, ids=lambda path: str(path.relative_to(REPO_ROOT / "images"))
)
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


def locked_pins() -> dict[str, tuple[str, list[str]]]:
    """The lock's packages: normalised name -> (version, hashes)."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"not pinned: {line}"
        hashes = [option.removeprefix("--hash=") for option in options if option.startswith("--hash=")]
        pins[canonicalize_name(name)] = (version, hashes)
    return pins


def test_the_lock_pins_every_dependency_of_pyproject_with_hashes() -> None:
    pins = locked_pins()
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency} is not in {LOCK.name}: run pip-compile (see its header)"
        version, _ = pins[name]
        assert dependency.specifier.contains(version, prereleases=True), f"{name}=={version} vs {dependency}"
    for name, (_version, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) for digest in hashes), name


def test_the_image_installs_its_dependencies_from_the_lock_by_hash() -> None:
    _, final = stages(DOCKERFILE)
    text = " ".join(final)
    assert "--require-hashes -r /tmp/requirements.lock" in text
    assert "source=images/operator/requirements.lock" in text
    # The wheel brings no dependency of its own beside the lock's.
    assert re.search(r"pip install [^&]*--no-deps /wheels/\*\.whl", text)
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    assert "images/operator/requirements.lock" in allowed


@pytest.mark.parametrize(
    "dockerfile", ALL_DOCKERFILES, ids=lambda path: str(path.relative_to(REPO_ROOT / "images"))
)
def test_base_images_are_pinned_by_digest(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    defaults = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)", text, re.MULTILINE))
    for stage in stages(dockerfile):
        base = stage[0].split()[1]
        if base == "scratch":
            continue
        argument = re.fullmatch(r"\$\{(\w+)\}", base)
        image = defaults.get(argument.group(1), "") if argument else base
        assert re.search(DIGEST + "$", image), (
            f"{dockerfile.parent.name}: {base} ({image}) is not pinned by digest"
        )
