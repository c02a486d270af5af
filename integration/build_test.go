package integration

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/integration/fixture"
)

// TestBuildKeepsGoing: a host whose evaluation or build fails is reported
// with Nix's error and the host's name; the others are built (exit 3).
func TestBuildKeepsGoing(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	e.writeFlake(
		fixture.Host{Name: "alpha"},
		fixture.Host{Name: "beta", EvalFail: "beta's configuration is broken on purpose"},
		fixture.Host{Name: "gamma", BuildFail: true, Revision: t.Name()},
		fixture.Host{Name: "delta", EvalMissingAttr: true},
	)
	r := e.deployctl("build", "--all", "--json")
	r.wantCode(t, 3)
	// --json prints the manifest.
	var doc struct {
		Hosts map[string]struct{ Step, Error, Toplevel string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("build --json: %v\n%s", err, r.stdout)
	}
	for host, h := range doc.Hosts {
		switch host {
		case "alpha":
			if _, err := os.Stat(h.Toplevel); h.Error != "" || err != nil {
				t.Errorf("alpha: toplevel %q error %q: %v", h.Toplevel, h.Error, err)
			}
		case "beta":
			if h.Step != "eval" || !strings.Contains(h.Error, "beta's configuration is broken on purpose") {
				t.Errorf("beta: %+v", h)
			}
		case "delta":
			if h.Step != "eval" || !strings.Contains(h.Error, "fixtureMissingAttribute") {
				t.Errorf("delta: %+v", h)
			}
		case "gamma":
			if h.Step != "build" || !strings.Contains(h.Error, "this build fails on purpose") {
				t.Errorf("gamma: %+v", h)
			}
		}
	}
	if len(doc.Hosts) != 4 {
		t.Errorf("build reported %v, want alpha, beta, gamma and delta", doc.Hosts)
	}
	if !regexp.MustCompile(`(?m)^  gamma +FAILED +build: `).MatchString(r.stderr) {
		t.Errorf("summary does not show gamma's failed build:\n%s", r.stderr)
	}
	// deploy goes on with the hosts that built: alpha switches.
	e.deployctl("deploy", "--all").wantCode(t, 3)
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, want)
	}
}

// TestFixtureServiceHealth: the fixture's service reports what the health
// probes of later phases will check, and a host can be made unhealthy.
func TestFixtureServiceHealth(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", Unhealthy: true})
	e.deployctl("deploy", "--all").wantCode(t, 0)
	for host, want := range map[string]string{"alpha": "healthy", "beta": "unhealthy"} {
		if got := e.ssh(host, "cat /run/fixture/health"); got != want {
			t.Errorf("%s: health %q, want %q", host, got, want)
		}
		pid := e.ssh(host, "cat /run/fixture/service.pid")
		if got := e.ssh(host, "cat /run/fixture/service.toplevel"); got != e.toplevel(host) {
			t.Errorf("%s: service runs for %q", host, got)
		}
		if e.ssh(host, "kill -0 "+pid+" && echo alive") != "alive" {
			t.Errorf("%s: service pid %s is not running", host, pid)
		}
	}
}
