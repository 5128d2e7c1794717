#!/usr/bin/env bash
# Installs a real Apache Kafka 4.x broker (KRaft) for Sluice's tests as plain jars, idempotently:
#   ${SLUICE_TOOLS_DIR:-<repo>/.tools}/kafka/lib/*.jar
# from Maven Central through scripts/kafka/pom.xml (mvn dependency:copy-dependencies), every jar
# checked against the sha256 list committed in scripts/kafka/jars.sha256 (exactly those files, no
# more, no fewer). Installs Java 17+, Maven and openssl from Debian first when they are missing.
# Then: python3 scripts/kafka/cluster.py prepare|up --dir DIR ... (see scripts/kafka/README.md).
#
#   SLUICE_M2_REPO=DIR       Maven's local repository (default: Maven's own, ~/.m2/repository)
#   SLUICE_KAFKA_REPIN=1     download again and rewrite jars.sha256 from what came (after a bump)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/scripts/kafka"
tools="${SLUICE_TOOLS_DIR:-$root/.tools}"
dest="$tools/kafka/lib"
sums="$here/jars.sha256"
mkdir -p "$tools/kafka"

# Exactly the pinned jars, each with its pinned sha256.
verify_dir() {
  local d="$1"
  [ -d "$d" ] && [ -s "$sums" ] || return 1
  [ "$(cd "$d" && ls -1 | LC_ALL=C sort)" = "$(awk '{print $2}' "$sums" | LC_ALL=C sort)" ] || return 1
  (cd "$d" && sha256sum --check --quiet --strict "$sums" >/dev/null 2>&1)
}

if [ "${SLUICE_KAFKA_REPIN:-}" != 1 ] && verify_dir "$dest"; then
  exit 0
fi

exec 9>"$tools/kafka/.lock"
flock 9
if [ "${SLUICE_KAFKA_REPIN:-}" != 1 ] && verify_dir "$dest"; then
  exit 0 # another run installed it while this one waited
fi

apt_updated=
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup-kafka: $* missing and not root: install it (Debian: apt-get install $*)" >&2
    exit 1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    [ -n "$apt_updated" ] || { apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  fi
}
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  apt_install openjdk-17-jre-headless
fi
command -v mvn >/dev/null 2>&1 || apt_install maven
command -v openssl >/dev/null 2>&1 || apt_install openssl

tmp="$(mktemp -d "$tools/kafka/lib.new.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mvn_args=(-B -q -Dstyle.color=never -f "$here/pom.xml")
[ -z "${SLUICE_M2_REPO:-}" ] || mvn_args+=("-Dmaven.repo.local=$SLUICE_M2_REPO")
mvn_log="$tools/kafka/mvn.log"
if ! mvn "${mvn_args[@]}" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
  >"$mvn_log" 2>&1; then
  sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" >&2
  echo "setup-kafka: mvn dependency:copy-dependencies failed (its output is above, and in $mvn_log)" >&2
  exit 1
fi

if [ "${SLUICE_KAFKA_REPIN:-}" = 1 ]; then
  (cd "$tmp" && sha256sum -- *.jar | LC_ALL=C sort -k2) >"$sums"
  echo "setup-kafka: wrote $(wc -l <"$sums") pins to $sums"
elif ! verify_dir "$tmp"; then
  echo "setup-kafka: the downloaded jars do not match $sums:" >&2
  diff <(awk '{print $2}' "$sums" | LC_ALL=C sort) <(cd "$tmp" && ls -1 | LC_ALL=C sort) >&2 || true
  (cd "$tmp" && sha256sum --check --quiet "$sums" 2>&1 | grep -v 'No such file' >&2) || true
  exit 1
fi

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
version="$(cd "$dest" && ls kafka_2.13-*.jar | sed 's/kafka_2.13-\(.*\)\.jar/\1/')"
echo "setup-kafka: Apache Kafka $version installed in $dest ($(ls "$dest" | wc -l) jars, sha256-verified)"
