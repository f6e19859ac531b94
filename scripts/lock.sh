#!/usr/bin/env bash
# Re-resolves requirements.lock from pyproject.toml (runtime + dev, every platform and Python the
# project supports). Without arguments it keeps every pinned version that still satisfies
# pyproject.toml; `--upgrade` moves everything to the newest versions. Maintainers upgrade with
#   bash scripts/lock.sh --upgrade && bash scripts/test.sh
# and commit the lock only when the tests pass (the next run of env.sh installs it into a new cache).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/uv.sh
ensure_uv
"$uv" pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
  --quiet --no-header --annotation-style line -o requirements.lock "$@"
echo "==> requirements.lock: $(grep -c '==' requirements.lock) pins; $(git diff --stat -- requirements.lock | tail -1)"
