# Sourced by scripts/demo.sh and scripts/test.sh: makes ./.venv with circuitatlas installed.
#
# The heavy dependencies (torch is several GB on Linux) live in one cached virtual
# environment per dependency set, under ~/.cache/circuitatlas/, shared by every checkout;
# ./.venv is a light venv that sees it through a .pth file and holds the editable install.
# A fresh clone therefore costs seconds once the cache exists, and minutes the first time.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

python_bin=${PYTHON:-python3}
command -v "$python_bin" >/dev/null || { echo "error: $python_bin not found; install Python 3.10+" >&2; exit 1; }
"$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: Python 3.10+ is needed ($("$python_bin" --version))" >&2; exit 1; }

deps_key=$("$python_bin" - <<'PY'
import hashlib, json, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
spec = [project["dependencies"], project["optional-dependencies"]["dev"], sys.version.split()[0]]
print(hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16])
PY
)
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/circuitatlas
deps_venv=${CIRCUITATLAS_DEPS_VENV:-$cache_root/deps-$deps_key}

if [ ! -f "$deps_venv/.complete" ]; then
  echo "==> installing dependencies into $deps_venv (first time: several minutes, torch is large)"
  rm -rf "$deps_venv"
  "$python_bin" -m venv "$deps_venv"
  "$deps_venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
  deps=$("$python_bin" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
)
  # shellcheck disable=SC2086
  echo "$deps" | tr '\n' '\0' | xargs -0 "$deps_venv/bin/python" -m pip install -q
  touch "$deps_venv/.complete"
fi

venv=$repo_root/.venv
if [ ! -f "$venv/.deps-$deps_key" ]; then
  echo "==> preparing $venv"
  rm -rf "$venv"
  "$python_bin" -m venv "$venv"
  deps_site=$("$deps_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  venv_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$deps_site" > "$venv_site/circuitatlas-deps.pth"
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  touch "$venv/.deps-$deps_key"
fi
export PATH="$venv/bin:$PATH"
