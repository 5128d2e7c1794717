#!/usr/bin/env bash
# Fuzzes with cargo-fuzz (libFuzzer) for a while per target, and reports the runs.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]   (default 600 seconds each; all targets)
# Targets: parse (the HL7 v2 parser, crates/hl7/fuzz), and in fuzz/: mllp (the framer), fhir
# (the FHIR JSON/XML reader, then FHIR in and out), normalise (HL7 v2 through the mappers and
# FHIR out), ack (the ACK of any input is one well-formed frame).
# Installs cargo-fuzz into .tools/bin if missing. Works on the stable toolchain: it builds without
# a sanitizer (-s none), so it finds panics, overflows caught by debug assertions, stack
# overflows and infinite loops (timeouts), not memory errors (the code has no unsafe).
# Seeds: the parser's from the shared corpus (copied under .tools, never into the repository:
# corpus licences vary); the others from the project's own golden files, and what they find is
# kept in fuzz/corpus/<target> (ours to commit).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse mllp fhir normalise ack)
export PATH="$root/.tools/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --root "$root/.tools"
corpus_src="${SLUICE_CORPUS:-$root/../shared/corpus}"
for target in "${targets[@]}"; do
  if [ "$target" = parse ]; then
    seeds="$root/.tools/fuzz-corpus/parse"
    mkdir -p "$seeds"
    if [ -f "$corpus_src/manifest.tsv" ] && [ -z "$(ls -A "$seeds")" ]; then
      awk -F'\t' 'NR > 1 && ($3 == "hl7v2" || $3 == "hl7v2-literal") { print $1 }' "$corpus_src/manifest.tsv" |
        while read -r f; do cp "$corpus_src/$f" "$seeds/$(echo "$f" | tr '/' '_')"; done
    fi
    dir="$root/crates/hl7"
  else
    seeds="$root/fuzz/corpus/$target"
    mkdir -p "$seeds"
    if [ -z "$(ls -A "$seeds")" ]; then
      case "$target" in
        fhir) cp "$root"/crates/mapping/tests/golden-fhir/*.{json,xml} "$seeds/" 2>/dev/null || true
              rm -f "$seeds"/*.events.json "$seeds"/*.bundles.json ;;
        *) for f in "$root"/crates/mapping/tests/golden/*.hl7; do cp "$f" "$seeds/"; done ;;
      esac
    fi
    dir="$root/fuzz"
  fi
  echo "fuzzing $target for $secs s"
  log="$root/.tools/fuzz-logs/$target.log"
  mkdir -p "$(dirname "$log")"
  status=0
  (cd "$dir" && cargo fuzz run -s none --debug-assertions "$target" "$seeds" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1) >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|panicked|ERROR|SUMMARY|artifact' "$log" || true
  if [ "$status" != 0 ]; then echo "$target: the fuzzer found a failure (exit $status): see $log" >&2; exit "$status"; fi
done
