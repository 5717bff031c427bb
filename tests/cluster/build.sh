#!/usr/bin/env bash
# Builds the local control plane from the official Go modules into a cache outside the repo.
# Idempotent: a binary already in the cache is not rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
bin_dir="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin"
work_dir="$cache_root/build"
mkdir -p "$bin_dir" "$work_dir"

export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[build] %s\n' "$*" >&2; }

build_kwok() {
  if [[ -x "$bin_dir/kwok" && -x "$bin_dir/kwokctl" ]]; then return; fi
  log "Building kwok and kwokctl $KWOK_VERSION"
  GOBIN="$bin_dir" go install -p 2 \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

build_etcd() {
  if [[ -x "$bin_dir/etcd" ]]; then return; fi
  log "Building etcd $ETCD_VERSION"
  local mod="$work_dir/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  # A module of its own, so etcd's dependency versions never mix with Kubernetes' ones.
  cat >"$mod/go.mod" <<GOMOD
module dagflow.dev/localcluster/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$mod" && go mod tidy && go build -p 2 -trimpath -o "$bin_dir/etcd" go.etcd.io/etcd/server/v3)
}

build_kubernetes() {
  if [[ -x "$bin_dir/kube-apiserver" && -x "$bin_dir/kube-controller-manager" && -x "$bin_dir/kube-scheduler" ]]; then
    return
  fi
  log "Building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION"
  local mod="$work_dir/kubernetes-$K8S_VERSION"
  local staging_version="v0.${K8S_VERSION#v1.}"
  mkdir -p "$mod"
  local upstream_gomod
  upstream_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # k8s.io/kubernetes points its staging modules at local folders; a dependent module must point
  # them at their published versions instead, or nothing resolves.
  {
    printf 'module dagflow.dev/localcluster/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$upstream_gomod" \
      | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$mod" && go mod tidy && go build -p 2 -trimpath -ldflags "$ldflags" -o "$bin_dir/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
}

build_helm() {
  if [[ -x "$bin_dir/helm" ]]; then return; fi
  log "Building helm $HELM_VERSION"
  local minor="${HELM_VERSION#v3.}"; minor="${minor%%.*}"
  GOBIN="$bin_dir" go install -p 2 -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

case "${1:-all}" in
  bin-dir) echo "$bin_dir"; exit 0 ;;
  all) build_kwok; build_etcd; build_kubernetes; build_helm ;;
  *) "build_$1" ;;
esac
log "Binaries ready in $bin_dir"
echo "$bin_dir"
