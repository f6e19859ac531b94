#!/usr/bin/env bash
# Sets up (cached venv, editable install) and runs the main job end to end: starts the local
# Neo4j (unless NEO4J_URI is set), builds the demo model, ingests it, runs the analyses and
# prints where to look. Extra arguments go to `circuitatlas demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec circuitatlas demo "$@"
