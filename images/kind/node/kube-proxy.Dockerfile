# kube-proxy for the kind node image (tests/cluster/kind.sh builds it; the context holds rootfs.tar,
# Debian bookworm from debootstrap, and the kube-proxy binary built from the Kubernetes module). It
# programs the node's iptables (or nftables) rules, so it carries Debian's tools for both.
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables nftables conntrack kmod \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /usr/share/doc /usr/share/man
COPY kube-proxy /usr/local/bin/kube-proxy
