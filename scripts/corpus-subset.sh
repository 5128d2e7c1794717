#!/usr/bin/env bash
# Runs the corpus tests on a subset of the shared corpus (whole source folders, with the
# documented layout: the folders plus a manifest.tsv of their rows), the way a corpus other than
# the recorded one would be read. Corpus tests must judge behaviour, never the corpus's size, so
# they pass here too and still fail on a real regression.
#   scripts/corpus-subset.sh [SOURCE ...]     (default: hapi-hl7v2, then microsoft-fhir-converter)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus="${SLUICE_CORPUS:-$root/../shared/corpus}"
if [ ! -f "$corpus/manifest.tsv" ]; then
  if [ "${CI:-}" = "true" ]; then echo "corpus not found at $corpus" >&2; exit 1; fi
  echo "skipping the corpus subset run: corpus not found at $corpus"; exit 0
fi
corpus="$(cd "$corpus" && pwd)"
subsets=("$@")
[ ${#subsets[@]} -gt 0 ] || subsets=(hapi-hl7v2 microsoft-fhir-converter)
for source in "${subsets[@]}"; do
  dir="$(mktemp -d)"
  head -1 "$corpus/manifest.tsv" > "$dir/manifest.tsv"
  awk -F'\t' -v s="$source" 'NR > 1 && $2 == s' "$corpus/manifest.tsv" >> "$dir/manifest.tsv"
  ln -s "$corpus/$source" "$dir/$source"
  echo "corpus subset: $source ($(($(wc -l < "$dir/manifest.tsv") - 1)) files)"
  SLUICE_CORPUS="$dir" cargo test --quiet -p sluice-hl7 -p sluice-mapping
  rm -rf "$dir"
done
