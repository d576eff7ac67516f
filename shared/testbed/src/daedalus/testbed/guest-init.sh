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
# handshake done.
if [ -n "$DAEDALUS_DAEMON" ]; then
	sh "$out/daemon.sh" >"$out/daemon.log" 2>&1 </dev/null &
	echo $! >/run/daedalusd.pid
	state=/sys/kernel/debug/daedalus-v4l2/daemon
	i=0
	while [ "$(cat "$state" 2>/dev/null)" != ready ] && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ "$(cat "$state" 2>/dev/null)" != ready ]; then
		echo "daedalus-guest: daedalusd did not connect within 30 s" >>"$out/setup.log"
		echo daemon >"$out/failed"
		finish
	fi
fi

sh "$out/cmd.sh" >"$out/stdout" 2>"$out/stderr" </dev/null
echo $? >"$out/rc"
if [ -n "$DAEDALUS_DAEMON" ] && [ -f /run/daedalusd.pid ]; then
	kill -TERM "$(cat /run/daedalusd.pid)" 2>/dev/null
	sleep 0.5
fi
finish
