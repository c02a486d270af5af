#!/usr/bin/env bash
# Run by `make demo` inside a running fleet (integration/cmd/fleet sets
# FLEET_FLAKE and FLEET_SSH_CONFIG): list the hosts, deploy them, and show
# what each one runs afterwards.
set -euo pipefail
: "${FLEET_FLAKE:?run through make demo}" "${FLEET_SSH_CONFIG:?run through make demo}"

# The demo's own Nix settings: no binary cache (none is reachable here).
# A user's NIX_CONFIG is kept and extended, never replaced.
export NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG
}substituters ="

deployctl=./bin/deployctl
run() {
  printf '\n$ %s\n' "$*" >&2
  "$@"
}

run "$deployctl" --flake "$FLEET_FLAKE" --ssh-config "$FLEET_SSH_CONFIG" list
run "$deployctl" --flake "$FLEET_FLAKE" --ssh-config "$FLEET_SSH_CONFIG" deploy --all

printf '\nWhat each host runs now (read over plain OpenSSH):\n' >&2
for host in $(awk '$1 == "Host" && $2 != "*" { print $2 }' "$FLEET_SSH_CONFIG"); do
  ssh -F "$FLEET_SSH_CONFIG" "$host" '
    printf "  %-6s current-system=%s\n" "'"$host"'" "$(readlink /run/current-system)"
    printf "         service: %s (pid %s), store paths: %s\n" "$(cat /run/fixture/health)" "$(cat /run/fixture/service.pid)" "$(ls /nix/store | grep -vc "\.drv$")"
  '
done

# The same, as deployctl reads it: running, booted and profile system,
# lock, and the last deploy from each host's journal.
run "$deployctl" --flake "$FLEET_FLAKE" --ssh-config "$FLEET_SSH_CONFIG" status --all
