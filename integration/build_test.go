package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/nixtest"
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
	// Not on a terminal: one plain line per event, no control characters.
	for _, h := range []string{"alpha", "gamma"} {
		if !regexp.MustCompile(`(?m)^\[` + h + `\] building \(([0-9]+ derivations?|nothing to build: in the store already)\)$`).MatchString(r.stderr) {
			t.Errorf("no per-host building line for %s:\n%s", h, r.stderr)
		}
	}
	if strings.ContainsAny(r.stderr, "\r\x1b") {
		t.Errorf("output to a pipe has control characters:\n%q", r.stderr)
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

// inLocalStore reports whether this machine's store holds path.
func inLocalStore(t *testing.T, path string) bool {
	t.Helper()
	return exec.Command("nix-store", "--check-validity", path).Run() == nil
}

// TestBuildElsewhere: systems built on a builder (a machine outside the
// flake, or a host of it) or on their own target end up in that machine's
// store, never in this machine's, and a push delivers them from there.
func TestBuildElsewhere(t *testing.T) {
	nonce := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"}, fixture.Host{Name: "gamma"}, fixture.Host{Name: "builder"})
	e.writeFlake(
		fixture.Host{Name: "alpha", Revision: nonce},
		fixture.Host{Name: "beta", Revision: nonce, Deployment: map[string]any{"buildHost": "gamma"}},
		fixture.Host{Name: "gamma", Revision: nonce, Deployment: map[string]any{"buildOnTarget": true}},
		// Nothing listens there: its build fails, alone.
		fixture.Host{Name: "delta", Revision: nonce, Deployment: map[string]any{"buildHost": "root@127.0.0.254"}},
	)
	builder := "root@" + e.fleet.Host("builder").Addr
	top := map[string]string{}
	for _, h := range []string{"alpha", "beta", "gamma"} {
		top[h] = e.toplevel(h)
	}

	// --build-host: a machine that is no host of the flake.
	m := filepath.Join(t.TempDir(), "m.json")
	r := e.deployctl("build", "alpha", "--build-host", builder, "--manifest-out", m)
	r.wantCode(t, 0)
	if !regexp.MustCompile(`(?m)^\[alpha\] building \([1-9][0-9]* derivations?\)$`).MatchString(r.stderr) {
		t.Errorf("no count of what the builder builds for alpha:\n%s", r.stderr)
	}
	var doc struct {
		Hosts map[string]struct {
			Toplevel, BuiltOn string
			ClosurePaths      int
			NarSize           int64
		}
		Builders map[string]struct{ Host, User string }
	}
	data, err := os.ReadFile(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	a := doc.Hosts["alpha"]
	if a.Toplevel != top["alpha"] || a.BuiltOn != builder || a.ClosurePaths < 2 || a.NarSize <= 0 {
		t.Errorf("manifest: alpha = %+v, want built on %s, toplevel %s, with its closure's size", a, builder, top["alpha"])
	}
	if b := doc.Builders[builder]; b.Host != e.fleet.Host("builder").Addr || b.User != "root" {
		t.Errorf("manifest: builder %s recorded as %+v", builder, b)
	}
	if got := e.ssh("builder", "readlink /nix/var/nix/gcroots/deployctl/build-alpha"); got != top["alpha"] {
		t.Errorf("builder: GC root build-alpha → %q, want %s", got, top["alpha"])
	}
	e.ssh("builder", "nix-store --verify-path "+top["alpha"])
	if inLocalStore(t, top["alpha"]) {
		t.Errorf("alpha's system, built on the builder, is in this machine's store")
	}

	// The push goes builder → target, from the manifest alone.
	r = e.deployctl("deploy", "--manifest", m, "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, `from="builder `+builder+`"`) {
		t.Errorf("the push does not say it came from the builder:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != top["alpha"] {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, top["alpha"])
	}
	e.verifyClosure("alpha", top["alpha"])
	if inLocalStore(t, top["alpha"]) {
		t.Errorf("pushing from the builder put alpha's system in this machine's store")
	}

	// A manifest whose system is gone from its builder fails before any
	// host is touched, naming the path.
	e.ssh("builder", "rm /nix/var/nix/gcroots/deployctl/build-alpha && nix-store --delete "+top["alpha"])
	e.ssh("alpha", "rm -f /run/current-system")
	r = e.deployctl("deploy", "--manifest", m, "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "not in the store of "+builder) || !strings.Contains(r.stderr, top["alpha"]) {
		t.Errorf("a system missing from its builder is not named as such:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "[alpha] connected") || e.currentSystem("alpha") != "" {
		t.Errorf("alpha was contacted or switched although its system is missing:\n%s", r.stderr)
	}

	// deployment.buildHost naming a host of the flake, and buildOnTarget;
	// an unreachable builder fails its host only.
	r = e.deployctl("deploy", "beta", "gamma", "delta")
	r.wantCode(t, 3)
	for h, on := range map[string]string{"beta": "gamma", "gamma": "gamma"} {
		if got := e.currentSystem(h); got != top[h] {
			t.Errorf("%s: /run/current-system = %q, want %s", h, got, top[h])
		}
		if got := e.ssh(on, "readlink /nix/var/nix/gcroots/deployctl/build-"+h); got != top[h] {
			t.Errorf("%s: GC root build-%s → %q, want %s", on, h, got, top[h])
		}
		if inLocalStore(t, top[h]) {
			t.Errorf("%s's system, built on %s, is in this machine's store", h, on)
		}
	}
	if !strings.Contains(r.stderr, "[gamma] built on the target: nothing to push") {
		t.Errorf("gamma's push does not say the system is already there:\n%s", r.stderr)
	}
	if !regexp.MustCompile(`(?m)^  delta +FAILED +\S+ +build: connect to build host root@127\.0\.0\.254: `).MatchString(r.stderr) {
		t.Errorf("delta's unreachable builder is not reported as its build failure:\n%s", r.stderr)
	}

	// A manifest of a system built on its target: the check and the
	// activation happen there.
	m2 := filepath.Join(t.TempDir(), "m2.json")
	e.deployctl("build", "gamma", "--manifest-out", m2).wantCode(t, 0)
	if data, _ := os.ReadFile(m2); !strings.Contains(string(data), `"builtOn": "target"`) {
		t.Errorf("gamma's manifest does not say it was built on the target:\n%s", data)
	}
	r = e.deployctl("deploy", "--manifest", m2, "gamma", "--action", "test")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[gamma] built on the target: nothing to push") {
		t.Errorf("deploy --manifest of a target-built system:\n%s", r.stderr)
	}
}

// TestOneEvaluationOneBuild: a deploy to the whole fleet evaluates every
// host in one nix process and builds every system in one nix build, as a
// logging nix first on PATH shows; with --eval-chunk N, each chunk of N
// hosts is evaluated (and built) by a process of its own.
func TestOneEvaluationOneBuild(t *testing.T) {
	names := []string{"alpha", "beta", "gamma", "delta", "epsilon"}
	flake := func(nonce string) []fixture.Host {
		var specs []fixture.Host
		for _, n := range names {
			specs = append(specs, fixture.Host{Name: n, Revision: nonce})
		}
		return specs
	}
	e := startFleet(t, flake(fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()))...)
	dir, calls := nixtest.LoggingNix(t)
	deploy := func(wantEvals, wantBuilds int, args ...string) {
		t.Helper()
		calls()
		r := e.deployctlWith([]string{"PATH=" + dir + ":" + os.Getenv("PATH")}, append([]string{"deploy", "--all"}, args...)...)
		r.wantCode(t, 0)
		lines := calls()
		if len(lines) == 0 {
			t.Fatal("the logging nix was never run")
		}
		count := map[string]int{}
		for _, line := range lines {
			for _, sub := range []string{" eval ", " build "} {
				if strings.Contains(line, sub) {
					count[strings.TrimSpace(sub)]++
				}
			}
			if strings.Contains(line, " path-info ") && !strings.Contains(line, "--derivation") {
				count["path-info"]++
			}
		}
		// The pushes read the metadata of every host's closure at once.
		if count["path-info"] != 1 {
			t.Errorf("the pushes to %d hosts ran nix path-info %d times, want once", len(names), count["path-info"])
		}
		if count["eval"] != wantEvals || count["build"] != wantBuilds {
			t.Errorf("deploy --all %s to %d hosts ran nix eval %d times and nix build %d times, want %d and %d; calls:\n%s",
				strings.Join(args, " "), len(names), count["eval"], count["build"], wantEvals, wantBuilds, strings.Join(lines, "\n"))
		}
		for _, n := range names {
			if got, want := e.currentSystem(n), e.toplevel(n); got != want {
				t.Errorf("%s: /run/current-system = %q, want %s", n, got, want)
			}
		}
	}
	deploy(1, 1)
	// Chunks of 2: the deployment options in one evaluation, then three
	// chunks, each evaluated and built by its own processes.
	e.writeFlake(flake(fmt.Sprintf("%s-chunked-%d", t.Name(), time.Now().UnixNano()))...)
	deploy(4, 3, "--eval-chunk", "2")
}

// TestBuilderServesManyHosts: one builder builds for more hosts than sshd
// allows sessions on one connection (10 by default, as on the fleet):
// deployctl keeps within that, and every host is built.
func TestBuilderServesManyHosts(t *testing.T) {
	nonce := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	e := startFleet(t, fixture.Host{Name: "builder"})
	specs := []fixture.Host{{Name: "builder"}}
	for i := range 14 {
		specs = append(specs, fixture.Host{Name: fmt.Sprintf("h%02d", i), Revision: nonce, Deployment: map[string]any{"targetHost": nil}})
	}
	// One more host whose build fails there: its error is Nix's, on the
	// builder, under its name; the others are built all the same.
	specs = append(specs, fixture.Host{Name: "hbroken", Revision: nonce, BuildFail: true, Deployment: map[string]any{"targetHost": nil}})
	e.writeFlake(specs...)
	r := e.deployctl("build", "h*", "--build-host", "builder")
	r.wantCode(t, 3)
	if n := strings.Count(r.stderr, " built on builder "); n != 14 {
		t.Errorf("%d of 14 hosts built on the builder:\n%s", n, r.stderr)
	}
	if !regexp.MustCompile(`(?m)^  hbroken +FAILED +build: nix-store --realise \S+ on root@builder: exit status 100; its output ends:$`).MatchString(r.stderr) ||
		!strings.Contains(r.stderr, "fixture: this build fails on purpose") {
		t.Errorf("the failed remote build is not reported with Nix's words under its host:\n%s", r.stderr)
	}
	// In chunks of 2, eight chunks build on the one builder as they are
	// evaluated: they take turns on its connection rather than each
	// holding sessions the others wait for.
	r = e.deployctl("build", "h*", "--build-host", "builder", "--eval-chunk", "2")
	r.wantCode(t, 3)
	if n := strings.Count(r.stderr, " built on builder "); n != 14 {
		t.Errorf("in chunks, %d of 14 hosts built on the builder:\n%s", n, r.stderr)
	}
}
