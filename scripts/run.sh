#!/usr/bin/env bash
# Sets up, builds and starts Sluice with the demo: SQLite in ./sluice-demo-data,
# an embedded Kafka cluster with traffic, and the console at the printed URL.
# Extra arguments go to `sluice demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build.sh | tail -n 1)
exec "$bin" demo "$@"
