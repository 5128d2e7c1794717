#!/usr/bin/env bash
# The test command: installs the project-local tools (broker, Python peers) if needed, then runs
# every test tier: unit, golden and schema tests, runtime tests, and the end-to-end tests that
# start a real broker process and the services and push real HL7 over MLLP.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tools.sh
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace
fi
# the corpus tests again on subsets of the corpus: they judge behaviour, not its size
./scripts/corpus-subset.sh
