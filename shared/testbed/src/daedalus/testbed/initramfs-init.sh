#!/bin/busybox sh
# daedalus-v4l2 guest, stage 1 (PID 1 in the initramfs): load the virtio and
# 9p modules listed in /modules.list, mount the host's root filesystem
# (read-only, tag "hostroot") and hand over to the stage-2 init named by
# dinit= on the kernel command line.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.list); do
	insmod "/mods/$m" || echo "daedalus-initramfs: insmod $m failed" >/dev/console
done
dinit=
for arg in $(cat /proc/cmdline); do
	case "$arg" in dinit=*) dinit="${arg#dinit=}" ;; esac
done
mkdir -p /newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot; then
	echo "daedalus-initramfs: cannot mount the host root over 9p" >/dev/console
	echo o >/proc/sysrq-trigger
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/sh "$dinit"
