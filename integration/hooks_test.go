package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/hooks"
)

// hooked is a host whose every hook point runs a local and a target hook,
// each appending "POINT HOST TOPLEVEL PREVIOUS ACTION" to a log: local
// ones to localLog, target ones to the host's /var/lib/deployctl/hooks.log.
func hooked(h fixture.Host, localLog string, extra map[string][]map[string]any) fixture.Host {
	line := `echo "$DEPLOYCTL_PHASE $DEPLOYCTL_HOST ${DEPLOYCTL_TOPLEVEL:-none} ${DEPLOYCTL_PREVIOUS:-none} ${DEPLOYCTL_ACTION:-none}"`
	hs := map[string]any{}
	for _, p := range hooks.Points {
		list := []map[string]any{
			{"command": []string{"sh", "-c", line + " >> " + localLog}, "on": "local"},
			{"command": []string{"sh", "-c", line + " >> /var/lib/deployctl/hooks.log"}, "on": "target"},
		}
		hs[p] = append(list, extra[p]...)
	}
	if h.Deployment == nil {
		h.Deployment = map[string]any{}
	}
	h.Deployment["hooks"] = hs
	return h
}

// TestHooks: every hook point runs, local and target, in order and with
// its variables; a failing preActivate hook stops its host, which keeps
// its system, while the other deploys; a failing postActivate hook rolls
// its host back, and then the postRollback hooks run.
func TestHooks(t *testing.T) {
	dir := t.TempDir()
	logOf := func(h string) string { return filepath.Join(dir, h+".log") }
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	e.writeFlake(hooked(fixture.Host{Name: "alpha"}, logOf("alpha"), nil), hooked(fixture.Host{Name: "beta"}, logOf("beta"), nil))
	e.deployctl("deploy", "--all").wantCode(t, 0)
	top := e.toplevel("alpha")
	want := []string{
		"preBuild alpha none none none",
		"postBuild alpha " + top + " none none",
		"prePush alpha " + top + " none none",
		"postPush alpha " + top + " none none",
		"preActivate alpha " + top + " none switch",
		"postActivate alpha " + top + " none switch",
	}
	read := func(path string) []string {
		b, _ := os.ReadFile(path)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	if got := read(logOf("alpha")); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("alpha's local hooks ran:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := e.ssh("alpha", "cat /var/lib/deployctl/hooks.log"); got != strings.Join(want, "\n") {
		t.Errorf("alpha's target hooks ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	// --skip hooks: none runs, on either side.
	e.deployctl("deploy", "alpha", "--skip", "hooks").wantCode(t, 0)
	if got := read(logOf("alpha")); len(got) != len(want) || e.ssh("alpha", "wc -l < /var/lib/deployctl/hooks.log") != strconv.Itoa(len(want)) {
		t.Errorf("--skip hooks ran hooks: %d local lines, %s on the host", len(got), e.ssh("alpha", "wc -l < /var/lib/deployctl/hooks.log"))
	}

	// beta's preActivate hook fails: beta keeps its system, alpha deploys;
	// then alpha's postActivate hook fails: alpha goes back, and its
	// postRollback hooks run.
	betaBefore, alphaBefore := e.currentSystem("beta"), e.currentSystem("alpha")
	os.Remove(logOf("alpha"))
	stop := map[string][]map[string]any{"preActivate": {{"command": []string{"sh", "-c", "echo 'not in the maintenance window' >&2; exit 1"}}}}
	e.writeFlake(hooked(fixture.Host{Name: "alpha", Revision: "2"}, logOf("alpha"), nil), hooked(fixture.Host{Name: "beta", Revision: "2"}, logOf("beta"), stop))
	r := e.deployctl("deploy", "--all")
	r.wantCode(t, 3)
	if !regexp.MustCompile(`(?m)^  beta +FAILED +\S+ +preActivate hook: preActivate hook 3 \(local, sh -c .*\): exit status 1: not in the maintenance window$`).MatchString(r.stderr) {
		t.Errorf("beta's failing preActivate hook is not reported:\n%s", r.stderr)
	}
	if got := e.currentSystem("beta"); got != betaBefore {
		t.Errorf("beta runs %s after its preActivate hook failed, want %s", got, betaBefore)
	}
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want || got == alphaBefore {
		t.Errorf("alpha runs %s, want its new system %s", got, want)
	}

	fail := map[string][]map[string]any{"postActivate": {{"command": []string{"sh", "-c", "echo 'smoke test failed' >&2; exit 2"}, "on": "target"}}}
	e.writeFlake(hooked(fixture.Host{Name: "alpha", Revision: "3"}, logOf("alpha"), fail), hooked(fixture.Host{Name: "beta", Revision: "2"}, logOf("beta"), stop))
	previous := e.currentSystem("alpha")
	os.Remove(logOf("alpha"))
	r = e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "a health check failed; rolled back to "+previous) || !strings.Contains(r.stderr, "smoke test failed") {
		t.Errorf("alpha's failing postActivate hook does not roll it back:\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != previous {
		t.Errorf("alpha runs %s, want it rolled back to %s", got, previous)
	}
	got := read(logOf("alpha"))
	rolledBack := "postRollback alpha " + e.toplevel("alpha") + " " + previous + " switch"
	if last := got[len(got)-1]; last != rolledBack {
		t.Errorf("the postRollback hook did not run last with the systems: %v", got)
	}
	if remote := e.ssh("alpha", "tail -n 1 /var/lib/deployctl/hooks.log"); remote != rolledBack {
		t.Errorf("the target's postRollback hook did not run last: %q", remote)
	}

	// A failing postPush hook fails the host without undoing the push:
	// the system is in the host's store, and it is not activated.
	failPush := map[string][]map[string]any{"postPush": {{"command": []string{"false"}, "on": "target"}}}
	e.writeFlake(hooked(fixture.Host{Name: "alpha", Revision: "4"}, logOf("alpha"), failPush), hooked(fixture.Host{Name: "beta", Revision: "2"}, logOf("beta"), stop))
	running := e.currentSystem("alpha")
	r = e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +postPush hook: postPush hook 3 \(target, false\): exit status 1`).MatchString(r.stderr) {
		t.Errorf("the failing postPush hook is not reported:\n%s", r.stderr)
	}
	if top := e.toplevel("alpha"); e.ssh("alpha", "nix-store --check-validity "+top+" && echo valid") != "valid" || e.currentSystem("alpha") != running {
		t.Errorf("after a failing postPush hook alpha's store lacks %s or it was activated (runs %s)", top, e.currentSystem("alpha"))
	}

	// A failing postBuild target hook: with --json, the host's build is
	// done and then the hook's step failed (the last word on the host),
	// and --log-dir keeps the hook's command and output.
	failBuild := map[string][]map[string]any{"postBuild": {{"command": []string{"sh", "-c", "echo 'build rejected' >&2; exit 1"}, "on": "target"}}}
	e.writeFlake(hooked(fixture.Host{Name: "alpha", Revision: "5"}, logOf("alpha"), failBuild))
	logs := filepath.Join(t.TempDir(), "logs")
	r = e.deployctl("deploy", "alpha", "--json", "--log-dir", logs)
	r.wantCode(t, 1)
	for _, want := range []string{`"host":"alpha","step":"build","state":"done"`, `"host":"alpha","step":"postBuild hook","state":"failed"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no event with %s in:\n%s", want, r.stdout)
		}
	}
	if data, err := os.ReadFile(filepath.Join(logs, "alpha", "postBuild_hook.log")); err != nil || !strings.Contains(string(data), "err| build rejected") {
		t.Errorf("the postBuild hook's log: %v\n%s", err, data)
	}
}

// TestDeployPipelinesPerHost: deploy runs each host's phases one after
// the other on their own: a host whose push is done activates while
// another still pushes (here held up by a prePush hook).
func TestDeployPipelinesPerHost(t *testing.T) {
	slow := map[string]any{"hooks": map[string]any{"prePush": []any{map[string]any{"command": []string{"sleep", "3"}}}}}
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", Deployment: slow})
	r := e.deployctl("deploy", "--all")
	r.wantCode(t, 0)
	done, pushed := strings.Index(r.stderr, "[alpha] switch done"), strings.Index(r.stderr, "[beta] pushed")
	if done < 0 || pushed < 0 || done > pushed {
		t.Errorf("alpha did not activate while beta was still pushing:\n%s", r.stderr)
	}
}
