"""The dashboard's committed bundle was built from the sources in ui/ as they are (`make ui-assets`
rebuilds it), and it is complete: served by the package itself, nothing from a CDN."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

from tests.kube import REPO_ROOT

SOURCES = REPO_ROOT / "ui"
STATIC = REPO_ROOT / "operator" / "dagflow" / "ui" / "static"


def sources() -> list[str]:
    """The files ui/build.mjs hashes, in its order."""
    listed = ["build.mjs", "index.html", "package.json", "package-lock.json"]
    listed += [f"src/{path.name}" for path in (SOURCES / "src").iterdir()]
    return sorted(listed)


def test_bundle_is_built_from_the_current_sources() -> None:
    stamp = json.loads((STATIC / "build-stamp.json").read_text())
    assert stamp["files"] == sources()
    digest = hashlib.sha256()
    for name in sources():
        digest.update(name.encode() + b"\0")
        digest.update((SOURCES / name).read_bytes())
        digest.update(b"\0")
    assert stamp["sources"] == digest.hexdigest(), "ui/ changed: run `make ui-assets` and commit the bundle"
    assert (STATIC / "index.html").read_bytes() == (SOURCES / "index.html").read_bytes()


def test_page_loads_nothing_from_elsewhere() -> None:
    page = (STATIC / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert sorted(referenced) == ["static/app.css", "static/app.js"]
    for name in ("app.js", "app.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"""(?:import|src=|url\()\s*["']?https?://""", text), name


def make_dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run, without running them."""
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_screenshots_reach_the_docs_only_through_make_screenshots() -> None:
    """The browser tests write their screenshots under build/ (ignored by git): `make test` leaves
    the checkout clean, and `make screenshots` copies them into docs/images when asked."""
    copies = [line.split() for line in make_dry_run("screenshots") if line.startswith("cp ")]
    assert copies, "make screenshots copies nothing"
    *sources_copied, destination = copies[-1][1:]
    assert destination.rstrip("/") == "docs/images"
    for source in sources_copied:
        assert source.startswith("build/screenshots/"), source
        ignored = subprocess.run(["git", "check-ignore", "-q", source], cwd=REPO_ROOT, check=False)
        assert ignored.returncode == 0, f"{source} is not ignored by git"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    development = readme.partition("## Development")[2]
    assert "make screenshots" in development, "the README's Development section does not tell of it"
    assert not any("docs/images" in line for line in make_dry_run("test-browser"))
