#!/usr/bin/env bash
# Sets up (cached venv, editable install, Debian's chromium for the browser tests) and runs the test
# suite against a real Neo4j that the tests start themselves (or the one NEO4J_URI names). Extra
# arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# The viewer's browser tests drive Debian's chromium through its chromedriver (Playwright's and
# Selenium's own browser downloads cannot be relied on). Installed once when apt-get can run;
# otherwise the browser tests say what is missing (and fail under CI=true).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && "${as_root[@]}" true 2>/dev/null; then
    echo "==> installing chromium and chromium-driver for the browser tests (apt-get, once)"
    apt_log=$cache_root/apt-chromium.log
    { "${as_root[@]}" apt-get update -qq \
      && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      >"$apt_log" 2>&1 || echo "warning: apt-get could not install chromium (log: $apt_log); the browser tests will say so" >&2
  else
    echo "note: /usr/bin/chromium and /usr/bin/chromedriver are missing and apt-get cannot run here;" \
         "the browser tests will say so (Debian: apt-get install chromium chromium-driver)" >&2
  fi
fi
# Two workers (pytest-xdist), each with its own Neo4j and one torch thread, a test file at a time:
# while one waits on a server restart the other computes. Three workers on the two cores took 19.0
# minutes. xdist hands out the files with the most tests first (its default); keeping
# tests/conftest.py's longest-first order instead (--no-loadscope-reorder) made no difference
# beyond the machine's noise: fresh clones on 2026-12-07 took 741.0, 907.2 and 953.7 s of pytest
# with the default, 936.8 and 940.6 s with the kept order.
# CIRCUITATLAS_TEST_WORKERS=0 runs them in one process; a server named by NEO4J_URI is shared, and
# the test files wipe it, so then one only.
workers=(-n "${CIRCUITATLAS_TEST_WORKERS:-2}" --dist loadfile)
[ -z "${NEO4J_URI:-}" ] || workers=()
exec python -m pytest "${workers[@]}" "$@"
