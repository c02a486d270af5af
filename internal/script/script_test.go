package script

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/shell"
)

// TestPreviousExpandsInsideQuotedWords: a command holding Previous, quoted
// once (run here) or twice (through ssh), gets the script's $previous
// where it stood, as one word with the rest of its own.
func TestPreviousExpandsInsideQuotedWords(t *testing.T) {
	argv := []string{"printf", "%s|", "DEPLOYCTL_PREVIOUS=" + Previous, "it's"}
	once := previous(shell.Join(argv))
	twice := previous(shell.Join([]string{"sh", "-c", shell.Join(argv)}))
	for _, line := range []string{once, twice} {
		out, err := exec.Command("sh", "-c", "previous=/nix/store/abc-system; "+line).Output()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if got, want := string(out), "%s|"[:0]+"DEPLOYCTL_PREVIOUS=/nix/store/abc-system|it's|"; got != want {
			t.Errorf("%s printed %q, want %q", line, got, want)
		}
	}
}

// TestWriteIsValidShell: a plan with every part parses as POSIX sh, runs
// the parts in a deploy's order, and names what it leaves out.
func TestWriteIsValidShell(t *testing.T) {
	h := Host{
		Name: "web-1", Toplevel: "/nix/store/x-system", Action: "switch",
		Build:        []Step{{What: "build there", Line: "echo build"}},
		Push:         &Step{What: "push", Line: "echo push"},
		PreKeys:      []Step{{What: "key", Line: "echo key | cat"}},
		AfterSwitch:  []Step{{What: "post key", Line: "echo postkey"}},
		Hooks:        map[string][]Step{"preBuild": {{Line: "echo prebuild"}}, "prePush": {{Line: "echo prepush"}}, "preActivate": {{Line: "echo preactivate"}}, "postActivate": {{Line: "echo postactivate"}}, "postRollback": {{Line: "echo postrollback"}}},
		ReadPrevious: "echo /nix/store/old",
		Record:       "echo record", Realise: "echo realise", Switch: "cat >/dev/null; echo switch", Rollback: "echo rollback",
		Checks:       []Check{{What: "check", Line: "true", Period: 200 * time.Millisecond}},
		ProbeTimeout: 3 * time.Second,
	}
	var b bytes.Buffer
	if err := Write(&b, Script{Command: "deployctl deploy web-1", Notes: []string{"it holds a lock"}, Build: "echo buildhere", Hosts: []Host{h}}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", "-c", b.String()).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v: %s\n%s", err, out, b.String())
	}
	// Piped into sh, as people do: every step still runs.
	run := exec.Command("sh")
	run.Stdin = bytes.NewReader(b.Bytes())
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("the script failed: %v\n%s", err, out)
	}
	want := "prebuild buildhere build prepush push record realise preactivate key switch postactivate postkey"
	if got := strings.Join(strings.Fields(strings.ReplaceAll(string(out), "web-1: deployed", "")), " "); got != want {
		t.Errorf("ran %q, want %q", got, want)
	}
	if !strings.Contains(b.String(), "#   - it holds a lock") || !strings.Contains(b.String(), "#   - check\n") || !strings.Contains(b.String(), "rollback_web_1()") {
		t.Errorf("the notes, the checks' names or the rollback function are missing:\n%s", b.String())
	}
}
