# Sourced by scripts/demo.sh and scripts/test.sh: makes ./.venv with circuitatlas installed and the
# exact versions of requirements.lock (the tested set) behind it.
#
# The heavy dependencies (torch is several GB on Linux) live in one cached virtual environment per
# lock content and Python version, under ${XDG_CACHE_HOME:-~/.cache}/circuitatlas/, shared by every
# checkout; ./.venv is a light venv that sees it through a .pth file and holds the editable install.
# A lock change therefore makes a new cache everywhere. A cache is marked complete only after its
# install succeeded; an interrupted or failed one is removed and made again on the next run.
# Installs compile every module's bytecode: where Python may not write .pyc files itself (a
# read-only install, PYTHONDONTWRITEBYTECODE=1) it would otherwise compile torch, torchvision and
# sympy again in every process, 12 to 15 s of each command and test worker.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
source scripts/uv.sh

if [ -z "${NEO4J_URI:-}" ]; then
  # The local Neo4j needs both; with NEO4J_URI the tests and the demo use that server instead.
  java_bin=${JAVA_HOME:+$JAVA_HOME/bin/}java
  java_major=$("$java_bin" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
  [ "${java_major:-0}" -ge 17 ] 2>/dev/null \
    || die "Java 17 or newer is needed for the local Neo4j (found: ${java_major:-none}; Debian: apt-get install openjdk-17-jre-headless), or set NEO4J_URI to a running server"
  command -v mvn >/dev/null 2>&1 \
    || die "Maven is needed to fetch the Neo4j jars once (Debian: apt-get install maven), or set NEO4J_URI to a running server"
fi

lock=$repo_root/requirements.lock
[ -f "$lock" ] || die "$lock is missing; restore it from git (git checkout -- requirements.lock)"
deps_key=$({ cat "$lock"; "$python_bin" -c 'import sys, platform; print(sys.version.split()[0], platform.machine())'; } \
  | "$python_bin" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
deps_venv=${CIRCUITATLAS_DEPS_VENV:-$cache_root/deps-$deps_key}

if [ ! -f "$deps_venv/.complete" ] || [ "$(cat "$deps_venv/.complete")" != "$deps_key" ]; then
  if [ -e "$deps_venv" ] && [ ! -f "$deps_venv/pyvenv.cfg" ] && [ -n "$(ls -A "$deps_venv")" ]; then
    die "$deps_venv exists and is not a virtual environment; refusing to replace it (point CIRCUITATLAS_DEPS_VENV elsewhere)"
  fi
  ensure_uv
  echo "==> installing the locked dependencies into $deps_venv (first time: a few minutes, torch is large)"
  rm -rf "$deps_venv"
  started=$SECONDS
  mkdir -p "$cache_root"
  log=$cache_root/install-$deps_key.log
  if ! { "$python_bin" -m venv --without-pip "$deps_venv" \
         && "$uv" pip sync --compile-bytecode --python "$deps_venv/bin/python" "$lock"; } >"$log" 2>&1; then
    rm -rf "$deps_venv"
    die "installing $lock into $deps_venv failed: $(grep -v '^ *$' "$log" | tail -1 | cut -c1-200) (no network to PyPI? set UV_INDEX_URL for a mirror; full log: $log); nothing was kept, the next run starts again"
  fi
  echo "$deps_key" > "$deps_venv/.complete"
  touch "$deps_venv/.bytecode"
  echo "==> dependencies installed in $((SECONDS - started)) s"
fi
if [ ! -f "$deps_venv/.bytecode" ]; then
  # a cache installed before installs compiled bytecode: compile it in place, once (nothing is
  # installed or removed); if that fails the cache still works, only each command starts slower
  ensure_uv
  echo "==> compiling the cached dependencies' bytecode (once)"
  log=$cache_root/bytecode-$deps_key.log
  if "$uv" pip sync --compile-bytecode --python "$deps_venv/bin/python" "$lock" >"$log" 2>&1; then
    touch "$deps_venv/.bytecode"
  else
    echo "note: compiling the bytecode of $deps_venv failed (log: $log); it works, each command just starts slower" >&2
  fi
fi

venv=$repo_root/.venv
if [ ! -f "$venv/.deps-$deps_key" ] || [ "$(cat "$venv/.deps-$deps_key")" != "$deps_venv" ]; then
  echo "==> preparing $venv"
  rm -rf "$venv"
  "$python_bin" -m venv --without-pip "$venv"
  deps_site=$("$deps_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  venv_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$deps_site" > "$venv_site/circuitatlas-deps.pth"
  ensure_uv
  "$uv" pip install --quiet --python "$venv/bin/python" --no-deps --no-build-isolation -e .
  echo "$deps_venv" > "$venv/.deps-$deps_key"
fi
export PATH="$venv/bin:$PATH"
