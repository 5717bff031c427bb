#!/usr/bin/env bash
# The local cluster's real node `real-0`: containerd 2.x (with runc), kubelet and kube-proxy on this
# machine, beside kwok's simulated nodes. A machine has one (one kubelet port, one containerd, one bridge), serving
# one cluster at a time: the one named by DAGFLOW_CLUSTER_NAME (default dagflow).
#
#   real-node.sh up       start it for this cluster; if it serves another one, move it here and
#                         remember that one, which gets it back when this one releases it
#   real-node.sh release  stop it if it serves this cluster, and hand it back to the cluster it was
#                         moved from if that one still runs (cluster.sh down and stop call this)
#   real-node.sh down     stop it, whatever cluster it serves, and remove the volumes that the storage
#                         provisioner (storage.sh) made on it for any cluster
#   real-node.sh purge    down, and remove containerd's image store too (down keeps the images)
#   real-node.sh status   whether it runs, for which cluster; exit 0 only if it runs for this one
#
# Exit code 3 from up: this machine cannot run a real node; the reason is on stderr.
# Images: ctr --address /run/dagflow/containerd/containerd.sock -n k8s.io images import FILE, with the
# ctr that build.sh built beside containerd (in `build.sh containerd-bin-dir`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=host.sh
source "$here/host.sh"
cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
clusters_dir="$cache_root/kwok/clusters"
bin_dir="$("$here/build.sh" bin-dir)"
images_dir="$("$here/build.sh" images-dir)"
# containerd 2.x, its runc shim (which containerd finds in PATH) and ctr, built by build.sh.
containerd_bin_dir="$("$here/build.sh" containerd-bin-dir)"
export PATH="$containerd_bin_dir:$bin_dir:$repo/.venv/bin:$PATH:/usr/sbin:/sbin"

node_name=real-0
gpus="${DAGFLOW_REAL_NODE_GPUS:-4}"
# Pods' addresses: apart from the Service range (10.0.0.0/24), kwok's pod addresses (10.0.0.0/24)
# and podman's default network (10.88.0.0/16).
pod_cidr=10.244.0.0/16
bridge=dagflow0
cni_bin_dir=/usr/lib/cni
# Pids, logs and generated configs. Logs stay after down, for a look at what went wrong.
state="$cache_root/real-node"
# The machine's side: everything here but containerd's root (images) goes away on down.
# containerd 2.x keeps a store apart from the one containerd 1.6 of older checkouts used
# (/var/lib/dagflow/containerd), whose metadata it would migrate under them.
containerd_root=/var/lib/dagflow/containerd2
legacy_containerd_root=/var/lib/dagflow/containerd
containerd_state=/run/dagflow/containerd
socket="$containerd_state/containerd.sock"
kubelet_root=/var/lib/dagflow/kubelet
pod_logs_dir=/var/lib/dagflow/pod-logs
cni_data_dir=/var/lib/dagflow/cni
# The folders of the volumes of StorageClass dagflow-local (storage.sh), one folder per cluster.
local_path_root=/var/lib/dagflow/local-path
hosts_marker="# dagflow real node"
# What the kubelet, kube-proxy and the bridge plugin change; put back on down.
sysctls=(
  net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
)

log() { printf '[real-node] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
cannot() { log "No real node $node_name: $*"; exit 3; }

kubeconfig_of() { echo "$clusters_dir/$1/kubeconfig.yaml"; }
kube() { kubectl --kubeconfig "$(kubeconfig_of "$1")" --request-timeout=10s "${@:2}"; }
answers() { [[ -f "$(kubeconfig_of "$1")" ]] && kube "$1" get --raw /readyz >/dev/null 2>&1; }
crictl_() { crictl --config "$state/crictl.yaml" "$@"; }

# The pid in pids/NAME.pid if that process still runs the expected program.
pid_of() {
  local pid
  pid="$(cat "$state/pids/$1.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$2" && echo "$pid"
}
running() { pid_of containerd containerd >/dev/null || pid_of kubelet kubelet >/dev/null || pid_of kube-proxy kube-proxy >/dev/null; }
owner() { if running; then cat "$state/owner" 2>/dev/null || true; fi; }

# Clusters the node was moved away from, oldest first: each gets it back when the next one lets go.
previous_owners() { cat "$state/previous" 2>/dev/null || true; }
forget_owner() {
  local rest; rest="$(previous_owners | grep -vxF -- "$1" || true)"
  if [[ -n "$rest" ]]; then printf '%s\n' "$rest" >"$state/previous"; else rm -f "$state/previous"; fi
}


check_machine() {
  [[ "$(id -u)" == 0 ]] || cannot "not root (containerd, the kubelet and the CNI plugins need root)"
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    grep -qw memory /sys/fs/cgroup/cgroup.controllers || cannot "no cgroup memory controller"
  else
    [[ "$(awk '$1 == "memory" {print $4}' /proc/cgroups 2>/dev/null)" == 1 && -d /sys/fs/cgroup/memory ]] \
      || cannot "no cgroup memory controller"
  fi
  grep -qw overlay /proc/filesystems || cannot "no overlay file system"
  local tool
  for tool in runc iptables iptables-save iptables-restore ip sysctl flock setsid; do
    command -v "$tool" >/dev/null || cannot "no $tool (make host-packages installs it)"
  done
  for tool in bridge host-local portmap loopback; do
    [[ -x "$cni_bin_dir/$tool" ]] || cannot "no CNI plugin $cni_bin_dir/$tool (make host-packages installs it)"
  done
  for tool in kubelet kube-proxy crictl; do
    [[ -x "$bin_dir/$tool" ]] || cannot "no $bin_dir/$tool (make tools builds it)"
  done
  for tool in containerd containerd-shim-runc-v2 ctr; do
    [[ -x "$containerd_bin_dir/$tool" ]] || cannot "no $containerd_bin_dir/$tool (make tools builds it)"
  done
  [[ -f "$images_dir/pause.tar" ]] || cannot "no pause image $images_dir/pause.tar (make tools builds it)"
  [[ -n "$(node_ip)" ]] || cannot "no IPv4 address but loopback"
}

# A cluster created before the real node existed has kwok play every node, real-0 included, and an
# API server certificate without the `kubernetes` Service's address.
check_cluster() {
  local config="$clusters_dir/$1/kwok.yaml"
  [[ -f "$config" ]] || die "No cluster $1 (tests/cluster/cluster.sh up creates it)"
  if ! grep -q -- '--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake' "$config"; then
    cannot "cluster $1 was created before it could have one (kwok would play real-0 too);" \
      "re-create it: DAGFLOW_CLUSTER_NAME=$1 tests/cluster/cluster.sh down, then up"
  fi
  answers "$1" || die "Cluster $1 does not answer"
}

# Runs a program detached from the caller (setsid), so it outlives it, with its pid in pids/NAME.pid.
start_daemon() {
  local name="$1"; shift
  rm -f "$state/pids/$name.pid"
  # fd 9 (the lock) closed: a daemon holding it would block every later call.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$state/pids/$name.pid" "$@" </dev/null >"$state/logs/$name.log" 2>&1 9>&- &
  for _ in $(seq 50); do [[ -s "$state/pids/$name.pid" ]] && return 0; sleep 0.1; done
  die "$name did not start"
}

# Alive and not a zombie: the machine's init may take seconds to reap an orphan that exited.
alive() { [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" =~ ^[^ZX]$ ]]; }

stop_daemon() {
  local name="$1" pid
  pid="$(pid_of "$name" "$name")" || { rm -f "$state/pids/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$state/pids/$name.pid"
  stopped+=("$pid")
}
stopped=()
# containerd's shims, known by the socket on their command line.
shim_pids() {
  local pid
  for pid in $(grep -lsF -- "$socket" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q containerd-shim; then echo "$pid"; fi
  done
}
any_left() { local pid; for pid in "$@"; do [[ -d "/proc/$pid" ]] && return 0; done; return 1; }

# Fills in a template of real-node/ with this machine's values.
render() {
  local mtu dev
  dev="$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')"
  mtu="$(cat "/sys/class/net/${dev:-lo}/mtu" 2>/dev/null || echo 1500)"
  [[ -n "$dev" ]] || mtu=1500
  sed -e "s|@CONTAINERD_ROOT@|$containerd_root|g" -e "s|@CONTAINERD_STATE@|$containerd_state|g" \
    -e "s|@CONTAINERD_SOCKET@|$socket|g" -e "s|@PAUSE_IMAGE@|$PAUSE_IMAGE|g" \
    -e "s|@CNI_BIN_DIR@|$cni_bin_dir|g" -e "s|@CNI_CONF_DIR@|$state/cni|g" \
    -e "s|@CNI_DATA_DIR@|$cni_data_dir/networks|g" -e "s|@BRIDGE@|$bridge|g" -e "s|@MTU@|$mtu|g" \
    -e "s|@POD_CIDR@|$pod_cidr|g" -e "s|@NODE_IP@|$(node_ip)|g" \
    -e "s|@KUBELET_ROOT@|$kubelet_root|g" -e "s|@POD_LOGS_DIR@|$pod_logs_dir|g" \
    "$here/real-node/$1"
}

# ctr without the deprecation notices it repeats at each call (cgroup v1): containerd's log has them.
ctr_() { ctr --address "$socket" "$@" 2> >(grep -v 'DEPRECATION' >&2); }

import_image() {
  local file="$1" tag="$2"
  [[ -f "$file" ]] || return 0
  if ! ctr_ -n k8s.io images ls -q "name==$tag" | grep -q .; then
    ctr_ -n k8s.io images import "$file" >/dev/null
  fi
}

hosts_remove() {
  grep -qF "$hosts_marker" /etc/hosts || return 0
  local kept; kept="$(grep -vF "$hosts_marker" /etc/hosts)"
  # Written in place: /etc/hosts may be a bind mount that a rename would not replace.
  printf '%s\n' "$kept" >/etc/hosts
}

start_node() {
  local name="$1" kubeconfig ip
  kubeconfig="$(kubeconfig_of "$name")"
  ip="$(node_ip)"
  log "Starting $node_name for cluster $name (node address $ip)"
  mkdir -p "$state/pids" "$state/logs" "$state/cni" "$containerd_root" "$containerd_state" \
    "$kubelet_root" "$pod_logs_dir" "$cni_data_dir"
  render containerd.toml >"$state/containerd.toml"
  render cni.conflist >"$state/cni/10-dagflow.conflist"
  render kubelet.yaml >"$state/kubelet.yaml"
  printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$socket" "$socket" >"$state/crictl.yaml"
  echo "$name" >"$state/owner"

  [[ -f "$state/nft-tables.saved" ]] || tables_now >"$state/nft-tables.saved"
  if [[ ! -f "$state/sysctl.saved" ]]; then
    local key value
    for key in "${sysctls[@]}"; do
      if value="$(sysctl -n "$key" 2>/dev/null)"; then echo "$key=$value"; fi
    done >"$state/sysctl.saved"
  fi
  # Bridged pod traffic must pass iptables, or a pod reaching a Service backed by a pod on the
  # same bridge never gets its reply translated back.
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null \
    || log "No net.bridge.bridge-nf-call-iptables (br_netfilter): a pod may not reach a Service of a pod beside it"

  # containerd reads the CNI folder at start: the conflist is in place before.
  start_daemon containerd "$containerd_bin_dir/containerd" --config "$state/containerd.toml"
  for _ in $(seq 100); do
    ctr --address "$socket" version >/dev/null 2>&1 && break
    pid_of containerd containerd >/dev/null || break
    sleep 0.1
  done
  ctr --address "$socket" version >/dev/null 2>&1 || { log "containerd does not answer at $socket"; return 1; }
  import_image "$images_dir/pause.tar" "$PAUSE_IMAGE"
  import_image "$images_dir/busybox.tar" "$BUSYBOX_IMAGE"

  # A Node left from an earlier run would look Ready before the kubelet registers it again.
  kube "$name" delete node "$node_name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  # The API server calls the kubelet (logs, exec) at the node's first address, its hostname.
  hosts_remove
  printf '%s %s %s\n' "$ip" "$node_name" "$hosts_marker" >>/etc/hosts

  start_daemon kubelet kubelet --config "$state/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --hostname-override "$node_name" --node-ip "$ip" --root-dir "$kubelet_root" \
    --node-labels "dagflow.dev/pool=real,nvidia.com/gpu.present=true" \
    --register-with-taints "dagflow.dev/pool=real:NoSchedule"
  # Conntrack and OOM settings left as they are: they need capabilities a machine may not grant.
  start_daemon kube-proxy kube-proxy --kubeconfig "$kubeconfig" --hostname-override "$node_name" \
    --proxy-mode iptables --cluster-cidr "$pod_cidr" --conntrack-max-per-core 0 \
    --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 --oom-score-adj 0 \
    --nodeport-addresses primary --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256

  local ready=""
  for _ in $(seq 240); do
    pid_of kubelet kubelet >/dev/null || { log "The kubelet exited"; return 1; }
    ready="$(kube "$name" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    [[ "$ready" == True ]] && break
    sleep 0.5
  done
  [[ "$ready" == True ]] || { log "$node_name did not become Ready"; return 1; }
  advertise_gpus "$name"
  # Services answer once kube-proxy has written their rules.
  local synced=""
  for _ in $(seq 120); do
    iptables -w -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes' && { synced=1; break; }
    pid_of kube-proxy kube-proxy >/dev/null || { log "kube-proxy exited"; return 1; }
    sleep 0.5
  done
  [[ -n "$synced" ]] || log "kube-proxy has not written the Services' rules yet (see $state/logs/kube-proxy.log)"
  log "$node_name is Ready in cluster $name"
}

# As a device plugin would advertise them. The kubelet zeroes extended resources of a node it
# registers again, so this follows every registration.
advertise_gpus() {
  kube "$1" patch node "$node_name" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$gpus\"},\"allocatable\":{\"nvidia.com/gpu\":\"$gpus\"}}}" >/dev/null
}

# Deletes iptables chains named KUBE-* (kube-proxy, kubelet) and CNI-* (CNI plugins), with every rule
# that jumps to them, in every table of every iptables flavour that has some.
sweep_chains() {
  local save dump
  for save in iptables-save ip6tables-save iptables-legacy-save ip6tables-legacy-save; do
    command -v "$save" >/dev/null || continue
    dump="$("$save" 2>/dev/null)" || continue
    grep -qE '^[:-].*(KUBE|CNI)-' <<<"$dump" || continue
    grep -vE '^:(KUBE|CNI)-|^-A .*(KUBE|CNI)-' <<<"$dump" | "${save%-save}-restore" -w 5
  done
}

# iptables-nft makes the nftables tables of the iptables tables it is first asked about: those
# that were not there before the node started go again, when no rule is left in them.
tables_now() { if command -v nft >/dev/null; then nft list tables 2>/dev/null | sed 's/^table //'; fi; }
drop_new_tables() {
  [[ -f "$state/nft-tables.saved" ]] || return 0
  local family table
  while read -r family table; do
    [[ -n "$table" ]] || continue
    grep -qxF -- "$family $table" "$state/nft-tables.saved" && continue
    # Only the table, its chains and their policies: no rule, set or map.
    if ! nft list table "$family" "$table" | grep -qvE '^[[:space:]]*(table .*\{|chain [^ ]+ \{|type .*policy [a-z]+;|\}|)$'; then
      nft delete table "$family" "$table"
    fi
  done < <(tables_now)
  rm -f "$state/nft-tables.saved"
}

unmount_under() {
  local dir="$1" point
  # Deepest first; a folder the kubelet bind-mounted onto itself is unmounted last.
  for point in $(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$point" 2>/dev/null || umount -l "$point" 2>/dev/null || log "Could not unmount $point"
  done
}

# Stops everything of the node and puts the machine back as it was, but for containerd's images.
# Idempotent: also clears what a crashed or half-started node left.
stop_node() {
  local name pid pids=()
  name="$(cat "$state/owner" 2>/dev/null || true)"
  stop_daemon kubelet
  if [[ -n "$name" ]] && answers "$name"; then
    kube "$name" delete node "$node_name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  stop_daemon kube-proxy
  mapfile -t pids < <(shim_pids)
  stopped+=("${pids[@]}")
  if pid_of containerd containerd >/dev/null; then
    # Removing the pods stops their containers, deletes their network (CNI) and unmounts their files.
    crictl_ rmp --all --force >/dev/null 2>&1 || log "crictl rmp failed: $(crictl_ rmp --all --force 2>&1 | tail -1)"
    local task
    for task in $(ctr --address "$socket" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$socket" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
      ctr --address "$socket" -n k8s.io tasks delete -f "$task" >/dev/null 2>&1 || true
    done
  fi
  stop_daemon containerd
  # Shims outlive containerd by design; any left belong to this containerd by their socket.
  for pid in $(shim_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  unmount_under "$kubelet_root"
  unmount_under "$containerd_state"
  unmount_under "$containerd_root"
  unmount_under "$legacy_containerd_root"
  rm -rf "$kubelet_root" "$pod_logs_dir" "$cni_data_dir" "$containerd_state" "$state/cni"
  # The kubelet links each container's log in /var/log/containers, a folder of its own making.
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$pod_logs_dir/*" -delete
    rmdir /var/log/containers 2>/dev/null || true
  fi
  ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
  # What `kube-proxy --cleanup` would do for its iptables mode, and the kubelet's and CNI's chains too.
  sweep_chains
  drop_new_tables
  if [[ -f "$state/sysctl.saved" ]]; then
    local setting
    while IFS= read -r setting; do sysctl -qw "$setting" 2>/dev/null || true; done <"$state/sysctl.saved"
    rm -f "$state/sysctl.saved"
  fi
  # The kubelet's cgroups (cgroupfs driver), empty by now; cgroup v2 has a single tree.
  local cgroup
  for cgroup in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$cgroup" ]] && find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  # containerd makes the folder of its pods' network namespaces.
  rmdir /run/netns 2>/dev/null || true
  hosts_remove
  rm -f "$state/owner"
  rmdir /run/dagflow 2>/dev/null || true
  # Until the machine's init has reaped them, the stopped processes still show in ps (defunct).
  for _ in $(seq 50); do any_left "${stopped[@]}" || break; sleep 0.1; done
  stopped=()
}

lock() {
  mkdir -p "$state"
  exec 9>"$state/lock"
  flock -w 900 9 || die "Another real-node.sh holds $state/lock"
}

up() {
  check_machine
  lock
  check_cluster "$cluster_name"
  local current; current="$(owner)"
  if [[ "$current" == "$cluster_name" ]]; then
    log "$node_name already runs for cluster $cluster_name"
    advertise_gpus "$cluster_name"
    return
  fi
  if [[ -n "$current" ]]; then
    log "$node_name serves cluster $current: moving it to $cluster_name ($current gets it back when $cluster_name releases it)"
    stop_node
    forget_owner "$current"
    echo "$current" >>"$state/previous"
  else
    # Not running: what a machine restart or a crash left is cleared, earlier owners forgotten.
    stop_node
    rm -f "$state/previous"
  fi
  forget_owner "$cluster_name"
  if ss -Hltn 'sport = :10250' 2>/dev/null | grep -q .; then
    cannot "port 10250 (the kubelet's) is taken by another program"
  fi
  local started=$SECONDS
  if ! start_node "$cluster_name"; then
    log "Last lines of the logs in $state/logs:"
    tail -n 5 "$state"/logs/*.log >&2 || true
    stop_node
    die "$node_name did not start"
  fi
  log "$node_name took $((SECONDS - started)) s to start"
}

release() {
  [[ -d "$state" ]] || return 0
  lock
  local current; current="$(owner)"
  forget_owner "$cluster_name"
  [[ "$current" == "$cluster_name" ]] || return 0
  log "Stopping $node_name of cluster $cluster_name"
  stop_node
  # Back to the newest earlier owner that still runs.
  local earlier
  while earlier="$(previous_owners | tail -n 1)" && [[ -n "$earlier" ]]; do
    forget_owner "$earlier"
    if answers "$earlier" && grep -q -- '--manage-nodes-with-annotation-selector' "$clusters_dir/$earlier/kwok.yaml"; then
      log "Handing $node_name back to cluster $earlier"
      if start_node "$earlier"; then return 0; fi
      log "$node_name did not start again for cluster $earlier"
      stop_node
      return 0
    fi
  done
}

down() {
  [[ -d "$state" ]] || return 0
  lock
  local current; current="$(owner)"
  if [[ -n "$current" ]]; then log "Stopping $node_name of cluster $current"; fi
  stop_node
  rm -f "$state/previous"
  # Not on a move to another cluster (stop_node): the volumes of the cluster it leaves keep their files.
  if [[ -d "$local_path_root" ]]; then
    log "Removing the volumes of StorageClass dagflow-local ($local_path_root)"
    rm -rf "$local_path_root"
  fi
}

status() {
  local current; current="$(owner)"
  if [[ -z "$current" ]]; then
    echo "$node_name: not running"
    return 1
  fi
  local ready
  ready="$(kube "$current" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  echo "$node_name: running for cluster $current (Ready: ${ready:-unknown}; containerd at $socket)"
  local earlier; earlier="$(previous_owners | paste -sd, -)"
  [[ -z "$earlier" ]] || echo "$node_name: moved from cluster(s) $earlier, which get it back in turn"
  [[ "$current" == "$cluster_name" ]] || return 2
}

case "${1:-}" in
  up) up ;;
  release) release ;;
  down) down ;;
  purge)
    down
    log "Removing containerd's image store $containerd_root (and $legacy_containerd_root, containerd 1.6's)"
    rm -rf "$containerd_root" "$legacy_containerd_root"
    rmdir /var/lib/dagflow 2>/dev/null || true
    ;;
  status) status ;;
  *) echo "usage: $0 up|release|down|purge|status" >&2; exit 2 ;;
esac
