#!/usr/bin/env bash
# Builds the local control plane from the official Go modules into a cache outside the repo, with the
# real node's kubelet, kube-proxy, containerd (with its runc shim and ctr), crictl and its two images
# (pause, busybox) beside it.
# Idempotent: a binary or image already in the cache is not rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
bin_dir="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin"
images_dir="$(dirname "$bin_dir")/images"
# The real node's containerd in a folder of its own version: a checkout that pins another containerd
# (or none, using the machine's) never picks it up from the control plane's folder.
containerd_bin_dir="$cache_root/containerd-$CONTAINERD_VERSION/bin"
# kubeadm, kubectl and CoreDNS for the kind node image (tests/cluster/kind.sh).
kind_node_bin_dir="$cache_root/kind-node-$K8S_VERSION-coredns-$COREDNS_VERSION/bin"
work_dir="$cache_root/build"
mkdir -p "$bin_dir" "$images_dir" "$work_dir" "$kind_node_bin_dir"

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

# A wrapper module (folder $1, module name $2) that requires k8s.io/kubernetes: that module points its
# staging modules at local folders; a dependent module must point them at their published versions
# instead, or nothing resolves.
kubernetes_module() {
  local mod="$1" name="$2" staging_version="v0.${K8S_VERSION#v1.}" upstream_gomod
  mkdir -p "$mod"
  upstream_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    printf 'module %s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\n' "$name" "$K8S_VERSION"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$upstream_gomod" \
      | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >"$mod/go.mod"
}

# -ldflags of a Kubernetes binary: its version, as `--version` and the API server report it.
kubernetes_ldflags() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}

build_kubernetes() {
  local binary missing=0
  for binary in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [[ -x "$bin_dir/$binary" ]] || missing=1
  done
  if [[ "$missing" == 0 ]]; then return; fi
  log "Building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy $K8S_VERSION"
  local mod="$work_dir/kubernetes-$K8S_VERSION"
  kubernetes_module "$mod" dagflow.dev/localcluster/kubernetes
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  local ldflags; ldflags="$(kubernetes_ldflags)"
  # One build for all five, so they share the compile cache.
  (cd "$mod" && go mod tidy && go build -p 2 -trimpath -ldflags "$ldflags" -o "$bin_dir/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy)
}

build_crictl() {
  # Not part of the folder's name: rebuilt in place when versions.env names another version.
  if [[ -x "$bin_dir/crictl" && "$("$bin_dir/crictl" --version 2>/dev/null)" == *" $CRICTL_VERSION" ]]; then return; fi
  log "Building crictl $CRICTL_VERSION"
  GOBIN="$bin_dir" go install -p 2 -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

# The real node's container runtime: containerd 2.x, its runc shim and ctr, from containerd's own Go
# module (Debian's containerd 1.6 is end of life and cannot mount image volumes). runc itself is
# Debian's. A wrapper module of its own, like etcd's, so its dependencies never mix with Kubernetes'.
build_containerd() {
  if [[ -x "$containerd_bin_dir/containerd" && -x "$containerd_bin_dir/containerd-shim-runc-v2" \
    && -x "$containerd_bin_dir/ctr" ]]; then return; fi
  log "Building containerd, containerd-shim-runc-v2 and ctr $CONTAINERD_VERSION"
  local mod="$work_dir/containerd-$CONTAINERD_VERSION"
  mkdir -p "$mod"
  cat >"$mod/go.mod" <<GOMOD
module dagflow.dev/localcluster/containerd

go 1.26.0

require github.com/containerd/containerd/v2 $CONTAINERD_VERSION
GOMOD
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
GO
  local pkg=github.com/containerd/containerd/v2
  local ldflags="-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Revision=module"
  # no_btrfs: no btrfs headers are needed (CGO is off anyway); no_grpc keeps the shim as small as
  # containerd's own release build makes it. Moved into the cache only once all three are built.
  (cd "$mod" && go mod tidy \
    && go build -p 2 -trimpath -tags "no_btrfs urfave_cli_no_docs osusergo netgo" -ldflags "$ldflags" -o "$mod/out/" \
      $pkg/cmd/containerd $pkg/cmd/ctr \
    && go build -p 2 -trimpath -tags "no_btrfs urfave_cli_no_docs osusergo netgo no_grpc" -ldflags "$ldflags" \
      -o "$mod/out/" $pkg/cmd/containerd-shim-runc-v2)
  mkdir -p "$containerd_bin_dir"
  mv "$mod/out/containerd" "$mod/out/containerd-shim-runc-v2" "$mod/out/ctr" "$containerd_bin_dir/"
}

# Writes a one-layer image in the docker-archive format (what `ctr images import` reads) from a root
# file system folder. $4 is the JSON of the image's run config (Entrypoint, Cmd, User, Env).
image_archive() {
  local rootfs="$1" tag="$2" out="$3" run_config="$4"
  local tmp; tmp="$(mktemp -d)"
  # Fixed owners and times: the same input gives the same image id.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$tmp/layer.tar" .
  local diff_id; diff_id="$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
  mkdir "$tmp/$diff_id"; mv "$tmp/layer.tar" "$tmp/$diff_id/layer.tar"
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(go env GOARCH)" "$run_config" "$diff_id" >"$tmp/config.json"
  local config_id; config_id="$(sha256sum "$tmp/config.json" | cut -d' ' -f1)"
  mv "$tmp/config.json" "$tmp/$config_id.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
    "$config_id" "$tag" "$diff_id" >"$tmp/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp" -cf "$out.tmp" \
    manifest.json "$config_id.json" "$diff_id"
  mv "$out.tmp" "$out"
  rm -rf "$tmp"
}

# containerd's sandbox image, compiled from the Kubernetes module's own source as no registry is
# reachable. Its tag (PAUSE_IMAGE) is containerd's sandbox_image.
build_pause_image() {
  local out="$images_dir/pause.tar"
  if [[ -f "$out" ]]; then return; fi
  if ! command -v gcc >/dev/null; then log "No gcc: skipping the pause image"; return; fi
  log "Building the pause image $PAUSE_IMAGE"
  local source_dir rootfs
  source_dir="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rootfs="$(mktemp -d)"
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_IMAGE##*:}-$K8S_VERSION" \
    -o "$rootfs/pause" "$source_dir/build/pause/linux/pause.c"
  strip "$rootfs/pause"
  image_archive "$rootfs" "$PAUSE_IMAGE" "$out" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
  rm -rf "$rootfs"
}

# A tiny image for smoke tests on the real node: Debian's static busybox with its applets as links.
build_busybox_image() {
  local out="$images_dir/busybox.tar"
  if [[ -f "$out" ]]; then return; fi
  if [[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" != "install ok installed" ]]; then
    log "No busybox-static package (tests/cluster/host-packages.sh installs it): skipping the busybox image"
    return
  fi
  log "Building the busybox image $BUSYBOX_IMAGE"
  local rootfs applet; rootfs="$(mktemp -d)"
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/www"
  chmod 1777 "$rootfs/tmp"
  cp "$(dpkg -L busybox-static | grep -m1 '/bin/busybox$')" "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [[ -e "$rootfs/bin/$applet" ]] || ln -s busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  image_archive "$rootfs" "$BUSYBOX_IMAGE" "$out" '{"Cmd":["sh"],"Env":["PATH=/bin"]}'
  rm -rf "$rootfs"
}

build_images() { build_pause_image; build_busybox_image; }

# What a kind node needs beside the binaries above (tests/cluster/kind.sh): kubeadm and kubectl of the
# same version (their own wrapper module; the compile cache is shared with the control plane's build)
# and CoreDNS, the cluster DNS kubeadm installs, from its Go module. In a folder of their own, so that
# this kubectl never shadows the one the local cluster uses.
build_kind_node() {
  if [[ ! -x "$kind_node_bin_dir/kubeadm" || ! -x "$kind_node_bin_dir/kubectl" ]]; then
    log "Building kubeadm and kubectl $K8S_VERSION"
    local mod="$work_dir/kubernetes-kind-$K8S_VERSION"
    kubernetes_module "$mod" dagflow.dev/localcluster/kubernetes-kind
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$mod" && go mod tidy && go build -p 2 -trimpath -ldflags "$(kubernetes_ldflags)" -o "$kind_node_bin_dir/" \
      k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubectl)
  fi
  if [[ ! -x "$kind_node_bin_dir/coredns" ]]; then
    log "Building CoreDNS $COREDNS_VERSION"
    # No replace directives in CoreDNS' module: go install builds it as published.
    GOBIN="$kind_node_bin_dir" go install -p 2 -trimpath -ldflags "-s -w" \
      "github.com/coredns/coredns@$COREDNS_VERSION"
  fi
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
  images-dir) echo "$images_dir"; exit 0 ;;
  containerd-bin-dir) echo "$containerd_bin_dir"; exit 0 ;;
  kind-node-bin-dir) echo "$kind_node_bin_dir"; exit 0 ;;
  # image-archive ROOTFS TAG OUT RUN_CONFIG_JSON: a one-layer image archive of a folder.
  image-archive) shift; image_archive "$@"; exit 0 ;;
  all) build_kwok; build_etcd; build_kubernetes; build_helm; build_crictl; build_containerd; build_images ;;
  *) "build_$1" ;;
esac
log "Binaries ready in $bin_dir"
echo "$bin_dir"
