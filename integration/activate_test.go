package integration

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
)

// journal reads a host's activation journal.
func (e *testEnv) journal(host string) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(e.ssh(host, "cat /var/lib/deployctl/journal.jsonl 2>/dev/null || true"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			e.t.Fatalf("%s: journal line %q: %v", host, line, err)
		}
		out = append(out, m)
	}
	return out
}

// profile is the store path the host's system profile points at.
func (e *testEnv) profile(host string) string {
	return e.ssh(host, "readlink -f /nix/var/nix/profiles/system || true")
}

// TestFailedSwitchRollsBack: a switch-to-configuration that exits 2 puts
// the host back on exactly the system that ran before (running system and
// profile), the exit code says so, and the journal records it; exit 100
// is a reboot required, not a failure; --no-rollback leaves the host be;
// a failed test activation leaves the profile alone.
func TestFailedSwitchRollsBack(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	e.deployctl("deploy", "--all").wantCode(t, 0)
	old := map[string]string{"alpha": e.toplevel("alpha"), "beta": e.toplevel("beta")}

	e.writeFlake(fixture.Host{Name: "alpha", FailExit: 2, Revision: "2"}, fixture.Host{Name: "beta", Revision: "2"})
	bad, good := e.toplevel("alpha"), e.toplevel("beta")
	r := e.deployctl("deploy", "--all")
	r.wantCode(t, 3)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +activate: switch-to-configuration switch exited 2 \(the activation script failed\); rolled back to ` + regexp.QuoteMeta(old["alpha"])).MatchString(r.stderr) {
		t.Errorf("the summary does not say alpha was rolled back:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old["alpha"] {
		t.Errorf("alpha runs %s after the rollback, want %s", got, old["alpha"])
	}
	if got := e.profile("alpha"); got != old["alpha"] {
		t.Errorf("alpha's profile is %s after the rollback, want %s", got, old["alpha"])
	}
	if got := e.currentSystem("beta"); got != good {
		t.Errorf("beta runs %s, want its new system %s", got, good)
	}
	j := e.journal("alpha")
	if len(j) != 2 || j[1]["result"] != "rolled back" || j[1]["previous"] != old["alpha"] || j[1]["new"] != bad || j[1]["status"] != 2.0 {
		t.Errorf("alpha's journal does not record the rollback: %v", j)
	}
	if e.ssh("alpha", "cat /run/deployctl/lock") != "" {
		t.Errorf("the lock still names a holder after the deploy")
	}

	// --no-rollback leaves the failed system running.
	e.deployctl("deploy", "alpha", "--no-rollback").wantCode(t, 1)
	if got := e.currentSystem("alpha"); got != bad {
		t.Errorf("with --no-rollback alpha runs %s, want the failed %s", got, bad)
	}
	e.writeFlake(fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", Revision: "2"})
	e.deployctl("deploy", "alpha").wantCode(t, 0)

	// Status 100: the switch worked but wants a reboot.
	e.writeFlake(fixture.Host{Name: "alpha", FailExit: 100, Revision: "3"}, fixture.Host{Name: "beta", Revision: "2"})
	r = e.deployctl("deploy", "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "needs a reboot") || e.currentSystem("alpha") != e.toplevel("alpha") {
		t.Errorf("status 100 is not reported as a reboot required, with the new system kept:\n%s", r.stderr)
	}

	// A failed test activation: the previous system runs again and the
	// profile was never touched.
	running, profile := e.currentSystem("alpha"), e.profile("alpha")
	e.writeFlake(fixture.Host{Name: "alpha", FailExit: 2, Revision: "4"}, fixture.Host{Name: "beta", Revision: "2"})
	e.deployctl("deploy", "alpha", "--action", "test").wantCode(t, 1)
	if got := e.currentSystem("alpha"); got != running {
		t.Errorf("after a failed test activation alpha runs %s, want %s", got, running)
	}
	if got := e.profile("alpha"); got != profile {
		t.Errorf("a test activation changed the profile to %s (was %s)", got, profile)
	}
	// Status 4 is a failure unless --allow-failed-units.
	e.writeFlake(fixture.Host{Name: "alpha", FailExit: 4, Revision: "5"}, fixture.Host{Name: "beta", Revision: "2"})
	e.deployctl("deploy", "alpha").wantCode(t, 1)
	if got := e.currentSystem("alpha"); got != running {
		t.Errorf("after a switch with failed units alpha runs %s, want it rolled back to %s", got, running)
	}
	r = e.deployctl("deploy", "alpha", "--allow-failed-units")
	r.wantCode(t, 0)
	if got := e.currentSystem("alpha"); got != e.toplevel("alpha") || !strings.Contains(r.stderr, "some units failed") {
		t.Errorf("--allow-failed-units: alpha runs %s, want %s, with a warning:\n%s", got, e.toplevel("alpha"), r.stderr)
	}
}

// TestSecondDeployRefused: while one deploy switches a host, a second is
// refused at once, naming the first; a lock left by a deploy that died is
// taken over with a warning.
func TestSecondDeployRefused(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha", SwitchSeconds: 3})
	e.deployctl("build", "alpha").wantCode(t, 0)
	// The first deploy's output waits while the second runs.
	var second result
	first := e.deployctlWatching("switching slowly", func() { second = e.deployctl("activate", "alpha") }, "-v", "deploy", "alpha")
	first.wantCode(t, 0)
	second.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +activate: lock: another deploy holds the host: \S+@\S+ \(pid \d+\), since .*, activating ` + regexp.QuoteMeta(e.toplevel("alpha")) + ` \(switch\)`).MatchString(second.stderr) {
		t.Errorf("the second deploy is not refused naming the first:\n%s", second.stderr)
	}
	if len(e.journal("alpha")) != 1 {
		t.Errorf("the refused deploy reached the journal: %v", e.journal("alpha"))
	}

	// A holder whose keeper is gone: taken over, with a warning.
	e.ssh("alpha", `printf '%s\n' '{"id":"x","user":"ghost","machine":"gone","pid":1,"started":"2026-01-01T00:00:00Z","toplevel":"/nix/store/x","action":"switch"}' > /run/deployctl/lock`)
	r := e.deployctl("activate", "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "took over the lock of a deploy that did not finish: ghost@gone (pid 1)") {
		t.Errorf("a stale lock is not taken over with a warning:\n%s", r.stderr)
	}
}

// TestSwitchSurvivesLostConnection: the connection is cut while a slow
// switch runs; the switch completes, and deployctl reconnects and reports
// its true result.
func TestSwitchSurvivesLostConnection(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha", SwitchSeconds: 3})
	e.deployctl("build", "alpha").wantCode(t, 0)
	r := e.deployctlWatching("switching slowly", e.cutter("alpha"), "-v", "deploy", "alpha")
	e.wantSwitchedThroughCut(r, "alpha")
}

// wantSwitchedThroughCut checks a deploy of host whose connection was cut
// during the switch: deployctl said so and succeeded, the host runs the
// new system, and the journal has the deploy's true result.
func (e *testEnv) wantSwitchedThroughCut(r result, host string) {
	e.t.Helper()
	r.wantCode(e.t, 0)
	if !strings.Contains(r.stderr, "the connection was lost") {
		e.t.Errorf("the cut is not reported:\n%s", r.stderr)
	}
	if got, want := e.currentSystem(host), e.toplevel(host); got != want {
		e.t.Errorf("%s runs %q, want %s", host, got, want)
	}
	if j := e.journal(host); len(j) != 1 || j[0]["result"] != "ok" {
		e.t.Errorf("journal after the reconnect: %v", j)
	}
}

// checked is a host whose deployment.healthChecks ask for its service's
// health three ways: a command on the host, HTTP and TCP from here.
func checked(h fixture.Host) fixture.Host {
	h.HTTPPort = 8080
	h.Deployment = map[string]any{"healthChecks": map[string]any{
		"cmd":  []any{map[string]any{"description": "service healthy", "cmd": []string{"grep", "-qx", "healthy", "/run/fixture/health"}, "period": 0.2}},
		"http": []any{map[string]any{"port": 8080, "path": "/health", "period": 0.2, "timeout": 1}},
		"tcp":  []any{map[string]any{"port": 8080, "period": 0.2}},
	}}
	return h
}

// TestFailedProbeRollsBack: health checks run after the switch; when one
// fails, that host goes back to exactly the system it ran before (running
// system and profile) and the run fails, while the other host keeps its
// new system; after a test activation the profile is never touched.
func TestFailedProbeRollsBack(t *testing.T) {
	// A check that cannot run stops the deploy before any host is touched.
	bad := checked(fixture.Host{Name: "beta"})
	bad.Deployment = map[string]any{"healthChecks": map[string]any{"http": []any{map[string]any{"path": "/"}}}}
	e := startFleet(t, checked(fixture.Host{Name: "alpha"}), bad)
	r := e.deployctl("deploy", "--all")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, "beta: deployment.healthChecks.http[0]: port 0 is not a TCP port") || e.currentSystem("alpha") != "" {
		t.Errorf("a bad check is not refused before anything runs (alpha runs %q):\n%s", e.currentSystem("alpha"), r.stderr)
	}

	e.writeFlake(checked(fixture.Host{Name: "alpha"}), checked(fixture.Host{Name: "beta"}))
	r = e.deployctl("deploy", "--all")
	r.wantCode(t, 0)
	for _, check := range []string{`cmd check "service healthy": healthy`, "http check http://127.0.0.", "tcp check 127.0.0."} {
		if !strings.Contains(r.stderr, check) {
			t.Errorf("no %q in the output:\n%s", check, r.stderr)
		}
	}
	old := e.toplevel("alpha")

	e.writeFlake(checked(fixture.Host{Name: "alpha", Unhealthy: true, Revision: "2"}), checked(fixture.Host{Name: "beta", Revision: "2"}))
	r = e.deployctl("deploy", "--all", "--probe-timeout", "3s")
	r.wantCode(t, 3)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +activate: 2 health checks failed; rolled back to ` + regexp.QuoteMeta(old)).MatchString(r.stderr) {
		t.Errorf("the summary does not say alpha failed its checks and was rolled back:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "503 Service Unavailable") || !strings.Contains(r.stderr, `cmd check "service healthy": exit status 1`) {
		t.Errorf("the failed checks' reasons are not shown:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s after failing its checks, want %s", got, old)
	}
	if got := e.profile("alpha"); got != old {
		t.Errorf("alpha's profile is %s after failing its checks, want %s", got, old)
	}
	if got := e.ssh("alpha", "cat /run/fixture/health"); got != "healthy" {
		t.Errorf("alpha's service reports %q after the rollback", got)
	}
	if got, want := e.currentSystem("beta"), e.toplevel("beta"); got != want {
		t.Errorf("beta runs %s, want its new system %s", got, want)
	}
	j := e.journal("alpha")
	if len(j) != 2 || j[1]["result"] != "rolled back" || len(j[1]["probes"].([]any)) != 3 {
		t.Errorf("alpha's journal does not record the checks and the rollback: %v", j)
	}

	// A test activation that fails its checks: the old system runs, the
	// profile is untouched.
	r = e.deployctl("deploy", "alpha", "--action", "test", "--probe-timeout", "2s")
	r.wantCode(t, 1)
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s after a test activation failed its checks, want %s", got, old)
	}
	if got := e.profile("alpha"); got != old {
		t.Errorf("a test activation moved alpha's profile to %s", got)
	}
}

// TestBrokenSSHRollsItselfBack: a system that stops sshd is switched to;
// no new connection can check in, so the host's dead-man's switch rolls it
// back within deployment.confirmTimeout: SSH works again, and deployctl
// says what happened and fails.
func TestBrokenSSHRollsItselfBack(t *testing.T) {
	confirm := map[string]any{"confirmTimeout": 3}
	e := startFleet(t, fixture.Host{Name: "alpha", Deployment: confirm})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")

	e.writeFlake(fixture.Host{Name: "alpha", Deployment: confirm, BreaksSSH: true, Revision: "2"})
	start := time.Now()
	r := e.deployctl("deploy", "alpha")
	took := time.Since(start)
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "no new SSH connection to the host could check in within 3s of the switch") ||
		!strings.Contains(r.stderr, "the host rolled itself back to "+old) {
		t.Errorf("deployctl does not report the host's own rollback:\n%s", r.stderr)
	}
	if took > 30*time.Second {
		t.Errorf("the deploy took %s: the rollback did not come within the confirm timeout", took)
	}
	// SSH works again (e.ssh fails the test otherwise) and the old system runs.
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s, want %s", got, old)
	}
	if got := e.profile("alpha"); got != old {
		t.Errorf("alpha's profile is %s, want %s", got, old)
	}
	// The host journals its own rollback, once.
	if j := e.journal("alpha"); len(j) != 2 || j[1]["result"] != "rolled back" || j[1]["byWatchdog"] != true || j[1]["previous"] != old {
		t.Errorf("the journal does not record the host's own rollback: %v", j)
	}

	// --no-magic-rollback: nothing watches, the broken system stays.
	e.deployctl("deploy", "alpha", "--no-magic-rollback").wantCode(t, 0)
	time.Sleep(4 * time.Second)
	host := e.fleet.Host("alpha")
	if out, err := host.Exec(t.Context(), "readlink /run/current-system"); err != nil || strings.TrimSpace(out) != e.toplevel("alpha") {
		t.Errorf("with --no-magic-rollback alpha runs %q (%v), want the SSH-breaking %s", out, err, e.toplevel("alpha"))
	}
	if out, err := e.fleet.SSH(t.Context(), "alpha", "true"); err == nil {
		t.Errorf("SSH to alpha works although its system stopped sshd: %s", out)
	}
	if out, err := host.Exec(t.Context(), "/run/fleet/start-sshd"); err != nil {
		t.Fatalf("start alpha's sshd again: %v %s", err, out)
	}
}

// TestCanaryHaltsRollout: an unhealthy canary is rolled back and no other
// host is touched; in waves, a failure beyond --max-failures stops the
// next waves, the failed host rolled back and the rest skipped.
func TestCanaryHaltsRollout(t *testing.T) {
	e := startFleet(t, checked(fixture.Host{Name: "alpha"}), checked(fixture.Host{Name: "beta"}), checked(fixture.Host{Name: "gamma"}))
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")
	untouched := func(host string) {
		t.Helper()
		if got := e.currentSystem(host); got != "" {
			t.Errorf("%s runs %s: the halted rollout touched it", host, got)
		}
		if got := e.ssh(host, "ls /nix/store | grep -c nixos-system || true"); got != "0" {
			t.Errorf("%s's store holds %s systems: the halted rollout pushed to it", host, got)
		}
	}
	e.writeFlake(checked(fixture.Host{Name: "alpha", Unhealthy: true, Revision: "2"}), checked(fixture.Host{Name: "beta"}), checked(fixture.Host{Name: "gamma"}))
	r := e.deployctl("deploy", "--all", "--canary", "1", "--max-failures", "0", "--probe-timeout", "2s")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^deploy: 0 of 3 hosts ok, 2 skipped$`).MatchString(r.stderr) ||
		!regexp.MustCompile(`(?m)^  beta +skipped +the rollout halted: a canary failed: untouched$`).MatchString(r.stderr) {
		t.Errorf("the summary does not say the others were skipped:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("the unhealthy canary alpha runs %s, want it rolled back to %s", got, old)
	}
	untouched("beta")
	untouched("gamma")

	// Waves of a third of the hosts (one) after a healthy canary: beta fails, and
	// gamma, in the wave after, never starts.
	e.writeFlake(checked(fixture.Host{Name: "alpha", Revision: "3"}), checked(fixture.Host{Name: "beta", Unhealthy: true}), checked(fixture.Host{Name: "gamma"}))
	r = e.deployctl("deploy", "--all", "--canary", "1", "--wave-size", "33%", "--max-failures", "0", "--probe-timeout", "2s")
	r.wantCode(t, 3)
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("the healthy canary alpha runs %s, want %s", got, want)
	}
	if !regexp.MustCompile(`(?m)^  beta +FAILED +\S+ +activate: 2 health checks failed`).MatchString(r.stderr) ||
		!regexp.MustCompile(`(?m)^  gamma +skipped +the rollout halted: 1 failed, more than the 0 allowed: untouched$`).MatchString(r.stderr) {
		t.Errorf("beta is not reported failed and gamma skipped:\n%s", r.stderr)
	}
	untouched("gamma")
}

// TestInterruptLetsSwitchFinish: Ctrl-C during a switch starts no further
// host, lets the switch finish, and exits 130; the host is consistent: it
// runs the new system, the journal says so, and its lock is free.
func TestInterruptLetsSwitchFinish(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha", SwitchSeconds: 2}, fixture.Host{Name: "beta"})
	e.deployctl("build", "--all").wantCode(t, 0)
	r := e.deployctlInterrupted("switching slowly", "-v", "deploy", "--all", "--parallel", "1")
	r.wantCode(t, 130)
	if !strings.Contains(r.stderr, "interrupted: no further host starts; waiting for alpha to finish activating (Ctrl-C again to detach)") {
		t.Errorf("the interrupt does not say what it waits for:\n%s", r.stderr)
	}
	if !regexp.MustCompile(`(?m)^  alpha +ok +`).MatchString(r.stderr) || !regexp.MustCompile(`(?m)^  beta +skipped +interrupted before it started: untouched$`).MatchString(r.stderr) {
		t.Errorf("the summary does not show alpha finished and beta never started:\n%s", r.stderr)
	}
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("alpha runs %q, want %s", got, want)
	}
	if j := e.journal("alpha"); len(j) != 1 || j[0]["result"] != "ok" {
		t.Errorf("alpha's journal: %v", j)
	}
	if got := e.ssh("alpha", "cat /run/deployctl/lock"); got != "" {
		t.Errorf("alpha's lock is still held: %s", got)
	}
	if got := e.currentSystem("beta"); got != "" {
		t.Errorf("beta was started after the interrupt: it runs %s", got)
	}
}

// TestSecondInterruptDetaches: a second Ctrl-C leaves the switch to run on
// the host and says so; the host keeps its lock while the switch runs, and
// with no one to check in, its dead-man's switch rolls it back.
func TestSecondInterruptDetaches(t *testing.T) {
	confirm := map[string]any{"confirmTimeout": 2}
	e := startFleet(t, fixture.Host{Name: "alpha", Deployment: confirm})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")
	e.writeFlake(fixture.Host{Name: "alpha", Deployment: confirm, SwitchSeconds: 3, Revision: "2"})
	e.deployctl("build", "alpha").wantCode(t, 0)
	r := e.deployctlInterruptedTwice("switching slowly", "Ctrl-C again to detach", "-v", "deploy", "alpha")
	r.wantCode(t, 130)
	if !strings.Contains(r.stderr, "detached: alpha still activating") ||
		!regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +activate: detached during the switch, which runs on on the host; with no one to check in or disarm it, the host's dead-man's switch rolls it back when its deadline passes$`).MatchString(r.stderr) {
		t.Errorf("the detach does not say what runs on:\n%s", r.stderr)
	}
	held := func() bool {
		return e.ssh("alpha", "flock -n /run/deployctl/lock true && echo free || echo held") == "held"
	}
	if got := e.ssh("alpha", "cat /run/deployctl/lock"); !held() || !strings.Contains(got, e.toplevel("alpha")) {
		t.Errorf("alpha's lock is not held, naming the detached deploy, while its switch runs: %q", got)
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.currentSystem("alpha") != old || held() {
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the detach alpha runs %s (want %s rolled back to) and its lock holds %q",
				e.currentSystem("alpha"), old, e.ssh("alpha", "cat /run/deployctl/lock"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// deployctl was gone: the host journaled its own rollback.
	if j := e.journal("alpha"); len(j) != 2 || j[1]["byWatchdog"] != true || j[1]["new"] != e.toplevel("alpha") {
		t.Errorf("alpha's journal does not record the watchdog's rollback of the detached deploy: %v", j)
	}
}

// TestStatusAndRollback: status reads what each host runs, its lock and
// its last deploy; rollback puts a host back on the system that ran
// before its last deploy (running system and profile), journaled as a
// rollback, and refuses a host whose journal has nothing to undo.
func TestStatusAndRollback(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	v1 := e.toplevel("alpha")
	e.writeFlake(fixture.Host{Name: "alpha", Revision: "2", SwitchSeconds: 2}, fixture.Host{Name: "beta"})
	e.deployctl("build", "alpha").wantCode(t, 0)
	v2 := e.toplevel("alpha")

	type status struct {
		Hosts []struct {
			Host, Running, Profile, Error string
			Generation                    int
			Lock                          *struct{ Toplevel string }
			LastDeploy                    *struct {
				Action, Previous, New, Result string
				Rollback                      bool
			}
		}
	}
	read := func(args ...string) status {
		t.Helper()
		r := e.deployctl(append([]string{"status", "--json"}, args...)...)
		var st status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		return st
	}
	// While a deploy switches alpha, status names the lock's holder.
	var during status
	e.deployctlWatching("switching slowly", func() { during = read("alpha") }, "-v", "deploy", "alpha").wantCode(t, 0)
	if len(during.Hosts) == 0 {
		t.Fatal("status did not run during the deploy (no switch output seen)")
	}
	if l := during.Hosts[0].Lock; l == nil || l.Toplevel != v2 {
		t.Errorf("status during a deploy shows no lock held for %s: %+v", v2, l)
	}
	st := read("--all")
	a, b := st.Hosts[0], st.Hosts[1]
	if a.Host != "alpha" || a.Running != v2 || a.Profile != v2 || a.Generation != 2 || a.LastDeploy == nil ||
		a.LastDeploy.Previous != v1 || a.LastDeploy.New != v2 || a.LastDeploy.Result != "ok" || a.Lock != nil {
		t.Errorf("alpha's status: %+v (last deploy %+v)", a, a.LastDeploy)
	}
	if b.Host != "beta" || b.Running != "" || b.LastDeploy != nil || b.Error != "" {
		t.Errorf("beta's status: %+v", b)
	}

	r := e.deployctl("rollback", "alpha", "beta")
	r.wantCode(t, 3)
	if !regexp.MustCompile(`(?m)^  beta +FAILED +\S+ +rollback: the host's journal records no deploy: nothing to roll back$`).MatchString(r.stderr) {
		t.Errorf("beta is not refused:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != v1 {
		t.Errorf("alpha runs %s after the rollback, want %s", got, v1)
	}
	if got := e.profile("alpha"); got != v1 {
		t.Errorf("alpha's profile is %s after the rollback, want %s", got, v1)
	}
	if got := e.currentSystem("beta"); got != "" {
		t.Errorf("beta was changed: it runs %s", got)
	}
	if d := read("alpha").Hosts[0].LastDeploy; d == nil || !d.Rollback || d.Previous != v2 || d.New != v1 || d.Result != "ok" {
		t.Errorf("the rollback is not journaled as one: %+v", d)
	}

	// Something else changed the host: rollback refuses to guess.
	e.ssh("alpha", "ln -sfn /nix/store/elsewhere /run/current-system")
	r = e.deployctl("rollback", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "but the host has /nix/store/elsewhere now: something else changed it since") {
		t.Errorf("a changed host is not refused:\n%s", r.stderr)
	}
}

// TestKilledSwitchRollsBack: a switch killed halfway (its job's whole
// process group, before it could write its exit status) is a failed
// switch: deployctl says how it ended and puts the host back on the
// system before.
func TestKilledSwitchRollsBack(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.toplevel("alpha")

	e.writeFlake(fixture.Host{Name: "alpha", SwitchSeconds: 3, Revision: "2"})
	r := e.deployctlWatching("switching slowly", func() {
		// This deploy's directory is the newest (the names begin with the time).
		e.ssh("alpha", `kill -KILL -- -"$(cat "$(ls -d /run/deployctl/*/ | tail -n 1)switch.pid")"`)
	}, "-v", "deploy", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "switch-to-configuration switch ended without an exit status (the switch job's process is gone without an exit status (killed?)); rolled back to "+old) {
		t.Errorf("the killed switch is not reported and rolled back:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != old {
		t.Errorf("alpha runs %s, want %s", got, old)
	}
}
