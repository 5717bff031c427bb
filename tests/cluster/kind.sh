#!/usr/bin/env bash
# kind with real containers, without a registry: a Docker engine (Debian's docker.io where none answers),
# kind from its Go module, and kind's node image built here (images/kind/node) from the binaries this
# project builds. Usage: kind.sh COMMAND
#
#   can-run       exit 0 where a Docker engine answers or can be installed and started (root, apt-get)
#   engine        make a Docker engine answer: install docker.io if needed, start dockerd in the background
#   engine-down   stop the dockerd that `engine` started (by its pid file); any other engine is left alone
#   tools         build kind (KIND_VERSION) into the tools cache; prints its path
#   node-image    build the node image KIND_NODE_IMAGE unless Docker has it from the same recipe
#   up            engine, tools, node-image, then create the cluster (or reuse it) and start its storage
#                 provisioner (storage.sh); prints the KUBECONFIG export
#   load REF...   load images into the workers: from Docker, else from images/build-local.sh's archives
#   down          stop its storage provisioner and delete the cluster
#   kubeconfig    the kubeconfig file's path
#   exists        exit 0 where the cluster exists
#   shared-dir    the host folder every node mounts at /var/local/dagflow-shared
#
# Environment: KIND_CLUSTER (default dagflow), KIND_CONFIG (images/kind/kind-config.yaml), KIND_FAKE_GPUS
# (8), DAGFLOW_CACHE (~/.cache/dagflow). kind's version and the node image's name are in versions.env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
cluster="${KIND_CLUSTER:-dagflow}"
config="${KIND_CONFIG:-$repo/images/kind/kind-config.yaml}"
node_image="${KIND_NODE_IMAGE:-dagflow/kind-node:$K8S_VERSION}"
fake_gpus="${KIND_FAKE_GPUS:-8}"
kind_bin="$cache_root/kind-$KIND_VERSION/bin/kind"
# The cluster's own folder: its kubeconfig, and the folder every node mounts as shared storage.
state="$cache_root/kind-$cluster"
kubeconfig="$state/kubeconfig"
node_build="$cache_root/kind-node-$K8S_VERSION"
docker_state="$cache_root/docker"
dockerd_pid="$docker_state/dockerd.pid"

log() { printf '[kind] %s\n' "$*" >&2; }
# The kubectl built for the node image (the cluster's version).
kubectl() { "$("$here/build.sh" kind-node-bin-dir)/kubectl" "$@"; }
die() { printf '[kind] %s\n' "$*" >&2; exit 1; }

# The classic builder: it reads no `# syntax=` line (BuildKit would fetch that frontend from a registry).
export DOCKER_BUILDKIT=0

# docker build with the classic builder, without the client's notice that it is deprecated.
classic_build() {
  docker build "$@" 2> >(grep -vE 'legacy builder is deprecated|BuildKit is currently disabled|environment-variable\.$|buildx component|docs\.docker\.com/go/buildx|^\s*$' >&2)
}

engine_answers() { docker info >/dev/null 2>&1; }

can_run() {
  engine_answers && return 0
  [[ "$(uname -s)" == Linux && "$(id -u)" == 0 ]] || return 1
  command -v dockerd >/dev/null && return 0
  command -v apt-get >/dev/null && apt-cache show docker.io >/dev/null 2>&1
}

# dockerd sets the FORWARD chain's policy to DROP when it has to turn on IP forwarding itself. The real
# node of the local cluster (tests/cluster/real-node.sh) routes its pods through a bridge of the host,
# whose traffic passes that chain: turn forwarding on first, so dockerd leaves the policy as it is, and
# put the policy back should it have changed all the same.
engine() {
  if engine_answers; then return 0; fi
  [[ "$(id -u)" == 0 ]] || die "No Docker engine answers, and only root can install and start one."
  if ! command -v dockerd >/dev/null; then
    log "Installing Debian's Docker engine (docker.io)"
    local apt_options=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold -y -q --no-install-recommends)
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install docker.io >/dev/null 2>&1 \
      || { apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install docker.io >/dev/null; }
  fi
  mkdir -p "$docker_state"
  local policy
  policy="$(iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}')"
  sysctl -qw net.ipv4.ip_forward=1
  # Containers run through runc-bounded (a copy in the cache, so the engine outlives this checkout):
  # privileged ones (kind's nodes) get no capability the machine's bounding set lacks.
  install -m 0755 "$here/runc-bounded" "$docker_state/runc-bounded"
  log "Starting dockerd (log: $docker_state/dockerd.log)"
  setsid dockerd --pidfile "$dockerd_pid" \
    --add-runtime "runc-bounded=$docker_state/runc-bounded" --default-runtime runc-bounded \
    >"$docker_state/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 60); do
    if engine_answers; then break; fi
    if [[ "$i" == 60 ]]; then tail -20 "$docker_state/dockerd.log" >&2; die "dockerd did not answer within 60 s"; fi
    sleep 1
  done
  if [[ -n "$policy" && "$(iptables -S FORWARD | awk '$1 == "-P" {print $3}')" != "$policy" ]]; then
    iptables -P FORWARD "$policy"
  fi
  log "dockerd runs (pid $(cat "$dockerd_pid")); stop it with: make kind-engine-down"
}

engine_down() {
  [[ -f "$dockerd_pid" ]] || { log "No dockerd started by this script"; return 0; }
  local pid; pid="$(cat "$dockerd_pid")"
  if kill -0 "$pid" 2>/dev/null; then
    log "Stopping dockerd (pid $pid)"
    kill "$pid"
    local i
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$dockerd_pid"
}

tools() {
  if [[ ! -x "$kind_bin" ]]; then
    log "Building kind $KIND_VERSION"
    GOBIN="$(dirname "$kind_bin")" CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
      go install -p 2 -trimpath "sigs.k8s.io/kind@$KIND_VERSION"
  fi
  echo "$kind_bin"
}

# What the node image is made of: the recipe's files, this script's image steps and the versions. An
# image in Docker with the same label is reused; anything else is rebuilt.
recipe_key() {
  {
    (cd "$repo" && find images/kind/node -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    declare -f node_image component_images classic_build
    echo "$K8S_VERSION $ETCD_VERSION $CONTAINERD_VERSION $CRICTL_VERSION $COREDNS_VERSION $PAUSE_IMAGE"
  } | sha256sum | cut -c1-16
}

# Debian bookworm's minimal root filesystem, made once.
node_rootfs() {
  local out="$node_build/rootfs.tar"
  [[ -s "$out" ]] && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing (make host-packages installs it)"
  local tmp; tmp="$(mktemp -d "$cache_root/kind-debootstrap.XXXXXX")"
  log "debootstrap --variant=minbase bookworm (the node's root filesystem)"
  if ! debootstrap --variant=minbase bookworm "$tmp/rootfs" >"$tmp/debootstrap.log" 2>&1; then
    tail -20 "$tmp/debootstrap.log" >&2
    awk -v dir="$tmp/" 'index($2 "/", dir) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
    rm -rf "$tmp"; die "debootstrap failed"
  fi
  local mirror; mirror="$(awk '/^deb / {print $2; exit}' "$tmp/rootfs/etc/apt/sources.list")"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$tmp/rootfs/etc/apt/sources.list"
  rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*
  awk -v dir="$tmp/" 'index($2 "/", dir) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
  mkdir -p "$node_build"
  tar --numeric-owner -C "$tmp/rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$out.part" .
  mv "$out.part" "$out"
  rm -rf "$tmp"
}

# The images kubeadm runs, as archives: the control plane, etcd and CoreDNS each a static binary in an
# otherwise empty image; kube-proxy on Debian (it runs iptables); the pause image from build.sh.
# Their names are the ones kubeadm asks for (`kubeadm config images list`), but etcd's tag, which
# images/kind/kind-config.yaml sets to this project's etcd.
component_images() {
  local bin_dir kind_bin_dir images="$node_build/images" tmp
  bin_dir="$("$here/build.sh" bin-dir)"
  kind_bin_dir="$("$here/build.sh" kind-node-bin-dir)"
  rm -rf "$images"; mkdir -p "$images"
  tmp="$(mktemp -d)"
  local name binary
  for name in kube-apiserver kube-controller-manager kube-scheduler etcd coredns; do
    rm -rf "$tmp/rootfs"; mkdir -p "$tmp/rootfs/usr/local/bin" "$tmp/rootfs/tmp"
    chmod 1777 "$tmp/rootfs/tmp"
    binary="$bin_dir/$name"; [[ "$name" == coredns ]] && binary="$kind_bin_dir/coredns"
    cp "$binary" "$tmp/rootfs/usr/local/bin/$name"
    local tag="registry.k8s.io/$name:$K8S_VERSION"
    local run_config='{"Env":["PATH=/usr/local/bin"]}'
    case "$name" in
      etcd) tag="registry.k8s.io/etcd:${ETCD_VERSION#v}-0" ;;
      coredns)
        tag="registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
        ln -s usr/local/bin/coredns "$tmp/rootfs/coredns"
        run_config='{"Env":["PATH=/usr/local/bin"],"Entrypoint":["/coredns"],"ExposedPorts":{"53/tcp":{},"53/udp":{}}}' ;;
    esac
    "$here/build.sh" image-archive "$tmp/rootfs" "$tag" "$images/$name.tar" "$run_config"
  done
  rm -rf "$tmp"
  cp "$("$here/build.sh" images-dir)/pause.tar" "$images/pause.tar"
  # kube-proxy: Debian's iptables, nftables and conntrack, with the backend the node picks (nft unless
  # the node's rules are in the legacy tables), on the node's root filesystem.
  local context="$node_build/kube-proxy-context"
  rm -rf "$context"; mkdir -p "$context"
  ln "$node_build/rootfs.tar" "$context/rootfs.tar" 2>/dev/null || cp "$node_build/rootfs.tar" "$context/rootfs.tar"
  cp "$bin_dir/kube-proxy" "$context/kube-proxy"
  classic_build --network host -q -t "registry.k8s.io/kube-proxy:$K8S_VERSION" \
    -f "$repo/images/kind/node/kube-proxy.Dockerfile" "$context" >/dev/null
  docker save -o "$images/kube-proxy.tar" "registry.k8s.io/kube-proxy:$K8S_VERSION"
  docker rmi "registry.k8s.io/kube-proxy:$K8S_VERSION" >/dev/null
  rm -rf "$context"
}

node_image() {
  local key; key="$(recipe_key)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "dev.dagflow.kind-node.recipe"}}' "$node_image" 2>/dev/null)" == "$key" ]]; then
    log "$node_image is up to date"
    return 0
  fi
  local started=$SECONDS
  log "Building the node image $node_image"
  "$here/build.sh" all >/dev/null
  "$here/build.sh" kind_node >/dev/null
  node_rootfs
  local bin_dir containerd_dir kind_bin_dir context="$node_build/context"
  bin_dir="$("$here/build.sh" bin-dir)"
  containerd_dir="$("$here/build.sh" containerd-bin-dir)"
  kind_bin_dir="$("$here/build.sh" kind-node-bin-dir)"
  rm -rf "$context"; mkdir -p "$context/bin" "$context/kube"
  ln "$node_build/rootfs.tar" "$context/rootfs.tar" 2>/dev/null || cp "$node_build/rootfs.tar" "$context/rootfs.tar"
  cp "$containerd_dir/containerd" "$containerd_dir/containerd-shim-runc-v2" "$containerd_dir/ctr" "$bin_dir/crictl" "$context/bin/"
  cp "$kind_bin_dir/kubeadm" "$kind_bin_dir/kubectl" "$bin_dir/kubelet" "$context/kube/"
  cp -a "$repo/images/kind/node/files" "$context/files"
  log "docker build: the node's root filesystem, systemd, containerd, runc, CNI plugins, kubeadm, kubelet"
  classic_build --network host -q -t "$node_image-base" -f "$repo/images/kind/node/Dockerfile" "$context" >/dev/null
  rm -rf "$context"
  log "The images kubeadm runs"
  component_images
  # Into the node's containerd, as kind's own node image builder does: start containerd in a container
  # of the image, import every archive without unpacking (the CRI plugin unpacks when a pod needs one),
  # pinned so the kubelet's image garbage collection never removes them, then commit.
  local build="kind-node-build-$$"
  docker rm -f "$build" >/dev/null 2>&1 || true
  docker run -d --init --name "$build" --entrypoint sleep "$node_image-base" infinity >/dev/null
  docker exec "$build" bash -c 'nohup containerd >/var/log/containerd-build.log 2>&1 &'
  local i
  for i in $(seq 1 30); do
    docker exec "$build" ctr version >/dev/null 2>&1 && break
    [[ "$i" == 30 ]] && { docker exec "$build" tail -20 /var/log/containerd-build.log >&2; docker rm -f "$build" >/dev/null; die "containerd did not start in the build container"; }
    sleep 1
  done
  local archive
  for archive in "$node_build/images/"*.tar; do
    docker exec -i "$build" ctr -n k8s.io images import --no-unpack --digests \
      --label io.cri-containerd.pinned=pinned - <"$archive" >/dev/null 2> >(grep -v DEPRECATION >&2)
  done
  docker exec "$build" bash -c 'pkill containerd; while pgrep -x containerd >/dev/null; do sleep 0.2; done; rm -f /var/log/containerd-build.log'
  docker exec "$build" bash -c "printf '%s' '$K8S_VERSION' >/kind/version"
  docker commit \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' \
    --change "LABEL dev.dagflow.kind-node.recipe=$key" \
    "$build" "$node_image" >/dev/null
  docker rm -f "$build" >/dev/null
  docker rmi "$node_image-base" >/dev/null 2>&1 || true
  rm -rf "$node_build/images"
  log "$node_image built in $((SECONDS - started)) s"
}

exists() { [[ -x "$kind_bin" ]] && "$kind_bin" get clusters 2>/dev/null | grep -qx "$cluster"; }

# Dynamic storage, as on the local cluster (storage.sh): local-path-provisioner runs as a process on
# this machine with the cluster's kubeconfig, behind the default StorageClass dagflow-local, in its
# shared-filesystem mode over the folder $state/shared that every node mounts at
# /var/local/dagflow-shared (images/kind/kind-config.yaml): a claim's volume is a folder there, which
# the pods of every node mount (ReadWriteMany too). Its helper pods run the local busybox image
# (build.sh), loaded into every node: no registry to pull it from, and a teardown helper may land on
# any node, the control plane too (it tolerates every taint).
storage() {
  DAGFLOW_CLUSTER_NAME="$cluster" DAGFLOW_STORAGE_KUBECONFIG="$kubeconfig" DAGFLOW_STORAGE_DIR="$state/local-path" \
    DAGFLOW_STORAGE_VOLUMES=/var/local/dagflow-shared/volumes "$here/storage.sh" "$@"
}

start_storage() {
  local busybox; busybox="$("$here/build.sh" images-dir)/busybox.tar"
  [[ -s "$busybox" ]] || die "No busybox image for the storage provisioner's helper pods ($busybox): make tools"
  "$kind_bin" load image-archive "$busybox" --name "$cluster" >/dev/null
  storage up
}

# The pod network's route table (images/kind/node/files/kind/bin/pod-network.sh): every node's pod
# range and address, once the controller manager has given each node its range.
routes() {
  local table="" i
  for i in $(seq 1 60); do
    table="$(kubectl --kubeconfig "$kubeconfig" get nodes -o \
      jsonpath='{range .items[*]}{.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')"
    if ! grep -qvE '^[0-9a-f.:/]+ [0-9a-f.:]+$' <<<"$table"; then break; fi
    [[ "$i" == 60 ]] && die "Not every node has a pod range:"$'\n'"$table"
    sleep 1
  done
  local node
  for node in $("$kind_bin" get nodes --name "$cluster"); do
    docker exec -i "$node" sh -c 'mkdir -p /kind/pod-network && cat >/kind/pod-network/routes.new && mv /kind/pod-network/routes.new /kind/pod-network/routes' <<<"$table"
  done
}

up() {
  engine
  tools >/dev/null
  node_image
  "$here/build.sh" kind_node >/dev/null
  mkdir -p "$state/shared"
  # The example's images run as UID 10001: the shared folder is writable by every user, like /tmp.
  chmod 1777 "$state/shared"
  local started=$SECONDS
  # Nodes that stopped with their engine do not start again (kind's nodes restart only on failure, and
  # a node is not made to be restarted): such a cluster is made anew.
  if exists && [[ "$(docker inspect -f '{{.State.Running}}' "$cluster-control-plane" 2>/dev/null)" != true ]]; then
    log "The kind cluster $cluster is stopped: deleting it to create it anew"
    "$kind_bin" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  if exists; then
    "$kind_bin" export kubeconfig --name "$cluster" --kubeconfig "$kubeconfig" >/dev/null 2>&1
  else
    log "Creating the kind cluster $cluster from $node_image"
    # kind resolves the config's relative hostPath (shared) against its working folder.
    (cd "$state" && "$kind_bin" create cluster --name "$cluster" --config "$config" --image "$node_image" \
      --kubeconfig "$kubeconfig" --wait 5m)
  fi
  routes
  kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
  # What kind nodes lack: GPUs. The GPU worker advertises fake ones in its status, as a device plugin
  # would; GPU works are scheduled there and run on its CPU.
  local node
  for node in $(kubectl --kubeconfig "$kubeconfig" get nodes -l nvidia.com/gpu.present=true -o name); do
    kubectl --kubeconfig "$kubeconfig" patch "$node" --subresource=status --type=json \
      -p "[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$fake_gpus\"}]" >/dev/null
  done
  start_storage
  log "kind cluster $cluster ready in $((SECONDS - started)) s"
  echo "export KUBECONFIG=$kubeconfig"
}

down() {
  storage stop
  if exists; then "$kind_bin" delete cluster --name "$cluster" --kubeconfig "$kubeconfig"; fi
  # The shared folder's files (the volumes') belong to the pods' users; nothing of the cluster is left.
  rm -rf "$state"
}

# An image from Docker if it has it, else the archive images/build-local.sh made for it; onto the nodes
# that run pods (the control plane's taint keeps them off it).
load() {
  local ref archive nodes
  nodes="$("$kind_bin" get nodes --name "$cluster" | grep -v -- '-control-plane$' | paste -sd, -)"
  [[ -n "$nodes" ]] || die "The kind cluster $cluster has no worker"
  for ref in "$@"; do
    if docker image inspect "$ref" >/dev/null 2>&1; then
      "$kind_bin" load docker-image "$ref" --name "$cluster" --nodes "$nodes"
    else
      archive="$cache_root/images/$(basename "${ref%%:*}")-${ref##*:}.tar"
      [[ -s "$archive" ]] || die "$ref: neither in Docker nor built as $archive (make image launcher-image examples-image)"
      "$kind_bin" load image-archive "$archive" --name "$cluster" --nodes "$nodes"
    fi
  done
}

command="${1:-}"
shift || true
case "$command" in
  can-run) can_run ;;
  engine) engine ;;
  engine-down) engine_down ;;
  tools) tools ;;
  node-image) engine; node_image ;;
  up) up ;;
  down) down ;;
  load) load "$@" ;;
  kubeconfig) echo "$kubeconfig" ;;
  exists) exists ;;
  shared-dir) echo "$state/shared" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
