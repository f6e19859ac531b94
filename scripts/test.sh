#!/usr/bin/env bash
# Sets up (cached venv, editable install) and runs the test suite against a real Neo4j that the
# tests start themselves (or the one NEO4J_URI names). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "$@"
