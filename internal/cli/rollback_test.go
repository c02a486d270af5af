package cli

import (
	"strings"
	"testing"

	"github.com/deployctl/deployctl/activate"
)

// TestRollbackTarget: a rollback undoes the last deploy that the host
// still has, with that deploy's action, and refuses, saying why, when
// there is nothing to undo.
func TestRollbackTarget(t *testing.T) {
	entry := func(result, action string, rolledBack bool) *activate.JournalEntry {
		return &activate.JournalEntry{ID: "d1", Action: action, Result: result, RolledBack: rolledBack,
			Previous: "/nix/store/old", PreviousProfile: "/nix/store/oldprof", New: "/nix/store/new"}
	}
	for _, c := range []struct {
		st           activate.HostStatus
		target, want string
	}{
		{activate.HostStatus{Running: "/nix/store/new", LastDeploy: entry("ok", "switch", false)}, "/nix/store/old switch", ""},
		{activate.HostStatus{Running: "/nix/store/new", LastDeploy: entry("ok", "test", false)}, "/nix/store/old test", ""},
		{activate.HostStatus{Running: "/nix/store/x", Profile: "/nix/store/new", LastDeploy: entry("ok", "boot", false)}, "/nix/store/oldprof boot", ""},
		{activate.HostStatus{Running: "/nix/store/new", LastDeploy: entry("failed", "switch", false)}, "/nix/store/old switch", ""},
		{activate.HostStatus{Running: "/nix/store/old", LastDeploy: entry("rolled back", "switch", true)}, "", "was rolled back already"},
		{activate.HostStatus{Running: "/nix/store/old", LastDeploy: entry("failed", "switch", true)}, "", "failed and was rolled back already"},
		{activate.HostStatus{Running: "/nix/store/other", LastDeploy: entry("ok", "switch", false)}, "", "but the host has /nix/store/other now"},
		{activate.HostStatus{}, "", "records no deploy"},
	} {
		target, action, err := rollbackTarget(&c.st)
		switch {
		case c.want == "" && (err != nil || target+" "+action != c.target):
			t.Errorf("%+v: got %s %s, %v; want %s", c.st.LastDeploy, target, action, err, c.target)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: got %v, want an error saying %q", c.st.LastDeploy, err, c.want)
		}
	}
	noPrev := entry("ok", "switch", false)
	noPrev.Previous = ""
	if _, _, err := rollbackTarget(&activate.HostStatus{Running: "/nix/store/new", LastDeploy: noPrev}); err == nil || !strings.Contains(err.Error(), "no earlier system") {
		t.Errorf("a first deploy: %v", err)
	}
}

// TestDetachedAt: a detached activation says what becomes of its host.
func TestDetachedAt(t *testing.T) {
	for _, c := range []struct {
		res  *activate.Result
		want string
	}{
		{nil, "detached before the switch: nothing changed on the host"},
		{&activate.Result{Stage: "lock"}, "detached before the switch: nothing changed on the host"},
		{&activate.Result{Stage: "switch", Armed: true}, "detached during the switch, which runs on on the host; with no one to check in or disarm it, the host's dead-man's switch rolls it back when its deadline passes"},
		{&activate.Result{Stage: "checks"}, "detached after the switch; the new system stays"},
	} {
		if got := detachedAt(c.res); got != c.want {
			t.Errorf("%+v: %q, want %q", c.res, got, c.want)
		}
	}
}
