#!/bin/bash
# A throwaway single-node Ceph RADOS Gateway for the integration tests.
#
#   tests/s3server.sh start DIR   start mon + memstore OSD + radosgw on 127.0.0.1
#   tests/s3server.sh stop DIR    stop exactly those daemons, then remove DIR
#
# Everything (conf, data, logs, admin sockets, run, crash) lives under DIR,
# which must not exist or be empty.  After a successful start:
#   DIR/env   shell-sourceable: S3_ENDPOINT, AWS_ACCESS_KEY_ID,
#             AWS_SECRET_ACCESS_KEY, RGW_LOG (debug_rgw=1: one line per request)
#   DIR/pids  the daemons' PIDs, one per line (mon, osd, radosgw)
# Ports are free ports picked by binding port 0; when a daemon loses the race
# for its port the whole start is retried with new ports.  A failed start
# stops whatever it started.  Processes are only ever signalled by PID, and
# only when /proc/PID/cmdline still names DIR/ceph.conf (no PID reuse).
set -eu

PY=/usr/bin/python3
TIMEOUT=${S3SERVER_TIMEOUT:-60}
POOLS=".rgw.root default.rgw.control default.rgw.meta default.rgw.log
default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec"

die() {
	echo "s3server: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}

# pids_alive DIR: the PIDs from DIR/pids that still run one of our daemons.
pids_alive() {
	local pid
	[ -f "$1/pids" ] || return 0
	while read -r pid; do
		[ -n "$pid" ] || continue
		if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$1/ceph.conf"; then
			echo "$pid"
		fi
	done <"$1/pids"
}

# stop_daemons DIR: TERM each daemon in the reverse order of DIR/pids
# (radosgw, osd, mon: an OSD stops fast only while its mon still answers),
# all within 10 s, then KILL whatever is left.
stop_daemons() {
	local pid deadline=$((SECONDS + 10)) left
	for pid in $(pids_alive "$1" | tac); do
		kill -TERM "$pid" 2>/dev/null || true
		while [ $SECONDS -lt $deadline ] && pids_alive "$1" | grep -qx "$pid"; do
			sleep 0.05
		done
	done
	left=$(pids_alive "$1")
	[ -n "$left" ] || return 0
	# shellcheck disable=SC2086
	kill -KILL $left 2>/dev/null || true
	for pid in $(seq 50); do
		[ -n "$(pids_alive "$1")" ] || return 0
		sleep 0.1
	done
}

free_ports() {
	"$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

rand_str() { # rand_str N ALPHABET
	"$PY" -c 'import secrets,sys; print("".join(secrets.choice(sys.argv[2]) for _ in range(int(sys.argv[1]))))' "$1" "$2"
}

write_conf() { # write_conf DIR FSID MONV2 MONV1 RGWPORT
	cat >"$1/ceph.conf" <<EOF
[global]
fsid = $2
mon host = [v2:127.0.0.1:$3,v1:127.0.0.1:$4]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
run dir = $1/run
admin socket = $1/run/\$cluster-\$name.asok
pid file = $1/run/\$cluster-\$name.pid
log file = $1/log/\$name.log
crash dir = $1/crash
keyring = $1/keyring
mon data = $1/mon/\$cluster-\$id
osd data = $1/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd max object name len = 460
osd max object namespace len = 64
osd check max object name len on startup = false
log to stderr = false
err to stderr = true
log flush on exit = true
osd mon shutdown timeout = 2
ms bind retry count = 1
ms bind retry delay = 1

[mon]
paxos propose interval = 0.05
mon allow pool delete = true

[client.rgw.gw]
rgw frontends = beast endpoint=127.0.0.1:$5 tcp_nodelay=1
rgw data = $1/rgw
log file = $1/log/rgw.log
debug rgw = 1
rgw enable usage log = false
EOF
}

# spawn DIR NAME CMD...: run a daemon in the background in its own session
# (so a terminal's Ctrl-C reaches only the test runner, which then stops us),
# record its PID.
spawn() {
	local dir=$1 name=$2
	shift 2
	setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
	echo $! >>"$dir/pids"
}

port_lost() { # did a daemon fail to bind its port?
	grep -qsiE 'address already in use|bind.*(failed|unable)|unable to bind' \
		"$1"/log/*.out "$1"/log/*.log
}

show_logs() {
	local f
	for f in "$1"/log/*; do
		[ -s "$f" ] || continue
		echo "==> $f <==" >&2
		tail -n 15 "$f" >&2
	done
}

# One attempt; exits 75 when a port was taken (the caller retries).
start_once() {
	local dir=$1 fsid osd_uuid ports v2 v1 rgw key secret p cmds deadline id
	export CEPH_CONF="$dir/ceph.conf"
	local c=(-c "$dir/ceph.conf")
	mkdir -p "$dir"/{run,log,crash,mon,osd/ceph-0,rgw}
	: >"$dir/pids"
	: >"$dir/keyring"
	trap 'rc=$?; if [ $rc -ne 0 ]; then stop_daemons "$dir"; port_lost "$dir" && rc=75; [ $rc -eq 75 ] || show_logs "$dir"; fi; exit $rc' EXIT
	trap 'exit 130' INT TERM HUP

	fsid=$(uuidgen)
	osd_uuid=$(uuidgen)
	ports=$(free_ports 3)
	# S3SERVER_FORCE_RGW_PORT: test knob for the retry path (first attempt only)
	if [ -n "${S3SERVER_FORCE_RGW_PORT:-}" ] && [ "${S3SERVER_ATTEMPT:-1}" = 1 ]; then
		ports="${ports% *} $S3SERVER_FORCE_RGW_PORT"
	fi
	read -r v2 v1 rgw <<<"$ports"
	write_conf "$dir" "$fsid" "$v2" "$v1" "$rgw"

	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]" \
		"$dir/monmap" >"$dir/log/mkfs.out" 2>&1
	ceph-mon "${c[@]}" --mkfs -i a --monmap "$dir/monmap" >>"$dir/log/mkfs.out" 2>&1
	spawn "$dir" mon ceph-mon "${c[@]}" -f -i a

	# Pools go in while the OSD starts: one ceph process, commands on stdin.
	cmds=""
	for p in $POOLS; do
		cmds="${cmds}osd pool create $p 8 8 replicated --autoscale-mode=off
osd pool application enable $p rgw
"
	done
	id=$(timeout 30 ceph "${c[@]}" osd new "$osd_uuid" 2>>"$dir/log/mkfs.out")
	[ "$id" = 0 ] || die "'ceph osd new' printed '$id', expected 0"
	ceph-osd "${c[@]}" --mkfs -i 0 --osd-uuid "$osd_uuid" >>"$dir/log/mkfs.out" 2>&1
	spawn "$dir" osd ceph-osd "${c[@]}" -f -i 0
	printf '%s' "$cmds" | timeout 60 ceph "${c[@]}" >>"$dir/log/mkfs.out" 2>&1

	key=$(rand_str 20 ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)
	secret=$(rand_str 40 ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789)
	# radosgw-admin with -n client.rgw.gw reads the gateway's section.  User
	# creation first: it creates the default zonegroup and zone.
	{
		timeout 60 radosgw-admin "${c[@]}" -n client.rgw.gw user create --uid=test \
			--display-name=test --access-key="$key" --secret-key="$secret"
		timeout 60 radosgw-admin "${c[@]}" -n client.rgw.gw zonegroup placement add \
			--rgw-zonegroup=default --placement-id=default-placement \
			--storage-class=STANDARD_IA
		timeout 60 radosgw-admin "${c[@]}" -n client.rgw.gw zone placement add \
			--rgw-zone=default --placement-id=default-placement \
			--storage-class=STANDARD_IA --data-pool=default.rgw.buckets.data
	} >>"$dir/log/mkfs.out" 2>&1

	spawn "$dir" rgw radosgw "${c[@]}" -f -n client.rgw.gw
	deadline=$((SECONDS + TIMEOUT))
	# the anonymous bucket listing proves it is our gateway on that port
	until curl -s --max-time 2 "http://127.0.0.1:$rgw/" 2>/dev/null |
		grep -q ListAllMyBucketsResult; do
		[ "$(pids_alive "$dir" | wc -l)" -eq 3 ] || die "a daemon exited during start"
		[ $SECONDS -lt $deadline ] || die "no answer on port $rgw after ${TIMEOUT} s"
		sleep 0.1
	done
	[ "$(pids_alive "$dir" | wc -l)" -eq 3 ] || die "a daemon exited during start"

	cat >"$dir/env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$rgw
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
RGW_LOG=$dir/log/rgw.log
EOF
	trap - EXIT INT TERM HUP
}

cmd_start() {
	local dir=$1 try rc
	if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
		die "'$dir' exists and is not empty"
	fi
	for try in 1 2 3 4 5; do
		rc=0
		S3SERVER_ATTEMPT=$try "$0" _start1 "$dir" || rc=$?
		[ $rc -eq 75 ] || return $rc
		echo "s3server: a port was taken, retrying ($try)" >&2
		rm -rf "$dir"
	done
	die "could not get free ports"
}

[ $# -eq 2 ] || usage
case "$2" in
/*) dir=$2 ;;
*) dir=$PWD/$2 ;;
esac
dir=${dir%/}
case "$1" in
start) cmd_start "$dir" ;;
_start1) start_once "$dir" ;;
stop)
	[ -d "$dir" ] || exit 0
	if [ ! -e "$dir/pids" ] && [ -n "$(ls -A "$dir")" ]; then
		die "'$dir' is not a server directory (no pids file): not removing it"
	fi
	stop_daemons "$dir"
	[ -z "$(pids_alive "$dir")" ] || die "daemons of '$dir' survived SIGKILL"
	rm -rf "$dir"
	;;
*) usage ;;
esac
