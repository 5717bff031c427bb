# Helpers of the processes the local cluster runs on this machine beside its control plane (Kueue's
# manager, the storage provisioner, the object store, the real node): sourced by their scripts.

# This machine's address on its default route: the one the API server advertises, and one that pods
# and the API server reach (an EndpointSlice may not point at a loopback address).
node_ip() {
  local dev
  dev="$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')"
  if [[ -n "$dev" ]]; then
    ip -4 -o addr show dev "$dev" scope global | awk '{split($4, a, "/"); print a[1]; exit}'
  else
    ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}'
  fi
}

# stop_process PID: SIGTERM, then SIGKILL if it has not ended within 10 s.
stop_process() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do
    [[ -d "/proc/$pid" ]] || return 0
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
}
