#!/usr/bin/env bash
# Builds the project's images from their own Dockerfiles without a Docker engine and without a registry,
# into image archives that containerd (or Docker, or kind) can import.
#
#   images/build-local.sh build [operator|examples|launcher]...   build (default: all); no-op if nothing changed
#   images/build-local.sh import [operator|examples|launcher]...  import the archives into containerd
#   images/build-local.sh id NAME                         the image ID (config digest) of NAME's archive
#   images/build-local.sh list                            the archives, and the images containerd holds
#   images/build-local.sh clean                           remove the archives and buildah's image store
#
# How: the Dockerfiles take their base image as a build argument (PYTHON_IMAGE). Where the official
# python:3.11-slim-bookworm cannot be pulled, images/base/Dockerfile makes a stand-in from Debian
# bookworm itself (debootstrap --variant=minbase + Debian's Python 3.11), and buildah builds each
# Dockerfile on top of it. Everything else a build needs (Debian packages, PyPI) is fetched as usual.
# The launcher's Dockerfile takes a Go image (GO_IMAGE): here the same base, with this machine's Go
# toolchain mounted at /usr/local/go for the build.
#
# Environment:
#   OPERATOR_IMAGE, EXAMPLES_IMAGE, LAUNCHER_IMAGE   references to build (default: the chart's
#                                    dagflow/operator:0.1.0 and dagflow/launcher:0.1.0, and
#                                    dagflow/examples:0.1.0); archives are <name>-<tag>.tar
#   DAGFLOW_CACHE                    cache root (default ~/.cache/dagflow); all of this lives in images/
#   DAGFLOW_CONTAINERD_ADDRESS       containerd's socket for `import` (default /run/dagflow/containerd/containerd.sock)
#   BUILDAH_ISOLATION                oci (default, where runc or crun is installed) or chroot
#   BUILDAH_STORAGE_DRIVER           overlay (default) or vfs
#   BUILD_CA_BUNDLE                  CA bundle RUN steps trust (default: this machine's)
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR   default: the ones this machine's apt uses
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}/images"
# buildah keeps its own image store in the cache, apart from any other buildah or podman on the machine.
storage="$cache/storage"
runroot="/run/dagflow-images"
address="${DAGFLOW_CONTAINERD_ADDRESS:-/run/dagflow/containerd/containerd.sock}"
# The ctr built beside the real node's containerd (tests/cluster/build.sh), else the machine's own.
ctr_bin="$("$repo/tests/cluster/build.sh" containerd-bin-dir 2>/dev/null)/ctr"
[[ -x "$ctr_bin" ]] || ctr_bin=ctr
suite=bookworm
operator_image="${OPERATOR_IMAGE:-dagflow/operator:0.1.0}"
examples_image="${EXAMPLES_IMAGE:-dagflow/examples:0.1.0}"
launcher_image="${LAUNCHER_IMAGE:-dagflow/launcher:0.1.0}"
# RUN steps run in containers of runc (or crun), as under Docker; without either, in a plain chroot,
# which needs no runtime and no cgroups and is enough for our own Dockerfiles. Either way they use the
# host's network: apt and pip fetch from where the host can.
if command -v runc >/dev/null || command -v crun >/dev/null; then isolation="${BUILDAH_ISOLATION:-oci}"
else isolation="${BUILDAH_ISOLATION:-chroot}"; fi
driver="${BUILDAH_STORAGE_DRIVER:-overlay}"
# RUN steps trust the certificate authorities this machine trusts (pip behind a proxy that signs with a
# CA of its own needs that): the host's bundle is mounted over the image's for the build only, it does
# not end up in the image. Debian's pip reads that bundle, in the base and in virtualenvs alike.
ca_bundle="${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-local.sh: %s\n' "$*" >&2; exit 1; }

bah() { buildah --root "$storage" --runroot "$runroot" --storage-driver "$driver" "$@"; }

# What each image is built from: its Dockerfile, its context and the files of the context that go into
# it (those decide whether it must be rebuilt).
image_ref() {
  case "$1" in
    operator) echo "$operator_image" ;; examples) echo "$examples_image" ;; launcher) echo "$launcher_image" ;;
    *) die "unknown image: $1" ;;
  esac
}
dockerfile() { echo "images/$1/Dockerfile"; }
context() { case "$1" in operator) echo . ;; examples) echo images/examples ;; launcher) echo images/launcher ;; esac; }
inputs() {
  case "$1" in
    operator) echo images/operator/Dockerfile images/operator/requirements.lock .dockerignore pyproject.toml README.md operator ;;
    examples) echo images/examples ;;
    launcher) echo images/launcher/Dockerfile images/launcher/go.mod $(ls images/launcher/*.go | grep -v _test.go) ;;
  esac
}

# containerd stores fully qualified references: dagflow/operator:0.1.0 is docker.io/dagflow/operator:0.1.0,
# which is also what the kubelet looks for when a pod names dagflow/operator:0.1.0.
qualified() {
  local ref="$1" first="${1%%/*}"
  if [[ "$ref" != */* ]]; then echo "docker.io/library/$ref"
  elif [[ "$first" == *.* || "$first" == *:* || "$first" == localhost ]]; then echo "$ref"
  else echo "docker.io/$ref"; fi
}
archive() { local ref="${1##*/}"; echo "$cache/${ref%%:*}-${ref##*:}.tar"; }

# A short digest of files (paths and contents), without Python's byte code and build leftovers.
digest_of() {
  (cd "$repo" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

need_tools() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing: ${missing[*]}"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
}

# The Debian mirrors this machine's apt uses, so the image fetches from where the host can.
host_mirror() {  # $1: the archive's last path part, debian or debian-security
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; break}}' \
    | grep -m1 -E "/$1/?\$" || true
}

# Unmounts whatever is still mounted below a folder (debootstrap mounts /proc and /sys in its target and
# leaves them behind when it fails), deepest first.
unmount_below() {
  awk -v dir="$1/" 'index($2 "/", dir) == 1 {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" || true
  done
}

# What Debian's own slim images leave out: documentation (but the copyright files), manual pages and
# translations; dpkg is told so too, for the packages installed later.
slim() {
  cat >"$1/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$1/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/groff" "$1/usr/share/lintian" -mindepth 1 -delete 2>/dev/null || true
  find "$1/usr/share/locale" -mindepth 1 ! -type d ! -name locale.alias -delete
  find "$1/usr/share/doc" "$1/usr/share/locale" -mindepth 1 -type d -empty -delete
}

# The base image: keyed by its Dockerfile and the way its rootfs is made, so it is made once and reused
# until one of them changes. Debian's updates published later are taken by `clean` then `build`.
base_ref() {
  echo "localhost/dagflow/python-base:$suite-$({ digest_of images/base/Dockerfile; declare -f slim; } | sha256sum | cut -c1-16)"
}

build_base() {
  local ref dir tmp mirror security
  ref="$(base_ref)"
  if bah inspect --type image "$ref" >/dev/null 2>&1; then return; fi
  dir="$cache/base-${ref##*:}"
  if [[ ! -s "$dir/rootfs.tar" ]]; then
    need_tools debootstrap
    mirror="${DEBIAN_MIRROR:-$(host_mirror debian)}"
    security="${DEBIAN_SECURITY_MIRROR:-$(host_mirror debian-security)}"
    tmp="$(mktemp -d "$cache/debootstrap.XXXXXX")"
    trap 'unmount_below "$tmp"; rm -rf "$tmp"' EXIT
    say "debootstrap --variant=minbase $suite (the base image's root filesystem)"
    debootstrap --variant=minbase "$suite" "$tmp/rootfs" ${mirror:+"$mirror"} >"$tmp/debootstrap.log" 2>&1 \
      || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    mirror="$(awk '/^deb / {print $2; exit}' "$tmp/rootfs/etc/apt/sources.list")"
    {
      echo "deb $mirror $suite main"
      echo "deb $mirror $suite-updates main"
      if [[ -n "$security" ]]; then echo "deb $security $suite-security main"; fi
    } >"$tmp/rootfs/etc/apt/sources.list"
    slim "$tmp/rootfs"
    # No downloaded packages, no package lists, no device nodes: the runtime provides /dev.
    rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*
    mkdir -p "$dir"
    tar --numeric-owner -C "$tmp/rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
      -cf "$dir/rootfs.tar.part" .
    mv "$dir/rootfs.tar.part" "$dir/rootfs.tar"
    unmount_below "$tmp"
    rm -rf "$tmp"
    trap - EXIT
  fi
  say "building the base image $ref"
  bah bud --quiet --isolation "$isolation" --network host --format docker \
    -f "$repo/images/base/Dockerfile" -t "$ref" "$dir" >/dev/null
  # Older bases (and their root filesystems) are no longer needed.
  for old in "$cache"/base-*; do [[ "$old" == "$dir" ]] || rm -rf "$old"; done
}

build_image() {
  local name="$1" ref tar key base mounts=()
  ref="$(image_ref "$name")"
  tar="$(archive "$ref")"
  base="$(base_ref)"
  # Rebuilt when the Dockerfile, the files it copies, the base image or the build's own steps changed.
  # shellcheck disable=SC2046
  key="$({ digest_of $(inputs "$name"); declare -f build_image; } | sha256sum | cut -c1-16)-$(bah inspect --type image --format '{{.FromImageID}}' "$base" | cut -c1-16)"
  if [[ -s "$tar" && "$(cat "$tar.key" 2>/dev/null)" == "$key" ]]; then
    say "$ref is up to date: $tar"
    return
  fi
  say "building $ref from $(dockerfile "$name") on $base"
  if [[ -s "$ca_bundle" ]]; then mounts+=(--volume "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro"); fi
  if [[ "$name" == launcher ]]; then
    command -v go >/dev/null || die "the launcher is built with Go, which is not installed"
    mounts+=(--volume "$(go env GOROOT):/usr/local/go:ro" --build-arg "GO_IMAGE=$base")
  fi
  # --pull=never: the base is the local one, and nothing else may be pulled.
  (cd "$repo" && bah bud --isolation "$isolation" --network host --format docker --pull=never "${mounts[@]}" \
    --build-arg "PYTHON_IMAGE=$base" -f "$(dockerfile "$name")" -t "$(qualified "$ref")" "$(context "$name")")
  rm -f "$tar" "$tar.key"
  bah push --quiet "$(qualified "$ref")" "docker-archive:$tar.part:$(qualified "$ref")"
  mv "$tar.part" "$tar"
  echo "$key" >"$tar.key"
  # The image this one replaced, now nameless, would only take room.
  bah rmi --prune >/dev/null
  say "$ref: $tar ($(du -h "$tar" | cut -f1))"
}

# The image ID (the config's digest) of an archive, and of an image containerd holds.
archive_id() {
  local config
  config="$(tar -xOf "$1" manifest.json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Config"])')"
  echo "sha256:$(tar -xOf "$1" "$config" | sha256sum | cut -d' ' -f1)"
}
containerd_id() {
  local manifest
  manifest="$("$ctr_bin" --address "$address" -n k8s.io images ls "name==$1" | awk 'NR == 2 {print $3}')"
  [[ -n "$manifest" ]] || return 0
  "$ctr_bin" --address "$address" -n k8s.io content get "$manifest" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])'
}

import_image() {
  local name="$1" ref tar
  ref="$(image_ref "$name")"
  tar="$(archive "$ref")"
  [[ -s "$tar" ]] || die "no archive $tar: run '$0 build $name' first"
  if [[ "$(containerd_id "$(qualified "$ref")")" == "$(archive_id "$tar")" ]]; then
    say "$(qualified "$ref") is already in containerd ($address)"
    return
  fi
  say "importing $tar into containerd ($address)"
  # The k8s.io namespace is the one the kubelet's images live in; import unpacks for its snapshotter.
  "$ctr_bin" --address "$address" -n k8s.io images import "$tar"
}

names() { if (($#)); then printf '%s\n' "$@"; else printf '%s\n' operator examples launcher; fi; }

command="${1:-}"
shift || true
case "$command" in
  build)
    [[ $EUID -eq 0 ]] || die "build runs buildah as root"
    need_tools buildah
    mkdir -p "$cache"
    # One build at a time (make -j image examples-image): both would make the same base.
    exec 9>"$cache/.lock"
    flock 9
    start=$SECONDS
    build_base
    for name in $(names "$@"); do build_image "$name"; done
    say "done in $((SECONDS - start)) s"
    ;;
  import)
    command -v "$ctr_bin" >/dev/null || die "ctr is missing (make tools builds it)"
    [[ -S "$address" ]] || die "no containerd socket at $address (DAGFLOW_CONTAINERD_ADDRESS)"
    for name in $(names "$@"); do import_image "$name"; done
    ;;
  id)
    (($# == 1)) || die "usage: $0 id operator|examples|launcher"
    tar="$(archive "$(image_ref "$1")")"
    [[ -s "$tar" ]] || die "no archive $tar: run '$0 build $1' first"
    archive_id "$tar"
    ;;
  list)
    ls -l "$cache"/*.tar 2>/dev/null || echo "no archives in $cache"
    if [[ -S "$address" ]]; then
      "$ctr_bin" --address "$address" -n k8s.io images ls | awk 'NR == 1 || /dagflow/'
    fi
    ;;
  clean)
    if [[ -d "$storage" ]]; then bah rmi --all --force >/dev/null 2>&1 || true; fi
    rm -rf "$cache" "$runroot"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
