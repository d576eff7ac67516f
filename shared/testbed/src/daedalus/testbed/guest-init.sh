#!/bin/sh
# daedalus-v4l2 guest, stage 2 (PID 1 on the host's root filesystem, which is
# read-only here). Sets up a writable scratch world, mounts the results
# folder (tag "dout"), loads the phase's modules, runs the command, stores its
# exit status and the kernel log, and powers off. The host side is
# daedalus/testbed/guest.py.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/daedalus /run/hosttmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 dout /run/daedalus

out=/run/daedalus
finish() {
	dmesg >"$out/dmesg" 2>&1
	sync
	echo o >/proc/sysrq-trigger
	sleep 10
}

if [ ! -f "$out/config.sh" ]; then
	echo "daedalus-guest: results folder not mounted" >/dev/console
	finish
fi
. "$out/config.sh"

# Writable /tmp, but host paths under /tmp that the run needs (a checkout,
# a virtualenv, the module stage) stay visible, read-only.
mount --bind /tmp /run/hosttmp
mount -t tmpfs tmpfs /tmp
for p in $DAEDALUS_KEEP_TMP; do
	rel="${p#/tmp/}"
	mkdir -p "/tmp/$rel" && mount --bind "/run/hosttmp/$rel" "/tmp/$rel"
done
mount -t tmpfs tmpfs /var/tmp
mount -t debugfs debugfs /sys/kernel/debug

# The phase's module tree (built and depmod-ed on the host).
mount --bind "$DAEDALUS_STAGE/lib/modules" /lib/modules
hostname daedalus-guest 2>/dev/null
ip link set lo up 2>/dev/null

cut -d" " -f1 /proc/uptime >"$out/boot"
status=0
for m in $DAEDALUS_PRELOAD; do
	if ! modprobe "$m" >>"$out/setup.log" 2>&1; then
		echo "daedalus-guest: modprobe $m failed" >>"$out/setup.log"
		status=1
	fi
done
if [ "$status" -ne 0 ]; then
	echo setup >"$out/failed"
	finish
fi
if [ -n "$DAEDALUS_SETUP" ] && ! sh -c "$DAEDALUS_SETUP" >>"$out/setup.log" 2>&1; then
	echo setup >"$out/failed"
	finish
fi

# The daemon (phase 8.2 on), started like a service would be, with the
# command's environment; the command runs once the kernel reports the
# handshake done. The wait is on state, not on speed: as long as the daemon
# runs (up to DAEDALUS_DAEMON_WAIT s; imports over 9p under a loaded TCG host
# take minutes), and not at all once it has exited. How long it took goes to
# daemon-ready.
# Shell builtins only in the loop: forks cost CPU the starting daemon needs.
alive() {
	while read -r key val _; do
		[ "$key" = State: ] && { [ "$val" != Z ]; return; }
	done 2>/dev/null <"/proc/$1/status"
	return 1
}
ready() { st=; read -r st 2>/dev/null <"$1"; [ "$st" = ready ]; }
if [ -n "$DAEDALUS_DAEMON" ]; then
	read -r started _ </proc/uptime
	limit=$(( ${started%.*} + ${DAEDALUS_DAEMON_WAIT:-300} ))
	sh "$out/daemon.sh" >"$out/daemon.log" 2>&1 </dev/null &
	pid=$!
	echo $pid >/run/daedalusd.pid
	state=/sys/kernel/debug/daedalus-v4l2/daemon
	why=
	until ready "$state"; do
		if ! alive "$pid"; then
			wait "$pid"
			why="daedalusd exited (status $?) before the handshake"
			break
		fi
		read -r up _ </proc/uptime
		if [ "${up%.*}" -ge "$limit" ]; then
			why="daedalusd did not connect within ${DAEDALUS_DAEMON_WAIT:-300} s (still running)"
			break
		fi
		sleep 0.1
	done
	if [ -n "$why" ]; then
		echo "daedalus-guest: $why" >>"$out/setup.log"
		echo daemon >"$out/failed"
		finish
	fi
	read -r now _ </proc/uptime
	awk -v s="$started" -v e="$now" 'BEGIN { printf "%.2f\n", e - s }' >"$out/daemon-ready"
fi

sh "$out/cmd.sh" >"$out/stdout" 2>"$out/stderr" </dev/null
echo $? >"$out/rc"
if [ -n "$DAEDALUS_DAEMON" ] && [ -f /run/daedalusd.pid ]; then
	kill -TERM "$(cat /run/daedalusd.pid)" 2>/dev/null
	sleep 0.5
fi
finish
