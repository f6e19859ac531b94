"""The README's setup (scripts/env.sh): each missing prerequisite is one clear line, and a failed
install leaves nothing that a later run could take for a complete environment; an install
compiles its bytecode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV_VERSION = next(line.split("=", 1)[1] for line in (ROOT / "scripts" / "uv.sh").read_text().splitlines()
                  if line.startswith("UV_VERSION="))


def _env_sh(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Sources scripts/env.sh in a shell with an empty cache under ``tmp_path``."""
    base = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": os.environ["PATH"],
            "PYTHON": sys.executable}
    return subprocess.run(["bash", "-c", f"source {ROOT}/scripts/env.sh && echo READY"], capture_output=True,
                          text=True, timeout=120, env={**base, **env})


def _one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0 and "READY" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


def test_an_old_python_is_named(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Python 3.9.18'; exit 0; fi\nexit 1\n")
    old.chmod(0o755)
    _one_error_line(_env_sh(tmp_path, PYTHON=str(old)), "Python 3.10 or newer", "3.9.18")
    _one_error_line(_env_sh(tmp_path, PYTHON=str(tmp_path / "nowhere")), "not found")


def _path_without(tmp_path: Path, *names: str) -> str:
    """A PATH that has bash and python but not ``names``: links to every other program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for folder in os.environ["PATH"].split(os.pathsep):
        for entry in Path(folder).glob("*") if Path(folder).is_dir() else []:
            target = bin_dir / entry.name
            if entry.name not in names and not target.exists():
                target.symlink_to(entry)
    return str(bin_dir)


def test_missing_java_or_maven_is_named_unless_a_server_is_given(tmp_path):
    _one_error_line(_env_sh(tmp_path, PATH=_path_without(tmp_path, "java"), JAVA_HOME=""), "Java 17", "NEO4J_URI")
    _one_error_line(_env_sh(tmp_path / "m", PATH=_path_without(tmp_path / "m", "mvn")), "Maven", "NEO4J_URI")
    # with a server of one's own neither is needed: the run goes on to the install (refused here)
    remote = _env_sh(tmp_path / "r", PATH=_path_without(tmp_path / "r", "java", "mvn"), JAVA_HOME="",
                     NEO4J_URI="bolt://127.0.0.1:1", PIP_NO_INDEX="1")
    assert "Java" not in remote.stderr and "Maven" not in remote.stderr and "uv" in remote.stderr


def test_an_install_without_the_package_index_keeps_nothing(tmp_path):
    # no index at all: uv itself cannot be installed
    result = _env_sh(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    _one_error_line(result, f"uv {UV_VERSION}", "PyPI")
    assert not list((tmp_path / "cache" / "circuitatlas").glob("uv-*/"))
    # uv present (this environment's), the lock offline with an empty uv cache: nothing marked complete
    uv = shutil.which("uv") or _cached_uv()
    if uv is None:
        pytest.skip("no uv binary on this machine to stand in for the cached one")
    tool = tmp_path / "cache" / "circuitatlas" / f"uv-{UV_VERSION}"
    (tool / "bin").mkdir(parents=True)
    (tool / "bin" / "uv").symlink_to(uv)
    (tool / ".complete").touch()
    result = _env_sh(tmp_path, UV_OFFLINE="1")
    _one_error_line(result, "requirements.lock", "failed", "nothing was kept")
    assert not list((tmp_path / "cache" / "circuitatlas").glob("deps-*"))
    again = _env_sh(tmp_path, UV_OFFLINE="1")  # the next run tries again, it does not take a half venv
    _one_error_line(again, "requirements.lock", "failed")


def _cached_uv() -> str | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "circuitatlas"
    found = cache / f"uv-{UV_VERSION}" / "bin" / "uv"
    return str(found) if found.exists() else None


def test_a_deps_folder_that_is_not_a_venv_is_never_deleted(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    _one_error_line(_env_sh(tmp_path, CIRCUITATLAS_DEPS_VENV=str(precious)), "not a virtual environment")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_the_installed_dependencies_carry_their_bytecode():
    """An environment scripts/env.sh installed has every module compiled: where Python may not
    write .pyc itself (PYTHONDONTWRITEBYTECODE, a read-only install) each process would otherwise
    compile torch again. A module no test imports shows that the install compiled it, not an import."""
    import importlib.util

    import torch

    site = Path(torch.__file__).resolve().parents[1]
    venv = site.parents[2]  # <venv>/lib/pythonX.Y/site-packages
    if not (venv / ".complete").exists():
        pytest.skip(f"{venv} was not made by scripts/env.sh")
    assert (venv / ".bytecode").exists()
    for module in ("torch/__init__.py", "sympy/physics/mechanics/__init__.py"):
        source = site / module
        assert source.exists() and Path(importlib.util.cache_from_source(str(source))).exists(), module
