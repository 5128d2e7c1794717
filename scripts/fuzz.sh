#!/usr/bin/env bash
# Fuzzes the HL7 v2 parser with cargo-fuzz (libFuzzer) for a while, seeded from the shared corpus.
#   scripts/fuzz.sh [SECONDS]     (default 600)
# Installs cargo-fuzz into .tools/bin if missing. Works on the stable toolchain: it builds without
# a sanitizer (-s none), so it finds panics, overflows caught by debug assertions, and infinite
# loops (timeouts), not memory errors (the parser has no unsafe code).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-600}"
export PATH="$root/.tools/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --root "$root/.tools"
corpus_src="${SLUICE_CORPUS:-$root/../shared/corpus}"
seeds="$root/.tools/fuzz-corpus/parse"
mkdir -p "$seeds"
if [ -f "$corpus_src/manifest.tsv" ] && [ -z "$(ls -A "$seeds")" ]; then
  # seeds are copied to the tools folder, never into the repository (corpus licences vary)
  awk -F'\t' 'NR > 1 && ($3 == "hl7v2" || $3 == "hl7v2-literal") { print $1 }' "$corpus_src/manifest.tsv" |
    while read -r f; do cp "$corpus_src/$f" "$seeds/$(echo "$f" | tr '/' '_')"; done
fi
cd "$root/crates/hl7"
cargo fuzz run -s none --debug-assertions parse "$seeds" -- -max_total_time="$secs" -max_len=65536 -timeout=10
