#!/usr/bin/env bash
# The pod network of a kind node, in place of kind's default CNI (kindnetd, an image from a registry):
# the cluster is created with `networking.disableDefaultCNI: true` and every node runs this loop.
# - Once the node has joined (the kubelet's kubeconfig exists) and the controller manager has given it
#   a pod range (spec.podCIDR of its own Node, the one object a kubelet's credentials may read), it
#   writes a CNI configuration: Debian's bridge plugin on that range (host-local addresses, the bridge
#   as the pods' gateway), plus portmap. The kubelet turns Ready.
# - Pods reach the pods of other nodes through a route per node: its pod range via its address on the
#   Docker network (one bridge: no tunnel needed). The table, one "RANGE ADDRESS" line per node, is
#   /kind/pod-network/routes, which `tests/cluster/kind.sh up` writes into every node once all have
#   their ranges.
# - Traffic from pods to anything but a pod range is masqueraded to the node's address.
set -o nounset -o pipefail

kubeconfig=/etc/kubernetes/kubelet.conf
conf=/etc/cni/net.d/10-pod-network.conflist
node="$(hostname)"

write_conf() {  # $1: this node's pod range
  local tmp="$conf.tmp"
  cat >"$tmp" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$1"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CONF
  if ! cmp -s "$tmp" "$conf"; then mv "$tmp" "$conf"; echo "pod range $1: $conf written"; else rm -f "$tmp"; fi
}

# Traffic from this node's pods to anything but a pod range goes out with the node's address: a chain
# that returns for every pod range, then masquerades; rewritten only when the ranges change.
masquerade() {  # $1: this node's pod range, $2...: every node's pod range
  local own="$1" range rules
  shift
  rules="$(printf '*nat\n:POD-NETWORK - [0:0]\n'
    for range in "$@"; do printf -- '-A POD-NETWORK -d %s -j RETURN\n' "$range"; done
    printf -- '-A POD-NETWORK -j MASQUERADE\nCOMMIT\n')"
  if [[ "$rules" != "${applied:-}" ]]; then
    printf '%s\n' "$rules" | iptables-restore --noflush && applied="$rules"
  fi
  iptables -t nat -C POSTROUTING -s "$own" -j POD-NETWORK 2>/dev/null \
    || iptables -t nat -A POSTROUTING -s "$own" -j POD-NETWORK
}

routes=/kind/pod-network/routes
while true; do
  if [[ -f "$kubeconfig" ]]; then
    own="$(kubectl --kubeconfig "$kubeconfig" get node "$node" -o jsonpath='{.spec.podCIDR}' 2>/dev/null)"
    if [[ -n "$own" ]]; then
      write_conf "$own"
      ranges=("$own")
      if [[ -f "$routes" ]]; then
        while read -r range address; do
          [[ -n "${address:-}" && "$range" != "$own" ]] || continue
          ranges+=("$range")
          ip route replace "$range" via "$address"
        done <"$routes"
      fi
      masquerade "$own" "${ranges[@]}"
    fi
  fi
  sleep 3
done
