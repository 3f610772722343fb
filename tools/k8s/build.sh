#!/usr/bin/env bash
# Build the Kubernetes control plane used by the tests (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok) from the Go modules pinned in
# tools/k8s/go.mod and tools/k8s/kwok/go.mod, into a stable cache:
#   ${GANTRY_CACHE:-$HOME/.cache/gantry}/k8s-<kubernetes version>-<pin hash>/bin
# Prints that bin directory on stdout; build output goes to stderr. The directory also
# holds kwok-stages.yaml, kwok's default stages taken from the same kwok module.
# A no-op when already built. Needs only Go and the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$here/go.mod")"
# The hash keys the cache on every pin and on this script, so any change rebuilds.
pins="$(cat "$here/build.sh" "$here/go.mod" "$here/go.sum" "$here/cmd/etcd/main.go" \
  "$here/kwok/go.mod" "$here/kwok/go.sum" | sha256sum | cut -c1-10)"
cache="${GANTRY_CACHE:-$HOME/.cache/gantry}/k8s-$k8s_version-$pins"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

built() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$cache/bin/$b" ]] || return 1; done
  [[ -f "$cache/bin/kwok-stages.yaml" ]]
}

if ! built; then
  mkdir -p "$cache"
  # Two test runs starting together must not build twice or race on the rename.
  exec 9>"$cache/.lock"
  flock 9
  if ! built; then
    staging="$(mktemp -d "$cache/bin.XXXXXX")"
    start=$SECONDS
    # A first build takes about ten minutes: say so, and show it is still going.
    # Stopped, it takes its sleep with it, and it never holds the lock: a sleep outliving the ticker
    # would keep the caller's pipes open, and the next run waiting, for up to 30 s after the build.
    (
      trap 'kill "$nap" 2>/dev/null; exit 0' TERM
      while :; do
        sleep 30 & nap=$!
        wait "$nap"
        echo "  still building the control plane: $((SECONDS - start)) s"
      done
    ) >&2 9>&- </dev/null &
    ticker=$!
    # Under set -e a failing command in a trap becomes the script's status: the ticker is
    # usually gone by now (killed below and reaped), so its kill must not count.
    trap 'kill "$ticker" 2>/dev/null || true; rm -rf "$staging"' EXIT
    # Static, stripped, path-free binaries; the upstream release builds are also CGO-free.
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
    flags=(-trimpath)
    # Without these, the servers report v0.0.0-master and clients that parse the version complain.
    minor="$(cut -d. -f2 <<<"$k8s_version")"
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    echo "building the control plane ($k8s_version) into $cache/bin (about 10 minutes the first time) ..." >&2
    (cd "$here" && go build "${flags[@]}" -ldflags "$ld" -o "$staging/" ./cmd/etcd \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler) >&2
    (cd "$here/kwok" && go build "${flags[@]}" -ldflags "-s -w" -o "$staging/" sigs.k8s.io/kwok/cmd/kwok) >&2
    # kwok starts nothing without stages; these are the ones kwokctl applies by default:
    # nodes turn Ready and renew leases, pods go straight to Running, deletions finish at once.
    kwok_src="$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
    for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
      pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
      echo "---"
      cat "$kwok_src/kustomize/stage/$stage.yaml"
    done >"$staging/kwok-stages.yaml"
    kill "$ticker" 2>/dev/null || true
    echo "built in $((SECONDS - start)) s" >&2
    rm -rf "$cache/bin"
    mv "$staging" "$cache/bin"
    chmod 755 "$cache/bin"
  fi
fi

echo "$cache/bin"
