package activate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestBusyErrorNamesHolder: a lock's JSON holder is shown as a sentence; a
// holder written by something else is shown as it is.
func TestBusyErrorNamesHolder(t *testing.T) {
	h := Holder{ID: "x", User: "ada", Machine: "laptop", PID: 42, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local), Toplevel: "/nix/store/aaaa-sys", Action: "switch"}
	js := `{"id":"x","user":"ada","machine":"laptop","pid":42,"started":"` + h.Started.Format(time.RFC3339) + `","toplevel":"/nix/store/aaaa-sys","action":"switch"}`
	if got, want := (&BusyError{Holder: js}).Error(), "another deploy holds the host: ada@laptop (pid 42), since 2026-01-02 03:04:05, activating /nix/store/aaaa-sys (switch)"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := (&BusyError{Holder: "  someone else\n"}).Error(); got != "another deploy holds the host: someone else" {
		t.Errorf("a foreign holder: %q", got)
	}
}

// TestSwitchErrorSaysWhatBecameOfTheHost: the message gives the status's
// meaning and whether the host was rolled back, and why not.
func TestSwitchErrorSaysWhatBecameOfTheHost(t *testing.T) {
	for _, c := range []struct {
		err  SwitchError
		want string
	}{
		{SwitchError{Action: "switch", Status: 2, Outcome: Outcome{RolledBack: true, Previous: "/nix/store/old"}, Output: "boom\n"},
			"switch-to-configuration switch exited 2 (the activation script failed); rolled back to /nix/store/old\nits output ends:\nboom"},
		{SwitchError{Action: "test", Status: 4, Outcome: Outcome{Err: errors.New("exit status 3: nothing ran before")}},
			"switch-to-configuration test exited 4 (some units failed); NOT rolled back: exit status 3: nothing ran before"},
		{SwitchError{Action: "boot", Status: 1},
			"switch-to-configuration boot exited 1 (a pre-switch check or the boot loader failed); left as it is (--no-rollback)"},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
	if !strings.Contains((&SwitchError{Action: "switch", Status: 9, Outcome: Outcome{RolledBack: true}}).Error(), "exited 9 (it failed)") {
		t.Errorf("an unknown status is not named as a failure")
	}
}

// TestOutcomeSaysWhoRolledBack: a rollback by the host's watchdog is told
// apart from deployctl's own.
func TestOutcomeSaysWhoRolledBack(t *testing.T) {
	if got := (Outcome{RolledBack: true, ByWatchdog: true, Previous: "/nix/store/old"}).String(); got != "the host rolled itself back to /nix/store/old" {
		t.Errorf("got %q", got)
	}
	e := &UnconfirmedError{Timeout: 5 * time.Second, Cause: errors.New("connection refused"), Outcome: Outcome{RolledBack: true, ByWatchdog: true, Previous: "/nix/store/old"}}
	if got, want := e.Error(), "no new SSH connection to the host could check in within 5s of the switch (the new system may break SSH); the host rolled itself back to /nix/store/old\nthe check-in's error: connection refused"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
