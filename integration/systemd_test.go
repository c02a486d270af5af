package integration

import (
	"strings"
	"testing"

	"github.com/deployctl/deployctl/integration/fixture"
)

// TestSystemdSwitchInTransientUnit: on a host that boots systemd, the
// switch runs in a transient unit of its own (the production path, outside
// the SSH session's cgroup); the connection is cut while it runs; the
// switch completes and deployctl reports its true result after
// reconnecting; the unit is gone afterwards.
func TestSystemdSwitchInTransientUnit(t *testing.T) {
	e := startSystemdFleet(t, "bookworm", fixture.Host{Name: "alpha", SwitchSeconds: 3})
	e.deployctl("build", "alpha").wantCode(t, 0)
	var unit string
	r := e.deployctlWatching("switching slowly", func() {
		unit = e.ssh("alpha", "systemctl list-units --plain --no-legend 'deployctl-*-switch.service' | awk '{print $1, $3, $4}'")
		e.cutter("alpha")()
	}, "-v", "deploy", "alpha")
	e.wantSwitchedThroughCut(r, "alpha")
	if !strings.HasPrefix(unit, "deployctl-") || !strings.HasSuffix(unit, "-switch.service active running") {
		t.Errorf("the switch is not a running transient unit: %q", unit)
	}
	if left := e.ssh("alpha", "systemctl list-units --all --plain --no-legend 'deployctl-*' | wc -l"); left != "0" {
		t.Errorf("%s transient units are left", left)
	}
}

// TestSystemdHostsDeployAndRollBack: a full deploy from this machine's Nix
// to hosts that boot systemd, with Debian's Nix 2.8 (bookworm) and 2.26
// (trixie): the native push, whose paths nix-store --verify
// --check-contents accepts, the activation, a health check, and the
// rollback when the check fails.
func TestSystemdHostsDeployAndRollBack(t *testing.T) {
	for release, nixVersion := range map[string]string{"bookworm": "2.8", "trixie": "2.26"} {
		t.Run(release, func(t *testing.T) {
			check := map[string]any{"healthChecks": map[string]any{"cmd": []any{
				map[string]any{"description": "service healthy", "cmd": []string{"grep", "-qx", "healthy", "/run/fixture/health"}, "period": 0.2},
			}}}
			e := startSystemdFleet(t, release, fixture.Host{Name: "alpha", Deployment: check})
			if got := e.ssh("alpha", "nix-store --version"); !strings.Contains(got, " "+nixVersion+".") {
				t.Fatalf("the %s host has %s, want Nix %s", release, got, nixVersion)
			}
			r := e.deployctl("deploy", "alpha")
			r.wantCode(t, 0)
			if !strings.Contains(r.stderr, `cmd check "service healthy": healthy`) {
				t.Errorf("the health check did not run:\n%s", r.stderr)
			}
			old := e.toplevel("alpha")
			if got := e.currentSystem("alpha"); got != old {
				t.Errorf("alpha runs %q, want %s", got, old)
			}
			if out := e.ssh("alpha", "nix-store --verify --check-contents 2>&1; echo status=$?"); !strings.HasSuffix(out, "status=0") || strings.Contains(out, "corrupt") || strings.Contains(out, "error") {
				t.Errorf("nix-store --verify --check-contents on the %s host:\n%s", release, out)
			}

			e.writeFlake(fixture.Host{Name: "alpha", Deployment: check, Unhealthy: true, Revision: "2"})
			r = e.deployctl("deploy", "alpha", "--probe-timeout", "2s")
			r.wantCode(t, 1)
			if !strings.Contains(r.stderr, "a health check failed; rolled back to "+old) {
				t.Errorf("the failing check does not roll back:\n%s", r.stderr)
			}
			if got := e.currentSystem("alpha"); got != old {
				t.Errorf("alpha runs %s after the rollback, want %s", got, old)
			}
			if got := e.profile("alpha"); got != old {
				t.Errorf("alpha's profile is %s after the rollback, want %s", got, old)
			}
		})
	}
}

// TestSystemdFailedUnit: on a host that boots systemd, a system whose
// service unit really fails makes the switch exit 4, which deployctl reads
// from the switch's own unit (it failed with that status) and treats as
// the activation does: the host goes back to the system before; with
// --allow-failed-units it keeps the new one. Every unit of the deploy is
// gone afterwards.
func TestSystemdFailedUnit(t *testing.T) {
	e := startSystemdFleet(t, "bookworm", fixture.Host{Name: "alpha"})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")

	e.writeFlake(fixture.Host{Name: "alpha", FailUnit: true, Revision: "2"})
	r := e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "exited 4") || !strings.Contains(r.stderr, "the following units failed: fixture.service") || !strings.Contains(r.stderr, "rolled back to "+old) {
		t.Errorf("a failed unit is not reported and rolled back:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s, want %s", got, old)
	}
	if state := e.ssh("alpha", "systemctl is-active fixture.service || true"); state != "active" {
		t.Errorf("after the rollback the fixture's service is %q, want active", state)
	}
	if left := e.ssh("alpha", "systemctl list-units --all --plain --no-legend 'deployctl-*' | wc -l"); left != "0" {
		t.Errorf("%s of the deploy's units are left", left)
	}

	r = e.deployctl("deploy", "alpha", "--allow-failed-units")
	r.wantCode(t, 0)
	if got := e.currentSystem("alpha"); got != e.toplevel("alpha") {
		t.Errorf("with --allow-failed-units alpha runs %s, want the new %s", got, e.toplevel("alpha"))
	}
}

// TestSystemdResultOfAKilledSwitch: the connection is cut in the middle of
// a slow switch, whose unit is then killed before it can write its exit
// status; deployctl reconnects and reports what systemd says of the unit
// (killed by signal 9), and the host goes back to the system before.
func TestSystemdResultOfAKilledSwitch(t *testing.T) {
	e := startSystemdFleet(t, "bookworm", fixture.Host{Name: "alpha"})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")

	e.writeFlake(fixture.Host{Name: "alpha", SwitchSeconds: 4, Revision: "2"})
	r := e.deployctlWatching("switching slowly", func() {
		e.cutter("alpha")()
		e.ssh("alpha", "systemctl kill -s KILL 'deployctl-*-switch.service'")
	}, "-v", "deploy", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "the connection was lost") || !strings.Contains(r.stderr, "the switch job was killed by signal 9 (systemd: deployctl-") || !strings.Contains(r.stderr, "Result=signal") {
		t.Errorf("the killed switch is not reported from systemd:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s after its switch was killed, want %s", got, old)
	}
	if left := e.ssh("alpha", "systemctl list-units --all --plain --no-legend 'deployctl-*' | wc -l"); left != "0" {
		t.Errorf("%s of the deploy's units are left", left)
	}
}

// TestSystemdBrokenSSHRollsItselfBack: the dead-man's switch on a host
// that boots systemd. A system that stops ssh.service is switched to; no
// new connection can check in, so the host's watchdog unit rolls it back
// (the old system starts ssh.service again), and deployctl reports it.
func TestSystemdBrokenSSHRollsItselfBack(t *testing.T) {
	confirm := map[string]any{"confirmTimeout": 3}
	e := startSystemdFleet(t, "bookworm", fixture.Host{Name: "alpha", Deployment: confirm})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")

	e.writeFlake(fixture.Host{Name: "alpha", Deployment: confirm, BreaksSSH: true, Revision: "2"})
	r := e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "no new SSH connection to the host could check in within 3s of the switch") ||
		!strings.Contains(r.stderr, "the host rolled itself back to "+old) {
		t.Errorf("deployctl does not report the host's own rollback:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s, want %s", got, old)
	}
	if j := e.journal("alpha"); len(j) != 2 || j[1]["result"] != "rolled back" || j[1]["byWatchdog"] != true {
		t.Errorf("the journal does not record the host's own rollback: %v", j)
	}
}

// TestSystemdPushAsTrustedUser: on a host with current Nix (Debian trixie:
// 2.26) and its nix-daemon, a user in trusted-users with no way to become
// root pushes a system, which its own indirect root then keeps through a
// garbage collection, and builds one on the host, kept the same way.
// (Without a sandbox: the fixture's builder calls /bin/mkdir.)
func TestSystemdPushAsTrustedUser(t *testing.T) {
	user := func(rev string, onTarget bool) fixture.Host {
		return fixture.Host{Name: "alpha", Revision: rev, Deployment: map[string]any{
			"targetUser": "pusher", "privilegeEscalationCommand": []string{}, "buildOnTarget": onTarget}}
	}
	e := startSystemdFleet(t, "trixie", user("1", false))
	e.ssh("alpha", `set -e
useradd --create-home pusher
install -d -o pusher -m 700 ~pusher/.ssh
install -o pusher -m 600 /root/.ssh/authorized_keys ~pusher/.ssh/
printf 'trusted-users = root pusher\nsandbox = false\n' >> /etc/nix/nix.conf
systemd-run --unit fleet-nix-daemon nix-daemon
i=0; until [ -S /nix/var/nix/daemon-socket/socket ]; do i=$((i+1)); [ $i -lt 100 ]; sleep 0.1; done`)
	for _, onTarget := range []bool{false, true} {
		rev, cmd, root := "1", "push", "pushed"
		if onTarget {
			rev, cmd, root = "2", "build", "build-alpha"
		}
		e.writeFlake(user(rev, onTarget))
		top := e.toplevel("alpha")
		e.deployctl(cmd, "alpha").wantCode(t, 0)
		e.gc("alpha")
		e.verifyClosure("alpha", top)
		if got := e.ssh("alpha", "readlink ~pusher/.local/state/deployctl/"+root); got != top {
			t.Errorf("%s: pusher's root %s → %q, want %s", cmd, root, got, top)
		}
	}
}
