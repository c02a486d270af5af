package activate

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/remote"
)

// TestScriptsParse: every script the target runs is valid POSIX sh (dash
// -n, the shell Debian's sh is): each step, and the keeper and jobs the
// steps carry as text, the watchdog with its settings prefix.
func TestScriptsParse(t *testing.T) {
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "sh"
	}
	scripts := map[string]string{
		"keeper": keeperScript, "switchJob": switchJob, "rollbackJob": rollbackJob, "watchdog": "tmo=30\n" + watchdogJob,
	}
	for _, step := range Steps() {
		scripts[step.Name] = step.Body
	}
	for name, script := range scripts {
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

// TestDetachEscapesForSystemd runs detachFn against a fake systemd-run
// that undoes systemd's $$ escaping and runs the command: every argument
// arrives whole ($, %, backslashes, quotes, newlines); and when
// systemd-run fails, the command runs as a setsid child all the same.
func TestDetachEscapesForSystemd(t *testing.T) {
	dir := t.TempDir()
	sysdir := filepath.Join(dir, "run-systemd-system")
	bin := filepath.Join(dir, "bin")
	for _, d := range []string{sysdir, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The fake: skip to "--", unescape $$ in each argument, run it.
	fake := `#!/bin/sh
[ -z "$FAIL" ] || exit 1
while [ "$1" != -- ]; do shift; done; shift
n=$#; i=0
while [ "$i" -lt "$n" ]; do set -- "$@" "$(printf '%s' "$1" | sed 's/\$\$/$/g')"; shift; i=$((i + 1)); done
exec "$@"
`
	if err := os.WriteFile(filepath.Join(bin, "systemd-run"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	arg := "a $HOME %n \\ ' \" \n end $$"
	job := `printf '%s|%s' "$1" "$0" > "$2"`
	for _, fail := range []string{"", "1"} {
		os.Remove(out)
		script := strings.ReplaceAll(detachFn, "/run/systemd/system", sysdir) + `detach keep t "test" "$1" "$2" "$3" "$4"`
		cmd := exec.Command("sh", "-c", script, "sh", job, "zero", arg, out)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FAIL="+fail)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("detach: %v\n%s", err, b)
		}
		var got []byte
		for i := 0; i < 100 && len(got) == 0; i++ {
			got, _ = os.ReadFile(out)
			time.Sleep(10 * time.Millisecond)
		}
		if string(got) != arg+"|zero" {
			t.Errorf("systemd-run failing=%q: the command got %q, want %q", fail, got, arg+"|zero")
		}
	}
}

// TestAwaitStatusAsksSystemd runs the waiters' awaitStatus against a fake
// systemctl: where the job ran as the unit systemd has loaded (its
// invocation recorded), the answer is systemd's (an exit status, also
// without a status file; a kill told as such); elsewhere, a stale unit of
// the same name included, the status file's.
func TestAwaitStatusAsksSystemd(t *testing.T) {
	dir := t.TempDir()
	sysdir := filepath.Join(dir, "run-systemd-system")
	bin := filepath.Join(dir, "bin")
	w := filepath.Join(dir, "deploy")
	for _, d := range []string{sysdir, bin, w} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The fake answers `systemctl show -p PROP --value UNIT` from $PROP.
	fake := "#!/bin/sh\n[ \"$1\" = show ] && [ \"$2\" = -p ] || exit 1\neval \"printf '%s\\n' \\\"\\$$3\\\"\"\n"
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	// A job whose process group is gone.
	if err := os.WriteFile(filepath.Join(w, "switch.pid"), []byte("999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const ended = "InvocationID=abc LoadState=loaded "
	script := "w=$0\n" + strings.ReplaceAll(awaitStatus+reportStatus, "/run/systemd/system", sysdir)
	// A job whose process group lives waits for it: here a group whose
	// leader writes the status after a moment.
	os.Remove(filepath.Join(w, "switch.status"))
	os.Remove(filepath.Join(w, "switch.unit"))
	job := exec.Command("setsid", "sh", "-c", `echo $$ > "$0/switch.pid"; sleep 0.5; echo 7 > "$0/switch.status"`, w)
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	out, err := exec.Command("sh", "-c", "w=$0\n"+strings.ReplaceAll(awaitStatus+reportStatus, "/run/systemd/system", sysdir), w, "id", "switch").CombinedOutput()
	job.Wait()
	if err != nil || strings.TrimSpace(string(out)) != "7" {
		t.Errorf("a running job: %v, %q; want its status 7", err, out)
	}
	if err := os.WriteFile(filepath.Join(w, "switch.pid"), []byte("999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, unit, env, file string
		code                  int
		out                   string
	}{
		{"success, no status file", "abc", ended + "ActiveState=active SubState=exited Result=success ExecMainCode=1 ExecMainStatus=0", "", 0, "0"},
		{"4, the file says otherwise", "abc", ended + "ActiveState=active SubState=exited Result=success ExecMainCode=1 ExecMainStatus=4", "0", 0, "4"},
		{"killed", "abc", ended + "ActiveState=failed SubState=failed Result=signal ExecMainCode=2 ExecMainStatus=9", "", 71, "the switch job was killed by signal 9 (systemd: deployctl-id-switch.service, Result=signal)"},
		{"a stale unit: the file", "old", ended + "ActiveState=failed SubState=failed Result=exit-code ExecMainCode=1 ExecMainStatus=203", "0", 0, "0"},
		{"no unit: the file", "", "", "3", 0, "3"},
		{"no unit, no file", "", "", "", 71, "the switch job's process is gone without an exit status (killed?)"},
	} {
		for name, content := range map[string]string{"switch.status": c.file, "switch.unit": c.unit} {
			os.Remove(filepath.Join(w, name))
			if content != "" {
				if err := os.WriteFile(filepath.Join(w, name), []byte(content+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		cmd := exec.Command("sh", "-c", script, w, "id", "switch")
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		cmd.Env = append(cmd.Env, strings.Fields(c.env)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || strings.TrimSpace(string(out)) != c.out {
			t.Errorf("%s: exit %d, %q; want exit %d, %q", c.name, code, out, c.code, c.out)
		}
	}
}

// localTarget runs steps on this machine with sh, their paths moved into a
// test's directory.
type localTarget struct{ moved *strings.Replacer }

func (l localTarget) Run(ctx context.Context, cmd remote.Cmd) error {
	c := exec.CommandContext(ctx, "sh", append([]string{"-c", l.moved.Replace(cmd.Step.Body), "step"}, cmd.Argv...)...)
	c.Stdin, c.Stdout, c.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	return c.Run()
}

func (l localTarget) Start(context.Context, remote.Cmd) (*remote.Process, error) {
	return nil, errors.New("not here")
}

// TestStatusReadsAFailure: status reads back the journal line of a failed
// deploy, whose error holds line breaks (as \n in its JSON), and the
// lock's holder.
func TestStatusReadsAFailure(t *testing.T) {
	dir := t.TempDir()
	want := JournalEntry{ID: "x", Action: "switch", Result: "rolled back", Error: "switch-to-configuration switch exited 2; its output ends:\nfailed\\units\tc"}
	line, _ := json.Marshal(want)
	if err := os.WriteFile(filepath.Join(dir, "journal.jsonl"), append(append([]byte(`{"old":1}`+"\n"), line...), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	moved := strings.NewReplacer(Journal, filepath.Join(dir, "journal.jsonl"), Dir, dir, SystemProfile, filepath.Join(dir, "profile"))
	st, err := Status(t.Context(), localTarget{moved})
	if err != nil {
		t.Fatal(err)
	}
	if st.LastDeploy == nil || st.LastDeploy.Error != want.Error || st.LastDeploy.Result != want.Result {
		t.Errorf("the last deploy reads back as %+v, want %+v", st.LastDeploy, want)
	}
}
