#!/bin/sh
# Before the kubelet starts: its cgroup root must exist. cgroup v1: the entrypoint made it in every
# hierarchy but systemd's own name=systemd one may lack it. cgroup v2: make /kubelet and /kubelet.slice
# with every controller the root offers (possible now that systemd moved every process out of the root).
set -eu
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  enable() { sed -e 's/ / +/g' -e 's/^/+/' "/sys/fs/cgroup/$1/cgroup.controllers" >"/sys/fs/cgroup/$1/cgroup.subtree_control"; }
  enable /
  for group in kubelet kubelet.slice; do mkdir -p "/sys/fs/cgroup/$group"; enable "$group"; done
else
  for group in kubelet kubelet.slice; do mkdir -p "/sys/fs/cgroup/systemd/$group"; done
fi
