package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/integration/fleet"
	"github.com/deployctl/deployctl/internal/cli"
	"github.com/deployctl/deployctl/internal/nixtest"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/push"
)

// TestDeploySwitchesEveryHost: each host's own store holds its closure, which
// nix-store --verify-path accepts, and /run/current-system points at the
// toplevel built for that host.
func TestDeploySwitchesEveryHost(t *testing.T) {
	e := startFleet(t,
		fixture.Host{Name: "alpha", Deployment: map[string]any{"tags": []string{"web"}}},
		fixture.Host{Name: "beta", Deployment: map[string]any{"tags": []string{"web"}}},
		fixture.Host{Name: "gamma"},
	)
	r := e.deployctl("deploy", "--all", "--json")
	r.wantCode(t, 0)

	// --json: one event per line (docs/events.md), the summary last.
	type event struct {
		V                       int
		Type, Host, Step, State string
		Paths, PathsTotal       int
		Bytes                   int64
		Command                 string
		Hosts                   []struct {
			Host, Toplevel string
			OK             bool
		}
	}
	var evs []event
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev event
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.V != 1 {
			t.Fatalf("--json line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	seen := map[string]bool{}
	for _, ev := range evs[:len(evs)-1] {
		seen[ev.Type+" "+ev.Host+" "+ev.Step+" "+ev.State] = true
		if ev.Type == "progress" && ev.State == "sending" && (ev.Paths == 0 || ev.PathsTotal == 0 || ev.Bytes == 0) {
			t.Errorf("a push's progress event says nothing: %+v", ev)
		}
	}
	for _, h := range []string{"alpha", "beta", "gamma"} {
		for _, want := range []string{"step " + h + " build started", "step " + h + " build done", "step " + h + " push started", "progress " + h + " push sending", "progress " + h + " push sent", "step " + h + " push done", "step " + h + " activate started", "step " + h + " activate done"} {
			if !seen[want] {
				t.Errorf("no %q event in:\n%s", want, r.stdout)
			}
		}
	}
	summary := evs[len(evs)-1]
	if summary.Type != "summary" || summary.Command != "deploy" || len(summary.Hosts) != 3 {
		t.Errorf("the last event is not the summary: %+v", summary)
	}
	tops := map[string]string{}
	for _, h := range []string{"alpha", "beta", "gamma"} {
		tops[h] = e.toplevel(h)
	}
	for _, h := range summary.Hosts {
		if !h.OK || h.Toplevel != tops[h.Host] {
			t.Errorf("summary for %s: ok=%v toplevel=%s, want ok and %s", h.Host, h.OK, h.Toplevel, tops[h.Host])
		}
	}
	for host, top := range tops {
		if got := e.currentSystem(host); got != top {
			t.Errorf("%s: /run/current-system = %q, want %s", host, got, top)
		}
		if got := e.ssh(host, "readlink -f /nix/var/nix/profiles/system"); got != top {
			t.Errorf("%s: system profile = %q, want %s", host, got, top)
		}
		e.ssh(host, "nix-store --verify-path "+top)
		// The whole closure, as the deploying machine's store knows it.
		out, err := exec.Command("nix-store", "--query", "--requisites", top).Output()
		if err != nil {
			t.Fatal(err)
		}
		closure := strings.Fields(string(out))
		if len(closure) < 2 {
			t.Fatalf("%s: closure %v should hold the toplevel and its service", host, closure)
		}
		if invalid := e.ssh(host, "nix-store --check-validity --print-invalid "+strings.Join(closure, " ")); invalid != "" {
			t.Errorf("%s: closure paths missing on the host: %s", host, invalid)
		}
		if got := e.ssh(host, "cat /run/fixture/health"); got != "healthy" {
			t.Errorf("%s: fixture service health %q", host, got)
		}
		// Stores are private: no other host's system is in this one.
		for other, otherTop := range tops {
			if other != host {
				if got := e.ssh(host, "test -e "+otherTop+" && echo present || echo absent"); got != "absent" {
					t.Errorf("%s's store holds %s's system %s: stores are not private", host, other, otherTop)
				}
			}
		}
	}
	// The deploying machine's own /run/current-system is untouched.
	if top, err := os.Readlink("/run/current-system"); err == nil && strings.Contains(top, "nixos-system-alpha") {
		t.Errorf("the deploying machine's /run/current-system was switched: %s", top)
	}

	// Deploying again is a no-op push and still succeeds.
	e.deployctl("deploy", "alpha").wantCode(t, 0)
}

// TestOneFailingActivationLeavesOthersSwitched: exit code 3 when some hosts
// fail and others succeed; 1 when every selected host fails.
func TestOneFailingActivationLeavesOthersSwitched(t *testing.T) {
	e := startFleet(t,
		fixture.Host{Name: "alpha"},
		fixture.Host{Name: "beta", FailExit: 4},
		fixture.Host{Name: "gamma"},
	)
	r := e.deployctl("deploy", "--all", "--parallel", "2")
	r.wantCode(t, 3)
	for _, h := range []string{"alpha", "gamma"} {
		if got, want := e.currentSystem(h), e.toplevel(h); got != want {
			t.Errorf("%s: /run/current-system = %q, want %s", h, got, want)
		}
	}
	if !regexp.MustCompile(`(?m)^  beta +FAILED +\S+ +activate: switch-to-configuration switch exited 4 \(some units failed\); NOT rolled back: .*no system ran before`).MatchString(r.stderr) {
		t.Errorf("summary does not name beta's failing step and status:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "fixture.service") {
		t.Errorf("the switch's own error output is not shown:\n%s", r.stderr)
	}
	e.deployctl("deploy", "beta").wantCode(t, 1)
}

// TestSelection: names, globs and tags pick exactly the expected hosts, in
// list and in deploy.
func TestSelection(t *testing.T) {
	e := startFleet(t,
		fixture.Host{Name: "web-1", Deployment: map[string]any{"tags": []string{"web", "edge-eu"}}},
		fixture.Host{Name: "web-2", Deployment: map[string]any{"tags": []string{"web", "edge-us"}}},
		fixture.Host{Name: "db-1", Deployment: map[string]any{"tags": []string{"db"}}},
		// A build-only host whose build would fail: no deploy may build it.
		fixture.Host{Name: "builder", Deployment: map[string]any{"targetHost": nil}, BuildFail: true, Revision: t.Name()},
	)
	list := func(args ...string) string {
		r := e.deployctl(append([]string{"list", "--json"}, args...)...)
		r.wantCode(t, 0)
		var hosts []struct {
			Name       string
			Deployable bool
		}
		if err := json.Unmarshal([]byte(r.stdout), &hosts); err != nil {
			t.Fatalf("list --json: %v\n%s", err, r.stdout)
		}
		var names []string
		for _, h := range hosts {
			names = append(names, h.Name)
		}
		return strings.Join(names, ",")
	}
	for args, want := range map[string]string{
		"":              "builder,db-1,web-1,web-2",
		"--all":         "db-1,web-1,web-2",
		"web-*":         "web-1,web-2",
		"@db":           "db-1",
		"@edge-*":       "web-1,web-2",
		"@edge-eu db-1": "db-1,web-1",
		"web-? builder": "builder,web-1,web-2",
		"db-1 db-1 @db": "db-1",
	} {
		if got := list(strings.Fields(args)...); got != want {
			t.Errorf("list %s = %s, want %s", args, got, want)
		}
	}

	r := e.deployctl("deploy", "web-9")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, `no host matches "web-9" (did you mean web-1, web-2?)`) {
		t.Errorf("no-match error lacks close matches:\n%s", r.stderr)
	}
	e.deployctl("deploy").wantCode(t, 2)
	r = e.deployctl("deploy", "builder")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, "builder is build-only") {
		t.Errorf("deploying a build-only host: %s", r.stderr)
	}

	e.deployctl("deploy", "@edge-*").wantCode(t, 0)
	for host, want := range map[string]bool{"web-1": true, "web-2": true, "db-1": false} {
		if got := e.currentSystem(host) != ""; got != want {
			t.Errorf("after deploy @edge-*: %s switched = %v, want %v", host, got, want)
		}
	}
	// A glob that catches a build-only host leaves it out and goes on.
	r = e.deployctl("deploy", "*")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[builder] warning: left out: build-only") || !strings.Contains(r.stderr, "building 3 systems") {
		t.Errorf("builder was not left out before building:\n%s", r.stderr)
	}
	if e.currentSystem("db-1") == "" {
		t.Error("deploy '*' did not switch db-1")
	}
}

// TestBadDeploymentOptionTouchesNothing: a wrongly typed option is a usage
// error naming host and option, before any host is contacted.
func TestBadDeploymentOptionTouchesNothing(t *testing.T) {
	e := startFleet(t,
		fixture.Host{Name: "alpha"},
		fixture.Host{Name: "beta", Deployment: map[string]any{"targetPort": "twenty-two"}},
	)
	for _, tc := range []struct {
		beta map[string]any
		want string
		args []string
	}{
		{map[string]any{"targetPort": "twenty-two"}, `beta: deployment.targetPort: expected an integer, got "twenty-two"`, nil},
		{map[string]any{"sshOptions": []string{"-J", "bastion:abc"}}, `beta: ProxyJump bastion:abc: "abc" is not a TCP port`, nil},
		{map[string]any{"sshOptions": []string{"-o", "ProxyCommand=nc %h %p"}}, "beta: ProxyCommand is not supported", nil},
		{map[string]any{"sshOptions": []string{"-i", "/keys/with space"}}, `beta: nix copy cannot pass the ssh argument "/keys/with space"`, []string{"--copy-backend", "nix"}},
		{map[string]any{"buildHost": "-oProxyCommand=x"}, `beta: deployment.buildHost: "-oProxyCommand=x" is not a host name`, nil},
	} {
		e.writeFlake(fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", Deployment: tc.beta})
		r := e.deployctl(append([]string{"deploy", "--all"}, tc.args...)...)
		r.wantCode(t, 2)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("error does not name host and problem %q:\n%s", tc.want, r.stderr)
		}
		if strings.Contains(r.stderr, "connected") {
			t.Errorf("a host was contacted although the run was refused:\n%s", r.stderr)
		}
		if got := e.currentSystem("alpha"); got != "" {
			t.Errorf("alpha was switched to %s although the run was refused", got)
		}
	}
	e.deployctl("deploy", "alpha", "--action", "reboot").wantCode(t, 2)
	// A build-only host cannot build on its target.
	e.writeFlake(fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", Deployment: map[string]any{"targetHost": nil, "buildOnTarget": true}})
	r := e.deployctl("build", "alpha", "beta")
	r.wantCode(t, 2)
	if want := "beta: it builds on its target, but it is build-only"; !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "building") {
		t.Errorf("build of a build-only host on its target: want %q and nothing built:\n%s", want, r.stderr)
	}
}

// TestVerbosePrintsEveryCommand: -v shows each local and remote command as a
// shell line, and the remote ones can be pasted to run by hand.
func TestVerbosePrintsEveryCommand(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	r := e.deployctl("-v", "deploy", "--max-jobs", "3", "alpha")
	r.wantCode(t, 0)
	top := e.toplevel("alpha")
	for _, want := range []string{
		"[local] + nix --extra-experimental-features 'nix-command flakes' eval --json",
		"[local] + nix --extra-experimental-features 'nix-command flakes' --log-format internal-json build --json --keep-going --out-link ",
		"/result --max-jobs 3 /nix/store/",
		"[local] + nix --extra-experimental-features 'nix-command flakes' path-info --json --recursive " + top,
		"[alpha] + ssh -F " + e.fleet.SSHConfig + " -p 22 root@alpha 'nix-store --serve --write'",
		"[alpha] + ssh -F " + e.fleet.SSHConfig + " -p 22 root@alpha 'nix-store --realise " + top + "'",
		"[alpha] + detached in /run/deployctl/",
		": nix-env -p /nix/var/nix/profiles/system --set " + top + " && " + top + "/bin/switch-to-configuration switch",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("-v output lacks %q", want)
		}
	}
	if n := strings.Count(r.stderr, "[local] + nix --version"); n != 1 {
		t.Errorf("nix --version ran %d times in one deploy, want once", n)
	}
	deployed := r.stderr
	// The nix copy backend shows its command, with the SSH settings.
	r = e.deployctl("-v", "push", "--copy-backend", "nix", "alpha")
	r.wantCode(t, 0)
	if want := "[local] + NIX_SSHOPTS='-F " + e.fleet.SSHConfig + " -p 22' nix --extra-experimental-features 'nix-command flakes' copy --no-check-sigs --to ssh-ng://root@alpha -- " + top; !strings.Contains(r.stderr, want) {
		t.Errorf("-v output lacks %q:\n%s", want, r.stderr)
	}
	// Paste the printed lines into a shell: they run on the host.
	pasted := 0
	for _, line := range strings.Split(deployed, "\n") {
		if strings.HasPrefix(line, "[alpha] + ssh ") && strings.HasSuffix(line, "'nix-store --realise "+top+"'") {
			// Its standard output is the path (Nix warns on stderr).
			out, err := exec.Command("sh", "-c", strings.TrimPrefix(line, "[alpha] + ")).Output()
			if err != nil || strings.TrimSpace(string(out)) != top {
				t.Errorf("pasted line %q: %v: %s", line, err, out)
			}
			pasted++
		}
		if cmd, ok := strings.CutPrefix(line, "[alpha] + detached in "); ok {
			_, cmd, _ = strings.Cut(cmd, ": ")
			cmd = strings.Replace(cmd, "switch-to-configuration switch", "switch-to-configuration dry-activate", 1)
			out, err := exec.Command("ssh", "-F", e.fleet.SSHConfig, "alpha", cmd).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "would activate "+top) {
				t.Errorf("pasted job %q: %v: %s", cmd, err, out)
			}
			pasted++
		}
	}
	if pasted != 2 {
		t.Errorf("pasted %d lines, want the realise and the switch job", pasted)
	}
}

// TestInterruptExits130: an interrupted deploy stops, reports the hosts it
// did not finish as interrupted, and exits 130.
func TestInterruptExits130(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	r := e.deployctlInterrupted("[alpha] pushed", "deploy", "--json", "alpha")
	r.wantCode(t, 130)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, `"type":"summary"`) || !strings.Contains(last, `"command":"deploy (interrupted)"`) || !strings.Contains(last, `"error":"interrupted"`) {
		t.Errorf("--json's last event is no summary of the interrupted deploy:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +activate: interrupted$`).MatchString(r.stderr) ||
		!strings.Contains(r.stderr, "deployctl: interrupted") {
		t.Errorf("interruption not reported as such:\n%s", r.stderr)
	}
}

// TestTwoHostsOneTargetRefused: two configurations resolving to the same
// machine (as with a default networking.hostName) refuse the run.
func TestTwoHostsOneTargetRefused(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	e.writeFlake(
		fixture.Host{Name: "alpha"},
		fixture.Host{Name: "web-1", Deployment: map[string]any{"targetHost": "alpha"}},
	)
	r := e.deployctl("deploy", "--all")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, "alpha and web-1 both deploy to 127.0.0.") {
		t.Errorf("the refusal does not name both hosts and the target:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != "" {
		t.Errorf("alpha was switched to %s", got)
	}
}

// TestBrokenDeploymentBlockFailsOnlyItsHost: a host whose deployment options
// do not evaluate is left out, with a warning, of selections that do not
// name it; naming it, or --all, refuses the run.
func TestBrokenDeploymentBlockFailsOnlyItsHost(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	e.writeFlake(fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", DeploymentThrows: "The option `deployment.helthChecks' does not exist."})
	r := e.deployctl("deploy", "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[beta] warning: left out: its config.deployment does not evaluate") {
		t.Errorf("no warning about beta:\n%s", r.stderr)
	}
	for _, args := range [][]string{{"deploy", "beta"}, {"deploy", "--all"}} {
		r := e.deployctl(args...)
		r.wantCode(t, 2)
		if !strings.Contains(r.stderr, "beta: config.deployment does not evaluate") || !strings.Contains(r.stderr, "helthChecks") {
			t.Errorf("%v: %s", args, r.stderr)
		}
	}
	if got := e.currentSystem("beta"); got != "" {
		t.Errorf("beta was switched to %s", got)
	}
}

// TestNonRootTargetUser: a host reached as a user other than root is
// deployed through its privilege escalation (sudo): the push's
// nix-store --serve --write, the profile and the switch all run as root.
// Without escalation a deploy is refused before it starts, and a push (no
// nix-daemon there) fails, saying why; nothing changes.
func TestNonRootTargetUser(t *testing.T) {
	if _, err := exec.LookPath("sudo"); err != nil {
		nixtest.Unavailable(t, "sudo is not installed")
	}
	user := fleet.DeployUser
	e := startFleet(t, fixture.Host{Name: "alpha", Deployment: map[string]any{"targetUser": user}})
	r := e.deployctl("-v", "deploy", "alpha")
	r.wantCode(t, 0)
	for _, want := range []string{
		user + "@alpha 'sudo -H -- nix-store --serve --write'",
		user + "@alpha 'sudo -H -- nix-store --realise ",
		user + "@alpha 'sudo -H -- sh -c ",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("-v output lacks %q:\n%s", want, r.stderr)
		}
	}
	top := e.toplevel("alpha")
	if got := e.currentSystem("alpha"); got != top {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, top)
	}
	e.verifyClosure("alpha", top)

	e.writeFlake(fixture.Host{Name: "alpha", Revision: t.Name(), Deployment: map[string]any{"targetUser": user, "privilegeEscalationCommand": []string{}}})
	r = e.deployctl("deploy", "alpha")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, "alpha: activate needs root on the host, and "+user+" has no way to become root") {
		t.Errorf("a deploy as a user who cannot become root is not refused:\n%s", r.stderr)
	}
	r = e.deployctl("push", "alpha")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +push: `).MatchString(r.stderr) {
		t.Errorf("a push as a user who cannot write the store is not reported as a push failure:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != top {
		t.Errorf("alpha: /run/current-system = %q after a failed deploy, want it left at %s", got, top)
	}
}

// TestNarrowSudoRules: a deploy user whose sudo allows deployctl-remote
// alone (the rule deployment.deployUser gets) pushes, uploads keys,
// switches, rolls back a failed switch, reads the host's status and pushes
// with nix copy, all through it. Without deployctl-remote on the host, the deploy fails at
// its first root step, saying why, and changes nothing.
func TestNarrowSudoRules(t *testing.T) {
	if _, err := exec.LookPath("sudo"); err != nil {
		nixtest.Unavailable(t, "sudo is not installed")
	}
	user := fleet.DeployUser
	deployment := func() map[string]any {
		return map[string]any{"targetUser": user, "keys": map[string]any{
			"token": map[string]any{"text": "narrow", "user": user, "group": user, "permissions": "0400"},
		}}
	}
	e := startFleet(t, fixture.Host{Name: "alpha", Deployment: deployment()})
	alpha := e.fleet.Host("alpha")
	// setRule replaces the user's sudo rule (in place: /etc/sudoers is a
	// bind mount).
	setRule := func(from, to string) string {
		return fmt.Sprintf(`sed 's|^%[1]s %[2]s$|%[1]s %[3]s|' /etc/sudoers > /tmp/sudoers
grep -qx '%[1]s %[3]s' /tmp/sudoers && cat /tmp/sudoers > /etc/sudoers && rm /tmp/sudoers`, user, from, to)
	}
	all, helperOnly := "ALL=(ALL) NOPASSWD: ALL", "ALL=(root) NOPASSWD: "+remote.HelperPath
	narrow := setRule(all, helperOnly)
	if out, err := alpha.Exec(t.Context(), narrow); err != nil {
		t.Fatalf("narrow alpha's sudo rule: %v\n%s", err, out)
	}

	r := e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +push: .*` + user + ` may not run this as root through sudo \(check the host's sudo rules; a rule for ` + remote.HelperPath + ` alone needs deployctl-remote installed there`).MatchString(r.stderr) {
		t.Errorf("a deploy without deployctl-remote, under a rule for it alone, does not fail at its first root step, saying why:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != "" {
		t.Errorf("alpha runs %s after a refused deploy", got)
	}
	if out := e.ssh("alpha", "ls /run/keys /nix/var/nix/gcroots/deployctl 2>/dev/null || true"); strings.TrimSpace(out) != "" {
		t.Errorf("a refused deploy left on alpha: %s", out)
	}

	// The upgrade: a deploy with full sudo whose switch installs
	// deployctl-remote and narrows the rule to it (as a first deploy of
	// deployUser does). The steps after the switch go through it.
	if out, err := alpha.Exec(t.Context(), setRule(helperOnly, all)); err != nil {
		t.Fatalf("widen alpha's sudo rule again: %v\n%s", err, out)
	}
	helper := e.deployctl("remote-helper")
	helper.wantCode(t, 0)
	upgrade := func() {
		install := `printf '%s' "$1" > "$2" && chmod 0555 "$2"` + "\n" + narrow
		if out, err := alpha.Exec(t.Context(), install, helper.stdout, remote.HelperPath); err != nil {
			t.Errorf("install deployctl-remote, narrow the rule: %v\n%s", err, out)
		}
	}
	e.writeFlake(fixture.Host{Name: "alpha", Revision: "upgrade", SwitchSeconds: 1, Deployment: deployment()})
	r = e.deployctlWatching("switching slowly", upgrade, "-v", "deploy", "alpha")
	r.wantCode(t, 0)
	if got := e.currentSystem("alpha"); got != e.toplevel("alpha") {
		t.Fatalf("alpha runs %q after the upgrade, want %s (the watchdog rolled back?)", got, e.toplevel("alpha"))
	}
	for _, step := range []string{"claim ", "journal "} {
		if want := user + "@alpha 'sudo -H -- " + remote.HelperPath + " " + step; !strings.Contains(r.stderr, want) {
			t.Errorf("after the upgrade's switch, no %q:\n%s", want, r.stderr)
		}
	}

	e.writeFlake(fixture.Host{Name: "alpha", Revision: "narrow", Deployment: deployment()})
	r = e.deployctl("-v", "deploy", "alpha")
	r.wantCode(t, 0)
	for _, step := range []string{"serve --write", "push-root ", "lease ", "realise ", "key-upload ", "start-job ", "wait-job ", "check-in ", "claim ", "drop-push-root ", "journal "} {
		if want := user + "@alpha 'sudo -H -- " + remote.HelperPath + " " + step; !strings.Contains(r.stderr, want) {
			t.Errorf("-v output lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "sudo -H -- sh ") || strings.Contains(r.stderr, "sudo -H -- nix-store ") {
		t.Errorf("a root step went around deployctl-remote:\n%s", r.stderr)
	}
	good := e.toplevel("alpha")
	if got := e.currentSystem("alpha"); got != good {
		t.Fatalf("alpha runs %q, want %s", got, good)
	}
	e.verifyClosure("alpha", good)
	if got := e.ssh("alpha", "stat -c '%a %U' /run/keys/token && cat /run/keys/token"); got != "400 "+user+"\nnarrow" {
		t.Errorf("alpha's key: %q", got)
	}

	e.writeFlake(fixture.Host{Name: "alpha", FailExit: 2, Revision: "2", Deployment: deployment()})
	r = e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +activate: switch-to-configuration switch exited 2 \(the activation script failed\); rolled back to ` + regexp.QuoteMeta(good)).MatchString(r.stderr) {
		t.Errorf("the failed switch is not rolled back through deployctl-remote:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != good {
		t.Errorf("alpha runs %s after the rollback, want %s", got, good)
	}
	r = e.deployctl("--json", "status", "alpha")
	r.wantCode(t, 0)
	if !regexp.MustCompile(`"running": *"` + regexp.QuoteMeta(good) + `"`).MatchString(r.stdout) {
		t.Errorf("status through deployctl-remote: %s\n%s", r.stdout, r.stderr)
	}

	// nix copy reaches the store through it too: nix-daemon --stdio for
	// ssh-ng://, nix-store --serve --write for ssh://.
	for i, backend := range []string{"nix", "nix-ssh"} {
		e.writeFlake(fixture.Host{Name: "alpha", Revision: strconv.Itoa(3 + i), Deployment: deployment()})
		r = e.deployctl("-v", "push", "alpha", "--copy-backend", backend)
		r.wantCode(t, 0)
		program := map[string]string{"nix": "daemon", "nix-ssh": "serve"}[backend]
		if want := "remote-program=sudo%20-H%20--%20%2Fetc%2Fdeployctl%2Fremote%20" + program; !strings.Contains(r.stderr, want) {
			t.Errorf("--copy-backend %s does not reach the store through deployctl-remote (no %q):\n%s", backend, want, r.stderr)
		}
		e.verifyClosure("alpha", e.toplevel("alpha"))
	}

	// Built on the host, with the flake copied there, then a dry run of
	// that system: the build, flake and dry-activate steps go through it.
	// (The deploy user reads the host's store through its daemon, as on
	// a multi-user install.)
	if err := alpha.StartNixDaemon(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	onHost := deployment()
	onHost["buildOnTarget"] = true
	e.writeFlake(fixture.Host{Name: "alpha", Revision: "5", Deployment: onHost})
	r = e.deployctl("-v", "deploy", "alpha", "--copy-flake")
	r.wantCode(t, 0)
	r2 := e.deployctl("-v", "deploy", "alpha", "--dry-run")
	r2.wantCode(t, 0)
	if strings.Contains(r.stderr, "cache.nixos.org") {
		t.Errorf("the build on alpha, as root through sudo, tried a binary cache (it lost the host's Nix settings):\n%s", r.stderr)
	}
	for _, step := range []string{"build ", "flake-prepare", "flake-link ", "dry-activate "} {
		if want := user + "@alpha 'sudo -H -- " + remote.HelperPath + " " + step; !strings.Contains(r.stderr+r2.stderr, want) {
			t.Errorf("-v output lacks %q:\n%s\n%s", want, r.stderr, r2.stderr)
		}
	}
	if got := e.currentSystem("alpha"); got != e.toplevel("alpha") {
		t.Errorf("alpha runs %q, want its system built there, %s", got, e.toplevel("alpha"))
	}
	if out := e.ssh("alpha", "readlink "+push.FlakeLink); !strings.HasPrefix(out, "/nix/store/") {
		t.Errorf("%s on alpha: %q", push.FlakeLink, out)
	}
}

// TestSudoPassword: a host whose sudo wants a password is deployed with
// --ask-sudo-password (read from standard input here, there being no
// terminal), the password reaching sudo on its input and never a command
// line; without it, or with a wrong one, the run fails naming the step
// and the reason, and nothing changes; a user without sudo rights fails
// the same way.
func TestSudoPassword(t *testing.T) {
	if _, err := exec.LookPath("sudo"); err != nil {
		nixtest.Unavailable(t, "sudo is not installed")
	}
	as := func(user string) fixture.Host {
		return fixture.Host{Name: "alpha", Deployment: map[string]any{"targetUser": user}}
	}
	e := startFleet(t, as(fleet.PasswordUser))
	r := e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +push: .*sudo asks deploypw for a password \(pass --ask-sudo-password, or give deploypw a NOPASSWD sudo rule\)`).MatchString(r.stderr) {
		t.Errorf("a sudo that wants a password is not explained:\n%s", r.stderr)
	}
	r = e.deployctlInput("wrong\n", "deploy", "alpha", "--ask-sudo-password")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "sudo did not accept the password") {
		t.Errorf("a wrong password is not reported as such:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != "" {
		t.Fatalf("alpha runs %s after failed deploys", got)
	}

	r = e.deployctlInput(fleet.SudoPassword+"\n", "-v", "deploy", "alpha", "--ask-sudo-password")
	r.wantCode(t, 0)
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("alpha runs %q, want %s", got, want)
	}
	if strings.Contains(r.stderr, fleet.SudoPassword) || strings.Contains(r.stdout, fleet.SudoPassword) {
		t.Errorf("the password shows in the output:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, fleet.PasswordUser+"@alpha 'sudo -S -k -p '\\'''\\'' -H -- nix-store --serve --write'") {
		t.Errorf("the push does not read the password through sudo -S:\n%s", r.stderr)
	}

	e.writeFlake(fixture.Host{Name: "alpha", Revision: "2", Deployment: map[string]any{"targetUser": fleet.NoSudoUser}})
	r = e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +push: .*sudo asks nosudo for a password`).MatchString(r.stderr) {
		t.Errorf("a user without sudo is not explained:\n%s", r.stderr)
	}

	// A sudo that needs no password is not fed one, flag or not.
	e.writeFlake(fixture.Host{Name: "alpha", Revision: "3", Deployment: map[string]any{"targetUser": fleet.DeployUser}})
	r = e.deployctlInput("unused\n", "-v", "deploy", "alpha", "--ask-sudo-password")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, fleet.DeployUser+"@alpha 'sudo -H -- nix-store --serve --write'") {
		t.Errorf("a NOPASSWD sudo is fed the password:\n%s", r.stderr)
	}
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("alpha runs %q, want %s", got, want)
	}
}

// TestDeployLocal: deploy --local, run on a host itself (here inside a
// fleet host's namespaces), builds and activates that machine without
// SSH, through the same lock and journal; a host that does not set
// deployment.allowLocalDeployment is refused before anything is done.
func TestDeployLocal(t *testing.T) {
	allow := map[string]any{"allowLocalDeployment": true}
	e := startFleet(t, fixture.Host{Name: "alpha", Deployment: allow})
	// Refused without the option (run here: it stops before building).
	e.writeFlake(fixture.Host{Name: "alpha"})
	r := e.deployctl("deploy", "--local", "alpha")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, "alpha: deployment.allowLocalDeployment is not true") {
		t.Errorf("a host without allowLocalDeployment is not refused:\n%s", r.stderr)
	}
	e.writeFlake(fixture.Host{Name: "alpha", Deployment: allow})

	// The binary and the flake where the host sees them (its /tmp is its
	// own).
	dir, err := os.MkdirTemp("/var/tmp", "deployctl-local-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "deployctl")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/deployctl/deployctl/cmd/deployctl").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := exec.Command("cp", "-r", e.flake, filepath.Join(dir, "flake")).CombinedOutput(); err != nil {
		t.Fatalf("copy the flake: %v\n%s", err, out)
	}
	script := fmt.Sprintf("export NIX_CONF_DIR=/run/fleet/nix NIX_CONFIG='substituters =' HOME=/root; %s --flake %s deploy --local alpha 2>&1", bin, filepath.Join(dir, "flake"))
	out, err := e.fleet.Host("alpha").Exec(t.Context(), script)
	t.Logf("deployctl deploy --local alpha, on alpha:\n%s", out)
	if err != nil {
		t.Fatalf("deploy --local failed: %v", err)
	}
	top := e.toplevel("alpha")
	if got := e.currentSystem("alpha"); got != top {
		t.Errorf("alpha runs %q, want %s", got, top)
	}
	if got := e.profile("alpha"); got != top {
		t.Errorf("alpha's profile is %q, want %s", got, top)
	}
	if j := e.journal("alpha"); len(j) != 1 || j[0]["result"] != "ok" || j[0]["new"] != top {
		t.Errorf("alpha's journal: %v", j)
	}
	if strings.Contains(out, "connected to") || strings.Contains(out, "pushed") {
		t.Errorf("--local connected or pushed:\n%s", out)
	}
}

// TestCopyFlake: --copy-flake leaves the flake deployed from on the host,
// kept from garbage collection and linked at /var/lib/deployctl/flake,
// and the host evaluates its own system from it to the path deployed.
func TestCopyFlake(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	e.deployctl("deploy", "alpha", "--copy-flake").wantCode(t, 0)
	local, err := os.ReadFile(filepath.Join(e.flake, "flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	e.ssh("alpha", "nix-store --gc >/dev/null 2>&1")
	if got := e.ssh("alpha", "cat /var/lib/deployctl/flake/flake.nix"); got != strings.TrimSpace(string(local)) {
		t.Errorf("the host's copy of flake.nix differs from the one deployed:\n%s", got)
	}
	rebuilt := e.ssh("alpha", `nix --extra-experimental-features 'nix-command flakes' eval --raw "path:$(readlink -f /var/lib/deployctl/flake)#nixosConfigurations.alpha.config.system.build.toplevel.outPath"`)
	if want := e.toplevel("alpha"); rebuilt != want {
		t.Errorf("the host evaluates its system from its copy of the flake to %q, want %s", rebuilt, want)
	}

	// A new deploy replaces the copy.
	e.writeFlake(fixture.Host{Name: "alpha", Revision: "2"})
	first := e.ssh("alpha", "readlink /var/lib/deployctl/flake")
	e.deployctl("deploy", "alpha", "--copy-flake").wantCode(t, 0)
	if second := e.ssh("alpha", "readlink /var/lib/deployctl/flake"); second == first || !strings.HasPrefix(second, "/nix/store/") {
		t.Errorf("the flake's link after a second deploy: %s (was %s)", second, first)
	}
}

// TestOnlyAndSkipSteps: deploy's steps run alone or are left out: --only
// build touches no host, --skip activate pushes without switching, --skip
// build uses what is built and names what is not, --only keys uploads
// the keys and changes nothing else, --skip keys switches without them.
func TestOnlyAndSkipSteps(t *testing.T) {
	withKey := func(rev string) fixture.Host {
		return fixture.Host{Name: "alpha", Revision: rev, Deployment: map[string]any{"keys": map[string]any{"k": map[string]any{"text": "v" + rev}}}}
	}
	e := startFleet(t, withKey("1"))
	e.deployctl("deploy", "alpha", "--only", "build").wantCode(t, 0)
	top := e.toplevel("alpha")
	if e.currentSystem("alpha") != "" || e.ssh("alpha", "ls /nix/store | grep -c nixos-system || true") != "0" {
		t.Errorf("--only build touched the host")
	}
	e.deployctl("deploy", "alpha", "--skip", "activate").wantCode(t, 0)
	if e.currentSystem("alpha") != "" || e.ssh("alpha", "nix-store --check-validity "+top+" && echo ok") != "ok" || e.ssh("alpha", "cat /run/keys/k") != "v1" {
		t.Errorf("--skip activate: alpha runs %q, or lacks %s, or its key holds %q", e.currentSystem("alpha"), top, e.ssh("alpha", "cat /run/keys/k"))
	}
	// The same system with another key text: --skip keys leaves the key.
	e.writeFlake(fixture.Host{Name: "alpha", Revision: "1", Deployment: map[string]any{"keys": map[string]any{"k": map[string]any{"text": "not uploaded"}}}})
	e.deployctl("deploy", "alpha", "--skip", "build,push,keys").wantCode(t, 0)
	if got := e.currentSystem("alpha"); got != top || e.ssh("alpha", "cat /run/keys/k") != "v1" {
		t.Errorf("--skip build,push,keys: alpha runs %q (want %s), its key holds %q", got, top, e.ssh("alpha", "cat /run/keys/k"))
	}
	e.writeFlake(withKey("2"))
	e.deployctl("deploy", "alpha", "--only", "keys").wantCode(t, 0)
	if got := e.ssh("alpha", "cat /run/keys/k"); got != "v2" || e.currentSystem("alpha") != top {
		t.Errorf("--only keys: the key holds %q, alpha runs %s (want %s)", got, e.currentSystem("alpha"), top)
	}
	// A revision never built before (this machine's store outlives tests).
	e.writeFlake(withKey("unbuilt-" + strconv.FormatInt(time.Now().UnixNano(), 36)))
	r := e.deployctl("deploy", "alpha", "--skip", "build")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "--skip build: not in the local store") || !strings.Contains(r.stderr, e.toplevel("alpha")) || e.currentSystem("alpha") != top {
		t.Errorf("--skip build with an unbuilt system does not stop naming it:\n%s", r.stderr)
	}
	if r := e.deployctl("deploy", "alpha", "--only", "keys", "--skip", "push"); r.code != 2 || !strings.Contains(r.stderr, "give --only or --skip, not both") {
		t.Errorf("--only with --skip: %d\n%s", r.code, r.stderr)
	}
	if r := e.deployctl("deploy", "alpha", "--skip", "coffee"); r.code != 2 || !strings.Contains(r.stderr, `no step "coffee": the steps are build, push, keys, activate, hooks`) {
		t.Errorf("an unknown step: %d\n%s", r.code, r.stderr)
	}
	if r := e.deployctl("deploy", "alpha", "--only", "hooks"); r.code != 2 || !strings.Contains(r.stderr, "nothing to do") {
		t.Errorf("--only hooks: %d\n%s", r.code, r.stderr)
	}
}

// TestDeployDryRun: --dry-run says what would be built, what the host
// lacks and what dry-activate says once the system is there, and changes
// nothing: the host runs its system, no journal line, no lock, no root.
func TestDeployDryRun(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	e.deployctl("deploy", "alpha").wantCode(t, 0)
	old := e.currentSystem("alpha")
	state := func() string {
		return e.ssh("alpha", "readlink /run/current-system; readlink /nix/var/nix/profiles/system; wc -l < /var/lib/deployctl/journal.jsonl; ls /run/deployctl | wc -l; ls -l /nix/var/nix/gcroots/deployctl")
	}
	before := state()

	e.writeFlake(fixture.Host{Name: "alpha", Revision: "dry-" + strconv.FormatInt(time.Now().UnixNano(), 36)})
	r := e.deployctl("deploy", "alpha", "--dry-run")
	r.wantCode(t, 0)
	for _, want := range []string{"[alpha] would build 1 derivation here", "[alpha] not built here yet", "[alpha] dry-activate: the system is not on the host yet", "deploy --dry-run (nothing was changed): 1 of 1 hosts ok"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("no %q in:\n%s", want, r.stderr)
		}
	}
	// A system built on its target is not dry-run here.
	r = e.deployctl("deploy", "alpha", "--dry-run", "--build-on-target")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[alpha] would be built on target") || strings.Contains(r.stderr, "would build 1 derivation here") {
		t.Errorf("the dry run of a system built on its target:\n%s", r.stderr)
	}
	e.deployctl("build", "alpha").wantCode(t, 0)
	r = e.deployctl("deploy", "alpha", "--dry-run")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[alpha] built already") || !strings.Contains(r.stderr, "[alpha] would send 1 of 2 paths") {
		t.Errorf("the dry run does not say what would be sent:\n%s", r.stderr)
	}
	if got := state(); got != before {
		t.Errorf("the dry runs changed alpha:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	e.deployctl("deploy", "alpha", "--skip", "activate").wantCode(t, 0)
	pushed := state()
	r = e.deployctl("deploy", "alpha", "--dry-run")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[alpha] would send 0 of 2 paths") || !strings.Contains(r.stderr, "[alpha] would activate "+e.toplevel("alpha")) {
		t.Errorf("the dry run does not show dry-activate's output:\n%s", r.stderr)
	}
	if got := state(); got != pushed || e.currentSystem("alpha") != old {
		t.Errorf("the dry run changed alpha:\nbefore:\n%s\nafter:\n%s", pushed, got)
	}
}

// TestCompletion: shell completion offers the flake's host names and
// @tags for selectors (from one evaluation of the deployment options),
// and the actions and steps for their flags.
func TestCompletion(t *testing.T) {
	nixtest.Require(t, "nix")
	dir := t.TempDir()
	if err := fixture.Write(dir, []fixture.Host{
		{Name: "web-1", Deployment: map[string]any{"tags": []string{"web", "eu"}}},
		{Name: "web-2", Deployment: map[string]any{"tags": []string{"web"}}},
		{Name: "db-1"},
	}); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, home: t.TempDir()}
	complete := func(args ...string) []string {
		var stdout, stderr bytes.Buffer
		code := cli.Main(context.Background(), cli.Invocation{Args: append([]string{"__complete", "--flake", dir}, args...), Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Env: e.env()})
		if code != 0 {
			t.Fatalf("completion %v exited %d: %s", args, code, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		return lines[:len(lines)-1] // the last line is cobra's directive
	}
	if got := complete("deploy", "web"); strings.Join(got, " ") != "web-1 web-2" {
		t.Errorf("deploy web…: %v", got)
	}
	if got := complete("status", "@"); strings.Join(got, " ") != "@eu @web" {
		t.Errorf("status @…: %v", got)
	}
	if got := complete("build", "web-1", ""); strings.Join(got, " ") != "@eu @web db-1 web-2" {
		t.Errorf("build web-1 …: %v", got)
	}
	if got := complete("deploy", "--action", ""); strings.Join(got, " ") != "switch boot test dry-activate" {
		t.Errorf("--action: %v", got)
	}
	if got := complete("deploy", "--skip", ""); strings.Join(got, " ") != "build push keys activate hooks" {
		t.Errorf("--skip: %v", got)
	}
}

// TestJSONEventsForEarlyFailures: with --json, a host that fails before
// its steps (here its evaluation) has a failed event naming the step, and
// the skipped ones of a halted rollout a skipped event.
func TestJSONEventsForEarlyFailures(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", EvalFail: "broken on purpose"}, fixture.Host{Name: "gamma"})
	r := e.deployctl("deploy", "--all", "--json", "--max-failures", "0", "--parallel", "1")
	r.wantCode(t, 3)
	for _, want := range []string{
		`"host":"alpha","step":"activate","state":"done"`,
		`"host":"beta","step":"eval","state":"failed","error":"error: broken on purpose`,
		`"host":"gamma","state":"skipped","error":"the rollout halted: 1 failed, more than the 0 allowed"`,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no event with %s in:\n%s", want, r.stdout)
		}
	}
}
