#!/usr/bin/env bash
# Builds the root filesystem of the test fleet's systemd hosts: Debian
# RELEASE (bookworm: Nix 2.8; trixie: Nix 2.26) with systemd, dbus,
# openssh-server and nix-bin, into DEST (atomically: DEST appears whole or
# not at all). integration/fleet runs it when its cached root is missing.
# Needs root, debootstrap and a Debian mirror (MIRROR, default
# deb.debian.org).
set -euo pipefail
release=$1 dest=$2
mirror=${MIRROR:-http://deb.debian.org/debian}
tmp="$dest.tmp.$$"
cleanup() {
  umount "$tmp/proc" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$(dirname "$dest")"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,openssh-server,iproute2,util-linux,procps \
  "$release" "$tmp" "$mirror" >&2
# nix-bin cannot be listed in --include (debootstrap does not resolve one
# of its virtual dependencies).
mount -t proc proc "$tmp/proc"
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
chroot "$tmp" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nix-bin' >&2
chroot "$tmp" apt-get clean
umount "$tmp/proc"
# Each host gets its own keys and settings in its overlay; nothing of
# this machine's stays in the root.
rm -f "$tmp"/etc/ssh/ssh_host_* "$tmp/etc/resolv.conf"
mkdir -p "$tmp/etc/nix"
# No build users (the tests build nothing on these hosts as nixbld) and no
# binary cache (none is reachable).
printf 'build-users-group =\nsubstituters =\n' > "$tmp/etc/nix/nix.conf"
# A container has no console to log in on.
chroot "$tmp" systemctl mask getty@tty1.service console-getty.service >/dev/null 2>&1 || true
mv "$tmp" "$dest"
trap - EXIT
