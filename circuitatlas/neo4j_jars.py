"""Java and the Neo4j jars for the local server: a Java 17+ found on JAVA_HOME or PATH, and the
Neo4j Community jars fetched once with Maven into the cache folder (under a file lock)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from circuitatlas import paths
from circuitatlas.errors import ConfigError, ServerError
from circuitatlas.paths import file_lock

__all__ = ["NEO4J_VERSION", "find_java", "JarCache", "dir_bytes"]

NEO4J_VERSION = "5.26.30"


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """Path of a Java 17+ ``java``, from JAVA_HOME or PATH, or a one-line ConfigError."""
    java_home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(java_home) / "bin" / "java")] if java_home else []
    candidates.append(shutil.which("java") or "")
    for java in candidates:
        if java and Path(java).exists() and _java_major(java) >= 17:
            return java
    raise ConfigError(
        "Java 17+ is needed to run the local Neo4j: install it (e.g. `apt-get install openjdk-17-jre-headless`), "
        "or use `docker compose up -d`, or point NEO4J_URI at a running Neo4j"
    )


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


class JarCache:
    """Neo4j's jars in ``<cache>/neo4j-<version>/lib``, fetched once with Maven."""

    def __init__(self, cache_dir: Path | None = None, version: str = NEO4J_VERSION) -> None:
        self.root = Path(cache_dir or paths.cache_dir()) / f"neo4j-{version}"
        self.version = version

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def ready(self) -> bool:
        return (self.root / ".complete").exists()

    def size_bytes(self) -> int:
        return dir_bytes(self.lib)

    def ensure(self) -> Path:
        """Download the jars unless they are cached; returns the lib folder."""
        if self.ready():
            return self.lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ConfigError(
                "Maven (`mvn`) is needed once to fetch the Neo4j jars: install it (e.g. `apt-get install maven`), "
                "or use `docker compose up -d`, or point NEO4J_URI at a running Neo4j"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / ".lock"):
            if self.ready():
                return self.lib
            staging = Path(tempfile.mkdtemp(prefix="lib-", dir=self.root))
            pom = staging / "pom.xml"
            template = resources.files("circuitatlas").joinpath("neo4j-pom.xml").read_text()
            pom.write_text(template.replace(f"<neo4j.version>{NEO4J_VERSION}<", f"<neo4j.version>{self.version}<"))
            cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
                   f"-DoutputDirectory={staging / 'lib'}", "-DincludeScope=runtime"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not any((staging / "lib").glob("neo4j-*.jar")):
                shutil.rmtree(staging, ignore_errors=True)
                detail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
                raise ServerError(f"Maven could not fetch Neo4j {self.version}: {detail}")
            shutil.rmtree(self.lib, ignore_errors=True)
            (staging / "lib").rename(self.lib)
            shutil.rmtree(staging, ignore_errors=True)
            (self.root / ".complete").write_text(self.version)
        return self.lib


