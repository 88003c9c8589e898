#!/usr/bin/env bash
# Emulated cluster on one Linux machine: N network namespaces ("hosts") joined by rate-limited veth
# links to a bridge in a dedicated switch namespace, and mpirun across them as across real boards.
# Nothing touches the root namespace's networking. Needs root and `ip netns`; exit 77 otherwise.
#   tools/emucluster.sh up N [--rate 1gbit]                    make hosts PREFIX-h0 .. h{N-1}
#   tools/emucluster.sh run N [--rate R] -- <mpirun args...>   up, mpirun inside PREFIX-h0, down
#   tools/emucluster.sh mpirun -- <mpirun args...>             mpirun inside PREFIX-h0 (after up)
#   tools/emucluster.sh args                                   print the mpirun flags (after up)
#   tools/emucluster.sh down                                   remove everything it made (idempotent)
# Environment: MDI_EMU_PREFIX (default mdi: namespaces mdi-sw, mdi-h0, ...), MDI_EMU_DIR (hostfile
# and rsh wrapper; default /run/mdi-emucluster-PREFIX), MDI_EMU_IFACE (default eth0).
set -euo pipefail

PREFIX=${MDI_EMU_PREFIX:-mdi}
DIR=${MDI_EMU_DIR:-/run/mdi-emucluster-$PREFIX}
IFACE=${MDI_EMU_IFACE:-eth0}
SW="$PREFIX-sw"            # the switch namespace: holds the bridge and the host-side veth ends
BR=mdi-br0                 # bridge, inside $SW (so its name cannot clash with anything)
NET=10.77.0                # private /24 that exists only inside these namespaces; host i = .(i+1)
HOSTFILE="$DIR/hostfile"
AGENT="$DIR/netns-rsh"

die() { echo "emucluster: $*" >&2; exit 1; }
skip() { echo "emucluster: skipped: $*" >&2; exit 77; }
log() { echo "emucluster: $*" >&2; }

usage() {
  echo "usage:" >&2
  sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

preflight() {
  [ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, veth, tc)"
  command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
  command -v tc >/dev/null || skip "no 'tc' command (iproute2)"
  command -v unshare >/dev/null || skip "no 'unshare' command (util-linux)"
  ip netns list >/dev/null 2>&1 || skip "'ip netns' is unavailable here"
  # Probe that namespaces can really be made (containers often forbid it).
  local probe="$PREFIX-probe$$"
  if ! ip netns add "$probe" 2>/dev/null; then skip "cannot create network namespaces here"; fi
  ip netns del "$probe" 2>/dev/null || true
}

our_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}-(sw|h[0-9]+)\$" || true
}

down() {
  local ns pids
  for ns in $(our_namespaces); do
    # Processes still living in one of our namespaces (a crashed job's orted or ranks) would keep
    # it alive after `ip netns del`: end them, by pid, first politely.
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 1
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$DIR"
}

parse_rate() {   # sets RATE from "--rate R" in "$@"
  RATE=1gbit
  while [ $# -gt 0 ]; do
    case "$1" in
      --rate) [ $# -ge 2 ] || die "--rate needs a value (e.g. 1gbit, 100mbit)"; RATE=$2; shift 2 ;;
      --rate=*) RATE=${1#--rate=}; shift ;;
      *) die "unknown option '$1'" ;;
    esac
  done
}

shape() {   # shape NS DEV: a gigabit-like egress limit on one end of a link
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$RATE" burst 64kb latency 50ms
}

up() {
  local N=$1 i ns
  if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ] || [ "$N" -gt 200 ]; then
    die "N must be 1..200, got '$N'"
  fi
  [ -z "$(our_namespaces)" ] || die "namespaces with prefix '$PREFIX' exist already: run '$0 down' first"
  mkdir -p "$DIR"

  ip netns add "$SW"
  ip -n "$SW" link set lo up
  ip -n "$SW" link add "$BR" type bridge
  ip -n "$SW" link set "$BR" up
  for ((i = 0; i < N; i++)); do
    ns="$PREFIX-h$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 || true
    # One veth pair per host: "h$i" stays in the switch, "$IFACE" goes into the host. Both ends
    # are shaped, so each direction of the full-duplex link has its own rate, as on Ethernet.
    ip -n "$SW" link add "h$i" type veth peer name "$IFACE" netns "$ns"
    ip -n "$SW" link set "h$i" master "$BR"
    ip -n "$SW" link set "h$i" up
    ip -n "$ns" addr add "$NET.$((i + 1))/24" dev "$IFACE"
    ip -n "$ns" link set "$IFACE" up
    shape "$SW" "h$i"
    shape "$ns" "$IFACE"
  done

  : >"$HOSTFILE"
  for ((i = 0; i < N; i++)); do echo "$PREFIX-h$i slots=1" >>"$HOSTFILE"; done

  # Open MPI's launcher runs `AGENT <host> <command...>` as it would run ssh. Our agent enters the
  # host's namespace instead; the command string is for a shell, as ssh would hand it to one.
  cat >"$AGENT" <<EOF
#!/bin/sh
# plm_rsh_agent for the emulated cluster "$PREFIX": "ssh" = enter the host's network namespace.
host=\$1; shift
case "\$host" in
  $PREFIX-h[0-9]*) ns=\$host ;;
  $NET.*) ns=$PREFIX-h\$((\${host##*.} - 1)) ;;
  *) echo "netns-rsh: unknown host '\$host'" >&2; exit 255 ;;
esac
# Own UTS namespace and hostname too: Open MPI keys its session directory (under the shared /tmp)
# and its shared-memory files by host name, so hosts with one name trip over each other's files.
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$1"' "\$ns" "\$*"
EOF
  chmod +x "$AGENT"
  log "up: $N hosts $PREFIX-h0..h$((N - 1)) at $NET.1..$NET.$N/24 on $IFACE, links at $RATE," \
      "bridge $BR in namespace $SW; hostfile $HOSTFILE"
}

mpi_args() {   # the flags that make mpirun use the emulated hosts and links
  local N
  [ -f "$HOSTFILE" ] || die "no cluster '$PREFIX' is up (no $HOSTFILE)"
  N=$(wc -l <"$HOSTFILE")
  MPI_ARGS=(--hostfile "$HOSTFILE" --mca plm_rsh_agent "$AGENT"
            --mca btl "tcp,self" --mca btl_tcp_if_include "$IFACE" --mca oob_tcp_if_include "$IFACE"
            # every "host" sees the same cores: binding would stack all ranks on core 0
            --bind-to none)
  [ "$(id -u)" -ne 0 ] || MPI_ARGS+=(--allow-run-as-root)
  [ "$N" -le "$(nproc)" ] || MPI_ARGS+=(--mca mpi_yield_when_idle 1)
}

run_mpirun() {   # becomes mpirun "$@" inside host 0 of the cluster that is up (exec)
  mpi_args
  # mpirun itself runs inside host 0, so the whole job (launcher, daemons' OOB, MPI traffic) lives
  # on the emulated network; the daemons of every host (host 0's too) start through the agent.
  log "mpirun: ip netns exec $PREFIX-h0 mpirun ${MPI_ARGS[*]} $*"
  # shellcheck disable=SC2016  # $0/$@ are for the inner shell
  exec ip netns exec "$PREFIX-h0" unshare --uts /bin/sh -c 'hostname "$0" && exec mpirun "$@"' \
    "$PREFIX-h0" "${MPI_ARGS[@]}" "$@"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case "$cmd" in
  up)
    [ $# -ge 1 ] || usage
    N=$1; shift
    parse_rate "$@"
    preflight
    trap down EXIT      # a half-made cluster is removed again
    up "$N"
    trap - EXIT
    ;;
  down)
    [ "$(id -u)" -eq 0 ] || skip "needs root"
    down
    ;;
  args)
    mpi_args
    printf '%q ' "${MPI_ARGS[@]}"; echo
    ;;
  mpirun)
    [ "${1:-}" = "--" ] || die "mpirun: put the mpirun arguments after '--'"
    shift
    [ "$(id -u)" -eq 0 ] || skip "needs root"
    run_mpirun "$@"
    ;;
  run)
    [ $# -ge 1 ] || usage
    N=$1; shift
    opts=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
    [ "${1:-}" = "--" ] || die "run: put the mpirun arguments after '--'"
    shift
    parse_rate "${opts[@]+"${opts[@]}"}"
    preflight
    trap down EXIT      # always removed again, whatever mpirun did
    trap 'exit 143' INT TERM
    up "$N"
    # In the background, so a signal reaches this shell at once: it is passed on to mpirun (which
    # ends its job), then the EXIT trap removes the cluster.
    run_mpirun "$@" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' INT TERM
    rc=0
    wait "$child" || rc=$?
    exit "$rc"
    ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
