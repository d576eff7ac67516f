#!/bin/sh
# daedalus-v4l2 guest, stage 2 for a systemd boot (GuestConfig.init =
# "systemd"): the machine boots as an installed one would, with systemd as
# PID 1 on the host's root filesystem (read-only here), its udev rules, its
# enabled units and its /lib/modules (where DKMS installed our modules).
# Nothing of the harness is loaded or started: this script only makes the
# few writable places a read-only root needs, mounts the results folder (tag
# "dout") on /run/daedalus and adds one runtime unit that runs the command
# once the system is up, stores its exit status, the kernel log and the
# journal there and powers off. The host side is daedalus/testbed/guest.py.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/daedalus /run/systemd/system/multi-user.target.wants
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 dout /run/daedalus
if [ ! -f /run/daedalus/config.sh ]; then
	echo "daedalus-guest: results folder not mounted" >/dev/console
	echo o >/proc/sysrq-trigger
fi
. /run/daedalus/config.sh
# A writable /tmp, but host paths under /tmp that the run needs (a checkout,
# a virtualenv) stay visible, read-only (as guest-init.sh does).
mkdir -p /run/hosttmp
mount --bind /tmp /run/hosttmp
mount -t tmpfs tmpfs /tmp
for p in $DAEDALUS_KEEP_TMP; do
	rel="${p#/tmp/}"
	mkdir -p "/tmp/$rel" && mount --bind "/run/hosttmp/$rel" "/tmp/$rel"
done
# What a booted system writes: volatile here, as on a live image.
for d in /var/tmp /var/log /var/lib/systemd /var/cache; do
	mount -t tmpfs -o mode=0755 tmpfs "$d"
done
chmod 1777 /tmp /var/tmp

# The command runs as a service of the booted system, after the boot's own
# jobs have been queued (Type=exec: the boot does not wait for it).
cat >/run/systemd/system/daedalus-guest.service <<'UNIT'
[Unit]
Description=daedalus-v4l2 testbed command
After=basic.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=exec
ExecStart=/bin/sh /run/daedalus-guest.sh
StandardOutput=journal+console
UNIT
cat >/run/daedalus-guest.sh <<'RUN'
out=/run/daedalus
cut -d" " -f1 /proc/uptime >"$out/boot"
sh "$out/cmd.sh" >"$out/stdout" 2>"$out/stderr" </dev/null
echo $? >"$out/rc"
dmesg >"$out/dmesg" 2>&1
journalctl -b --no-pager >"$out/journal" 2>&1
sync
RUN
ln -s ../daedalus-guest.service /run/systemd/system/multi-user.target.wants/
exec /lib/systemd/systemd
