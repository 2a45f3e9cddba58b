#!/usr/bin/env bash
# Builds an N-host cluster on one machine from network namespaces, for scaling experiments
# over a real TCP path with a chosen bandwidth per link (tc tbf) and, where the kernel has
# the sch_netem module, latency (tc netem). Host gnK lives in namespace gnK with address
# 198.18.0.(K+1)/24 on a private bridge: the range RFC 2544 sets aside for benchmarking
# (198.18.0.0/15), and nothing is routed outside the bridge. Needs root and iproute2.
# `up` undoes its own half-made work when a step fails; `down` removes whatever is left of
# a cluster (also after a failed run) and is safe to repeat.
#
#   cluster/netns/netns-cluster.sh up 4 [--delay 1ms] [--rate 1gbit]
#   cluster/netns/netns-cluster.sh run 4 cluster-check      # mpirun across the 4 hosts
#   cluster/netns/netns-cluster.sh down 4
#
# `run` starts mpirun inside gn0 and the other ranks through rsh-netns (an Open MPI
# launch agent that runs commands with `ip netns exec` instead of ssh), with MPI traffic
# restricted to the bridge. GEMMA_NODE_BIN chooses the binary (default: release build).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BRIDGE=gnbr0
SUBNET=198.18.0

usage() { sed -n '2,15p' "$0"; exit 2; }
[ "$#" -ge 2 ] || usage
ACTION="$1"; N="$2"; shift 2
[[ "$N" =~ ^[1-9][0-9]?$ ]] && [ "$N" -le 250 ] || { echo "host count must be 1..99, got $N" >&2; exit 2; }

up() {
    local delay="" rate=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --delay) delay="$2"; shift 2 ;;
            --rate) rate="$2"; shift 2 ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
        esac
    done
    trap 'echo "netns-cluster: up failed; removing what was made" >&2; down >/dev/null' ERR
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" up
    for k in $(seq 0 $((N - 1))); do
        local ns="gn$k" veth="gnv$k"
        ip netns list | grep -qw "$ns" || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name eth0 netns "$ns"
            ip link set "$veth" master "$BRIDGE" up
            ip netns exec "$ns" ip addr add "$SUBNET.$((k + 1))/24" dev eth0
            ip netns exec "$ns" ip link set eth0 up
            ip netns exec "$ns" ip link set lo up
        fi
        # Shape traffic leaving each host: latency (one way) and bandwidth.
        ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
        if [ -n "$delay" ]; then
            ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$delay" ${rate:+rate "$rate"} || {
                echo "tc netem is not available in this kernel (module sch_netem): --delay cannot be set" >&2
                exit 1
            }
        elif [ -n "$rate" ]; then
            # Token bucket: needs no netem module.
            ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 100ms
        fi
    done
    trap - ERR
    echo "cluster of $N hosts up: gn0..gn$((N - 1)) at $SUBNET.1..$SUBNET.$N${delay:+, delay $delay}${rate:+, rate $rate}"
}

down() {
    for k in $(seq 0 $((N - 1))); do
        ip netns del "gn$k" 2>/dev/null || true
        ip link del "gnv$k" 2>/dev/null || true
    done
    if [ -z "$(ip link show master "$BRIDGE" 2>/dev/null)" ]; then ip link del "$BRIDGE" 2>/dev/null || true; fi
    echo "cluster of $N hosts down"
}

run() {
    local bin="${GEMMA_NODE_BIN:-$ROOT/.build/release/gemma-node}"
    [ -x "$bin" ] || { echo "no binary at $bin (build first or set GEMMA_NODE_BIN)" >&2; exit 1; }
    HOSTFILE="$(mktemp)"
    trap 'rm -f "$HOSTFILE"' EXIT
    for k in $(seq 0 $((N - 1))); do echo "gn$k slots=1" >> "$HOSTFILE"; done
    # rtc_hwloc_vmhole none: the daemons do not share the hardware topology through a
    # shared-memory segment placed in a hole of the address space; Open MPI 4.1's orted
    # crashed there once (SIGSEGV in hwloc_shmem_topology_write) in a CI run.
    # Every "host" sees the same hostname, so name resolution goes through the hostfile
    # names only; MPI traffic stays on the bridge subnet.
    ip netns exec gn0 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        mpirun --hostfile "$HOSTFILE" -n "$N" --bind-to none \
        --mca plm_rsh_agent "$HERE/rsh-netns" \
        --mca oob_tcp_if_include "$SUBNET.0/24" --mca btl_tcp_if_include "$SUBNET.0/24" \
        --mca btl self,tcp \
        --mca rtc_hwloc_vmhole none \
        "$bin" "$@"
}

case "$ACTION" in
    up) up "$@" ;;
    down) down ;;
    run) run "$@" ;;
    *) usage ;;
esac
