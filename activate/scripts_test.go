package activate

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestScriptsParse: every script the target runs is valid POSIX sh (dash
// -n, the shell Debian's sh is), the watchdog with its settings prefix.
func TestScriptsParse(t *testing.T) {
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "sh"
	}
	for name, script := range map[string]string{
		"keeper": keeperScript, "lease": leaseScript, "startJob": startJobScript, "switchJob": switchJob,
		"rollbackJob": rollbackJob, "waitJob": waitJobScript, "result": resultScript, "watchdog": "tmo=30\n" + watchdogJob,
		"claim": claimScript, "checkin": checkinScript, "status": statusScript,
	} {
		if out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}

// TestWatchdogJournalLine: the line the watchdog appends after rolling
// back on its own is a JournalEntry like deployctl's.
func TestWatchdogJournalLine(t *testing.T) {
	w := t.TempDir()
	for name, content := range map[string]string{
		"holder.json": `{"id":"x","user":"ada","machine":"lap\"top","pid":1}`, "action": "switch",
		"previous": "/nix/store/old", "previous-profile": "/nix/store/old", "toplevel": "/nix/store/new", "switch.status": "0",
	} {
		if err := os.WriteFile(filepath.Join(w, name), []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	journal := filepath.Join(w, "log", "journal.jsonl")
	script := "w=" + w + "; st=0\n" + strings.ReplaceAll(watchdogJournal, Journal, journal)
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	line, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	var e JournalEntry
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if e.User != "ada" || e.Machine != "unknown" || e.Action != "switch" || e.Previous != "/nix/store/old" || e.New != "/nix/store/new" ||
		e.Result != "rolled back" || !e.RolledBack || !e.ByWatchdog || e.ID != filepath.Base(w) || e.Time.IsZero() {
		t.Errorf("the watchdog's journal line reads %+v", e)
	}
}
