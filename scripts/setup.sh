#!/usr/bin/env bash
# Installs what `make demo` and `make test` need: Nix (nix-bin), OpenSSH's
# server and client, util-linux's unshare, sudo (the fleet's non-root
# deploy user escalates with it), debootstrap and systemd-container (the
# fleet's systemd hosts). On Debian as root it installs
# what is missing with apt-get; elsewhere it names what to install and fails.
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || missing+=("$2"); }
need nix nix-bin
need nix-store nix-bin
need /usr/sbin/sshd openssh-server
need ssh openssh-client
need ssh-keygen openssh-client
need unshare util-linux
need sudo sudo
# The fleet's systemd hosts: a Debian root (debootstrap) booted with
# systemd-nspawn.
need debootstrap debootstrap
need systemd-nspawn systemd-container
need go golang
# Debian splits Nix's configuration (build users, sandbox = false) into
# nix-setup-systemd; nix-bin alone cannot build as root.
if command -v apt-get >/dev/null 2>&1 && [ ! -e /etc/nix/nix.conf ]; then
  missing+=(nix-setup-systemd)
fi

# Go is the toolchain, not a runtime dependency: say so rather than install a distro Go.
if [[ " ${missing[*]-} " == *" golang "* ]]; then
  echo "setup: Go is missing: install Go 1.26 or newer (https://go.dev/dl) and put it on PATH" >&2
  exit 1
fi
pkgs=$(printf '%s\n' "${missing[@]-}" | sed '/^$/d' | sort -u | tr '\n' ' ')
if [ -z "$pkgs" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing: $pkgs" >&2
  echo "setup: install them with your package manager (Debian: apt-get install $pkgs), then run this again" >&2
  exit 1
fi
echo "setup: installing $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting services: the test fleet runs its own
# sshd processes on loopback addresses, and a system sshd on 0.0.0.0:22 would
# take their port.
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
# (An if, not &&: the trap's last status would become the script's.)
cleanup() { if [ -n "$created_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq </dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs </dev/null >/dev/null
echo "setup: done" >&2
