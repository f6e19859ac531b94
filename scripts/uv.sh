# Sourced by scripts/env.sh and scripts/lock.sh: checks the Python, then defines ensure_uv, which
# puts a pinned uv into the cache (one small venv per uv version) and sets $uv to its path.
# uv installs the lock and compiles it; pip only installs uv itself.
set -euo pipefail

UV_VERSION=0.13.9
python_bin=${PYTHON:-python3}
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/circuitatlas

die() { echo "error: $*" >&2; exit 1; }

command -v "$python_bin" >/dev/null 2>&1 || die "$python_bin not found; install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
"$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || die "Python 3.10 or newer is needed, $python_bin is $("$python_bin" --version 2>&1); install a newer one or set PYTHON=/path/to/python3"
"$python_bin" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$python_bin cannot make virtual environments; install its venv module (Debian: apt-get install python3-venv)"

ensure_uv() {
  local tool=$cache_root/uv-$UV_VERSION
  uv=$tool/bin/uv
  [ -f "$tool/.complete" ] && return 0
  echo "==> installing uv $UV_VERSION into $tool"
  rm -rf "$tool"
  mkdir -p "$cache_root"
  if ! { "$python_bin" -m venv "$tool" \
         && "$tool/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"; } >"$tool.log" 2>&1; then
    rm -rf "$tool"
    die "could not install uv $UV_VERSION from the package index into $tool (no network to PyPI? set PIP_INDEX_URL for a mirror; full log: $tool.log); nothing was kept"
  fi
  touch "$tool/.complete"
}
