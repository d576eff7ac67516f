#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# What DKMS runs for the two daedalus-v4l2 packages (see their dkms.conf).
# install.sh copies this script into both source trees; DKMS runs it in its
# build directory (a copy of the tree), with the kernel's release and its
# headers (kernel_source_dir):
#
#   daedalus-dkms.sh check  KVER KDIR   PRE_BUILD: says, on the terminal, what
#                                       is missing to build for KVER
#   daedalus-dkms.sh has-m2m KVER KDIR  exit status 0 when KVER has
#                                       v4l2-mem2mem itself (for install.sh)
#   daedalus-dkms.sh helper KVER KDIR   builds m2m/v4l2-mem2mem.ko (package
#                                       daedalus-v4l2-m2m)
#   daedalus-dkms.sh module KVER KDIR   builds out/daedalus_v4l2.ko of the
#                                       newest phase (package daedalus-v4l2)
#
# Kernels without v4l2-mem2mem (Debian's amd64 kernels: no
# CONFIG_V4L2_MEM2MEM_DEV) get it built out of tree from
# drivers/media/v4l2-core/v4l2-mem2mem.c of the distribution's kernel
# source, /usr/src/linux-source-X.Y.tar.* (Debian: package linux-source-X.Y).
# daedalus_v4l2.ko links against it, so "module" builds the helper too, in
# its own build directory, for its Module.symvers (modpost needs the
# symbols' CRCs; built from the same source against the same headers they
# are those of the helper that DKMS installs).
#
# DAEDALUS_LINUX_SOURCE_DIR (default /usr/src) is where the linux-source
# tarballs are looked for; it exists for the tests.

set -eu

M2M_SOURCE=drivers/media/v4l2-core/v4l2-mem2mem.c

die() {
	echo "daedalus-v4l2: error: $*" >&2
	exit 1
}

warn() {
	echo "daedalus-v4l2: warning: $*" >&2
}

# The kernel provides v4l2-mem2mem itself (built in or as a module).
kernel_has_m2m() {
	if [ -f "$kdir/.config" ] &&
	   grep -Eq '^CONFIG_V4L2_MEM2MEM_DEV=[ym]' "$kdir/.config"; then
		return 0
	fi
	[ -f "$kdir/Module.symvers" ] &&
		grep -q '[[:space:]]v4l2_m2m_init[[:space:]]' "$kdir/Module.symvers"
}

series() {
	echo "$kver" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p'
}

# The linux-source tarball of KVER's series, or nothing.
source_tarball() {
	for t in "${DAEDALUS_LINUX_SOURCE_DIR:-/usr/src}/linux-source-$(series)".tar.*; do
		[ -f "$t" ] && echo "$t" && return 0
	done
	return 0
}

missing_source() {
	s=$(series)
	echo "kernel $kver has no v4l2-mem2mem, which daedalus-v4l2 needs: it is built" \
	     "from the kernel's source, and ${DAEDALUS_LINUX_SOURCE_DIR:-/usr/src}/linux-source-$s.tar.xz" \
	     "is missing: install linux-source-$s (apt-get install linux-source-$s)"
}

jobs() {
	nproc 2>/dev/null || echo 1
}

# Build v4l2-mem2mem.ko into DIR (DIR/v4l2-mem2mem.ko, DIR/Module.symvers).
build_helper() {
	dir=$1
	tarball=$(source_tarball)
	[ -n "$tarball" ] || die "$(missing_source)"
	top=linux-source-$(series)
	tmp=$(mktemp -d)
	# (--occurrence: tar stops reading once both members are out)
	if ! tar -xf "$tarball" -C "$tmp" --occurrence=1 "$top/$M2M_SOURCE" "$top/Makefile"; then
		rm -rf "$tmp"
		die "$tarball lacks $top/$M2M_SOURCE"
	fi
	# Debian's linux-source-X.Y may be of another patch release than the
	# headers (its newest, when the kernel is older): say so.
	have=$(sed -n 's/^VERSION = //p; s/^PATCHLEVEL = //p; s/^SUBLEVEL = //p' \
		"$tmp/$top/Makefile" | paste -sd.)
	want=$(make -s -C "$kdir" kernelversion 2>/dev/null || true)
	if [ -n "$want" ] && [ "$have" != "$want" ]; then
		warn "kernel $kver is $want but $tarball is $have:" \
		     "v4l2-mem2mem is built from a different source release"
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$tmp/$top/$M2M_SOURCE" "$dir/v4l2-mem2mem.c"
	rm -rf "$tmp"
	echo 'obj-m := v4l2-mem2mem.o' >"$dir/Kbuild"
	echo "daedalus-v4l2: building v4l2-mem2mem.ko for $kver from $tarball ($have)"
	make -j"$(jobs)" -C "$kdir" M="$PWD/$dir" modules
}

[ $# -eq 3 ] || die "usage: $0 check|has-m2m|helper|module KVER KDIR"
action=$1
kver=$2
kdir=$3
[ -f "$kdir/Makefile" ] ||
	die "no kernel headers for $kver in $kdir: install linux-headers-$kver"

case $action in
check)
	if ! kernel_has_m2m && [ -z "$(source_tarball)" ]; then
		die "$(missing_source)"
	fi
	;;
has-m2m)
	kernel_has_m2m
	;;
helper)
	kernel_has_m2m &&
		die "kernel $kver provides v4l2-mem2mem itself: there is nothing to build"
	build_helper m2m
	;;
module)
	extra=
	if ! kernel_has_m2m; then
		build_helper m2m-symbols
		extra="KBUILD_EXTRA_SYMBOLS=$PWD/m2m-symbols/Module.symvers"
	fi
	# PHASE: phases/Makefile's default, the newest phase of the tree.
	# shellcheck disable=SC2086 # ($extra: one word or none)
	make -j"$(jobs)" -C phases KVER="$kver" KDIR="$kdir" BUILD="$PWD/out" $extra
	;;
*)
	die "unknown action $action (check, has-m2m, helper or module)"
	;;
esac
