#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs daedalus-v4l2 on this machine from a checkout, as root:
#
#   sudo shared/install/install.sh [--prefix DIR] [--kernel REL]... [--no-start]
#   sudo shared/install/install.sh --uninstall [--prefix DIR] [--no-start]
#   shared/install/install.sh --stage-dkms DIR
#
#   --prefix DIR   the daemon's virtual environment (default /opt/daedalus-v4l2)
#   --kernel REL   a kernel release to build the modules for (repeatable;
#                  default: the running kernel, uname -r)
#   --no-start     load, start and reload nothing: for a root file system
#                  that another kernel boots (the testbed's)
#   --uninstall    remove everything this script installs (the system user
#                  daedalusd stays, as packages leave theirs)
#   --stage-dkms DIR  only write the two DKMS source trees into DIR (what
#                  goes to /usr/src; for tests and packaging; no root needed)
#
# What it does, each step idempotent (a second run replaces the same files
# and the same DKMS version):
#   1. checks the tools (dkms, python3 -m venv, a C compiler, the kernel
#      headers, the kernel source where v4l2-mem2mem must be built) and names
#      the Debian packages that provide what is missing;
#   2. makes a virtual environment in PREFIX and pip-installs the checkout's
#      distributions into it (daemon: PREFIX/bin/daedalusd; the
#      daedalus-v4l2 command with doctor: PREFIX/bin/daedalus-v4l2);
#   3. copies the DKMS trees to /usr/src/daedalus-v4l2{,-m2m}-VERSION and
#      runs dkms add/build/install for each kernel (the helper only where
#      the kernel lacks v4l2-mem2mem);
#   4. installs daedalusd.service (/etc/systemd/system, PREFIX substituted),
#      the udev rule, the modprobe.d, modules-load.d and sysusers.d files;
#      creates the user daedalusd; enables the unit;
#   5. unless --no-start, when systemd runs: reloads systemd and udev, loads
#      the module (when the running kernel is one of the kernels) and
#      (re)starts daedalusd.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
PREFIX=/opt/daedalus-v4l2
# The distribution's Python, not whichever python3 comes first in PATH (a
# pyenv or a developer's virtualenv under /root would be unreadable to the
# daemon's user and hidden by the unit's ProtectHome=).
PYTHON=${DAEDALUS_PYTHON:-/usr/bin/python3}
KERNELS=()
START=1
UNINSTALL=0
STAGE=
PACKAGES=(daedalus-v4l2 daedalus-v4l2-m2m)
UNIT=daedalusd.service
ETC_FILES=(
	"udev/70-daedalus-v4l2.rules:/etc/udev/rules.d/70-daedalus-v4l2.rules"
	"etc/modprobe.d/daedalus-v4l2.conf:/etc/modprobe.d/daedalus-v4l2.conf"
	"etc/modules-load.d/daedalus-v4l2.conf:/etc/modules-load.d/daedalus-v4l2.conf"
	"etc/sysusers.d/daedalusd.conf:/etc/sysusers.d/daedalusd.conf"
)

say() {
	echo "daedalus-v4l2 install: $*"
}

die() {
	echo "daedalus-v4l2 install: error: $*" >&2
	exit 1
}

usage() {
	sed -n '4,19s/^# \{0,1\}//p' "$0"
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--prefix) [ $# -ge 2 ] || usage 2; PREFIX=$2; shift ;;
	--prefix=*) PREFIX=${1#*=} ;;
	--kernel) [ $# -ge 2 ] || usage 2; KERNELS+=("$2"); shift ;;
	--kernel=*) KERNELS+=("${1#*=}") ;;
	--no-start) START=0 ;;
	--uninstall) UNINSTALL=1 ;;
	--stage-dkms) [ $# -ge 2 ] || usage 2; STAGE=$2; shift ;;
	-h|--help) usage 0 ;;
	*) echo "unknown option: $1" >&2; usage 2 ;;
	esac
	shift
done
[ ${#KERNELS[@]} -gt 0 ] || KERNELS=("$(uname -r)")
case $PREFIX in
/*) ;;
*) die "--prefix must be an absolute path: $PREFIX" ;;
esac

# PACKAGE_VERSION of a package's dkms.conf.
dkms_version() {
	sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$HERE/dkms/$1/dkms.conf"
}

# The DKMS source tree of package $1 in DIR $2, as DIR/PACKAGE-VERSION (its
# path is printed). The module's keeps the checkout's layout (phases/Kbuild
# includes ../shared/proto/include): every phase directory (the newest is the
# phase built) with its layer.mk and kernel/.
stage_dkms() {
	local pkg=$1 tree d
	tree=$2/$pkg-$(dkms_version "$pkg")
	rm -rf "$tree"
	mkdir -p "$tree"
	install -m 644 "$HERE/dkms/$pkg/dkms.conf" "$tree/dkms.conf"
	install -m 755 "$HERE/dkms/daedalus-dkms.sh" "$tree/daedalus-dkms.sh"
	if [ "$pkg" = daedalus-v4l2 ]; then
		mkdir -p "$tree/phases" "$tree/shared/proto"
		install -m 644 "$TOP/phases/Kbuild" "$TOP/phases/Makefile" "$tree/phases/"
		for d in "$TOP"/phases/[0-9]*.[0-9]*-*/; do
			d=${d%/}
			mkdir -p "$tree/phases/${d##*/}"
			[ ! -f "$d/layer.mk" ] || install -m 644 "$d/layer.mk" "$tree/phases/${d##*/}/"
			[ ! -d "$d/kernel" ] || cp -R "$d/kernel" "$tree/phases/${d##*/}/"
		done
		cp -R "$TOP/shared/proto/include" "$tree/shared/proto/"
	fi
	echo "$tree"
}

if [ -n "$STAGE" ]; then
	mkdir -p "$STAGE"
	for pkg in "${PACKAGES[@]}"; do
		stage_dkms "$pkg" "$STAGE"
	done
	exit 0
fi

[ "$(id -u)" = 0 ] || die "run it as root (sudo $0 ...)"

systemd_runs() {
	[ "$START" = 1 ] && [ -d /run/systemd/system ]
}

# The kernels a package is built for now (dkms status), to build again
# after replacing its tree.
dkms_kernels() {
	dkms status -m "$1" 2>/dev/null | sed -n 's/^[^,]*, \([^,]*\), [^:]*: .*/\1/p' | sort -u
}

dkms_remove() {
	local pkg=$1 v
	for v in $(dkms status -m "$pkg" 2>/dev/null | sed -n 's|^[^/]*/\([^,:]*\)[,:].*|\1|p' | sort -u); do
		say "dkms remove $pkg/$v (all kernels)"
		dkms remove -m "$pkg" -v "$v" --all >/dev/null
	done
	rm -rf /usr/src/"$pkg"-[0-9]*
}

uninstall() {
	if systemd_runs; then
		say "stopping $UNIT"
		systemctl disable --now "$UNIT" || true
		modprobe -r daedalus_v4l2 2>/dev/null || true
	elif [ -e "/etc/systemd/system/$UNIT" ]; then
		systemctl --root=/ disable "$UNIT" >/dev/null 2>&1 || true
	fi
	if command -v dkms >/dev/null; then
		for pkg in "${PACKAGES[@]}"; do
			dkms_remove "$pkg"
		done
	fi
	rm -f "/etc/systemd/system/$UNIT"
	say "removed /etc/systemd/system/$UNIT"
	for f in "${ETC_FILES[@]}"; do
		rm -f "${f#*:}"
		say "removed ${f#*:}"
	done
	if [ -f "$PREFIX/pyvenv.cfg" ] && [ -e "$PREFIX/bin/daedalusd" ]; then
		rm -rf "$PREFIX"
		say "removed $PREFIX"
	elif [ -e "$PREFIX" ]; then
		say "left $PREFIX: not a virtual environment with daedalusd"
	fi
	if systemd_runs; then
		systemctl daemon-reload
		udevadm control --reload
	fi
	say "the system user daedalusd stays (userdel daedalusd to remove it)"
}

if [ "$UNINSTALL" = 1 ]; then
	uninstall
	exit 0
fi

# 1. Tools.
missing=()
command -v dkms >/dev/null || missing+=(dkms)
command -v make >/dev/null && command -v gcc >/dev/null || missing+=(build-essential)
command -v tar >/dev/null && command -v xz >/dev/null || missing+=(xz-utils)
[ -x "$PYTHON" ] || missing+=(python3)
if [ -x "$PYTHON" ]; then
	"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
	[ -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ] ||
		missing+=(python3-dev)
fi
for k in "${KERNELS[@]}"; do
	[ -f "/lib/modules/$k/build/Makefile" ] || missing+=("linux-headers-$k")
done
[ ${#missing[@]} -eq 0 ] ||
	die "missing: ${missing[*]} (apt-get install ${missing[*]})"
for k in "${KERNELS[@]}"; do
	# (the kernel source, where v4l2-mem2mem must be built: names its package)
	sh "$HERE/dkms/daedalus-dkms.sh" check "$k" "/lib/modules/$k/build"
done

# 2. The daemon's virtual environment.
dists=()
for p in "$TOP"/shared/*/pyproject.toml "$TOP"/phases/*/py/pyproject.toml; do
	dists+=("$(dirname "$p")")
done
if [ -x "$PREFIX/bin/python" ] &&
	! grep -qxF "home = $(dirname "$(readlink -f "$PYTHON")")" "$PREFIX/pyvenv.cfg"; then
	say "$PREFIX was made with another Python: making it again with $PYTHON"
	rm -rf "$PREFIX"
fi
if [ ! -x "$PREFIX/bin/python" ]; then
	say "creating the virtual environment $PREFIX with $PYTHON"
	"$PYTHON" -m venv "$PREFIX"
fi
say "pip install into $PREFIX: ${dists[*]#"$TOP"/}"
# (pip builds and reinstalls a distribution given by its path every time,
# though its version number stays the same from one commit to the next)
"$PREFIX/bin/pip" install --quiet "${dists[@]}"
[ -x "$PREFIX/bin/daedalusd" ] || die "$PREFIX/bin/daedalusd is missing after pip install"
say "installed $PREFIX/bin/daedalusd and $PREFIX/bin/daedalus-v4l2"

# 3. DKMS.
for pkg in "${PACKAGES[@]}"; do
	mapfile -t previous < <(dkms_kernels "$pkg")
	dkms_remove "$pkg"
	# (the kernels asked for and those it was built for before; the helper
	# only for those without v4l2-mem2mem)
	kernels=()
	for k in $(printf '%s\n' "${KERNELS[@]}" "${previous[@]}" | sort -u); do
		[ -f "/lib/modules/$k/build/Makefile" ] || continue
		if [ "$pkg" = daedalus-v4l2-m2m ] &&
		   sh "$HERE/dkms/daedalus-dkms.sh" has-m2m "$k" "/lib/modules/$k/build"; then
			say "$pkg is not needed for $k: the kernel has v4l2-mem2mem"
			continue
		fi
		kernels+=("$k")
	done
	# Added, DKMS 3.0.10's autoinstall fails (exit 11, and with it a kernel
	# package's postinst) on a kernel its BUILD_EXCLUSIVE_CONFIG excludes:
	# the helper is added only where some kernel needs it.
	if [ "$pkg" = daedalus-v4l2-m2m ] && [ ${#kernels[@]} -eq 0 ]; then
		continue
	fi
	version=$(dkms_version "$pkg")
	src=$(stage_dkms "$pkg" /usr/src)
	dkms add -m "$pkg" -v "$version" >/dev/null
	say "dkms add $pkg/$version ($src)"
	for k in "${kernels[@]}"; do
		dkms build -m "$pkg" -v "$version" -k "$k" ||
			die "dkms build -m $pkg -v $version -k $k failed: see" \
			    "/var/lib/dkms/$pkg/$version/build/make.log"
		dkms install -m "$pkg" -v "$version" -k "$k"
		say "dkms install $pkg/$version for $k"
	done
done

# 4. The unit, udev rule, modprobe/modules-load/sysusers files, the user.
sed "s|@PREFIX@|$PREFIX|g" "$HERE/systemd/$UNIT" >"/etc/systemd/system/$UNIT.tmp"
chmod 644 "/etc/systemd/system/$UNIT.tmp"
mv "/etc/systemd/system/$UNIT.tmp" "/etc/systemd/system/$UNIT"
say "installed /etc/systemd/system/$UNIT (ExecStart=$PREFIX/bin/daedalusd --user daedalusd)"
for f in "${ETC_FILES[@]}"; do
	mkdir -p "$(dirname "${f#*:}")"
	install -m 644 "$HERE/${f%%:*}" "${f#*:}"
	say "installed ${f#*:}"
done
if command -v systemd-sysusers >/dev/null; then
	systemd-sysusers /etc/sysusers.d/daedalusd.conf
elif ! getent passwd daedalusd >/dev/null; then
	useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin \
		--comment "daedalus-v4l2 decoding daemon" daedalusd
fi
getent passwd daedalusd >/dev/null || die "the user daedalusd was not created"
say "user: $(getent passwd daedalusd)"
# (--root=/ works whether or not systemd runs: it only makes the links)
systemctl --root=/ enable "$UNIT" 2>&1 | sed 's/^/  /'
say "enabled $UNIT"

# 5. Start.
if systemd_runs; then
	systemctl daemon-reload
	udevadm control --reload
	say "reloaded systemd and udev"
	if printf '%s\n' "${KERNELS[@]}" | grep -qx "$(uname -r)"; then
		systemctl stop "$UNIT" || true
		modprobe -r daedalus_v4l2 2>/dev/null || true
		modprobe daedalus_v4l2
		udevadm settle
		systemctl restart "$UNIT"
		say "loaded daedalus_v4l2 and started $UNIT"
	else
		say "the running kernel $(uname -r) is not one of ${KERNELS[*]}: nothing loaded"
	fi
else
	say "--no-start or systemd not running: nothing loaded or started"
fi
say "done"
