#!/usr/bin/env bash
# Instructions per input of each stage's processing (normalise, identifier-match, route), counted
# by callgrind around that stage alone (`sluice bench stages`, no Kafka), so the figure does not
# move with the machine's load. Usage: scripts/bench-cpu.sh [MESSAGES] [KNOWN_PATIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-500}"
known="${2:-1000}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin sluice >&2
bin="$target/release/sluice"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "instructions per input, $n messages, $known known patients (callgrind, release build)"
for stage in normalise identifier-match route; do
  fn="stage_${stage//-/_}"
  valgrind --tool=callgrind --callgrind-out-file="$out/$stage.out" --collect-atstart=no \
    --toggle-collect="sluice::bench::$fn" "$bin" bench stages --messages "$n" --known-patients "$known" \
    --only "$stage" >"$out/$stage.txt" 2>"$out/$stage.err"
  inputs="$(awk -v s="$stage" '$1 == s { print $2 }' "$out/$stage.txt")"
  total="$(awk '/^summary:/ { print $2 }' "$out/$stage.out")"
  if [ -z "$inputs" ] || [ -z "$total" ]; then
    echo "$stage: no figures" >&2
    cat "$out/$stage.err" >&2
    exit 1
  fi
  printf '%-18s %8d inputs  %12d instructions per input\n' "$stage" "$inputs" "$((total / inputs))"
done
