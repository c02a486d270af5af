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
