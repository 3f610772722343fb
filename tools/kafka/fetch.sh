#!/usr/bin/env bash
# Copy the Apache Kafka broker jars named in tools/kafka/pom.xml into a stable cache:
#   ${GANTRY_CACHE:-$HOME/.cache/gantry}/kafka-<version>/libs
# Prints that cache directory (kafka-<version>) on stdout. A no-op when already fetched.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
cache="${GANTRY_CACHE:-$HOME/.cache/gantry}/kafka-$version"

if [[ ! -f "$cache/libs/.complete" ]]; then
  mkdir -p "$cache"
  # Two test runs starting together must not fetch twice, nor swap libs/ under a running broker.
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -f "$cache/libs/.complete" ]]; then
    staging="$(mktemp -d "$cache/libs.XXXXXX")"
    trap 'rm -rf "$staging"' EXIT
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$staging" >&2
    touch "$staging/.complete"
    rm -rf "$cache/libs"
    mv "$staging" "$cache/libs"
  fi
fi

echo "$cache"
