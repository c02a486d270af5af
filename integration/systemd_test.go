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
