package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/deployctl/deployctl/integration/fixture"
)

// TestLogDir: --log-dir keeps, per host and step, every remote command
// with its full output and how it ended; a failed switch's output and
// status are there to read after the run, and a second run appends.
func TestLogDir(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", FailExit: 2})
	dir := filepath.Join(t.TempDir(), "logs")
	r := e.deployctl("deploy", "--all", "--log-dir", dir)
	r.wantCode(t, 3)
	read := func(host, step string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, host, step+".log"))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	want := func(text string, res ...string) {
		t.Helper()
		for _, re := range res {
			if !regexp.MustCompile(re).MatchString(text) {
				t.Errorf("no line matching %s in:\n%s", re, text)
			}
		}
	}
	top := regexp.QuoteMeta(e.toplevel("alpha"))
	want(read("alpha", "push"),
		`(?m)^==== deployctl .*deploy --all --log-dir .*: push of alpha, \d{4}-`,
		`(?m)^\[\d+\] [0-9:.]+ \$ ssh .*nix-store --serve --write.*# its output is a protocol stream: not recorded$`,
		`(?m)^\[\d+\] exit status 0 after`)
	want(read("alpha", "activate"),
		`(?m)^\[\d+\] (cmd\| |[0-9:.]+ \$ ssh ).*switch-to-configuration`,
		`(?m)^\[\d+\] (out|err)\| activating the configuration `+top+`\.\.\.$`,
		`(?m)^\[\d+\] exit status 0 after`)
	// beta's switch failed: its words and its status (which the job's
	// waiter prints) are in the log, and so is the rollback's answer.
	want(read("beta", "activate"),
		`(?m)^\[\d+\] err\| warning: the following units failed: fixture.service \(fixture exit 2\)$`,
		`(?m)^\[\d+\] out\| 2$`,
		`(?m)^\[\d+\] err\| no system ran before this deploy: nothing to roll back to$`)
	// A second run appends below a line of its own.
	e.deployctl("activate", "alpha", "--log-dir", dir).wantCode(t, 0)
	if n := len(regexp.MustCompile(`(?m)^==== deployctl `).FindAllString(read("alpha", "activate"), -1)); n != 2 {
		t.Errorf("alpha's activate.log has %d runs, want 2:\n%s", n, read("alpha", "activate"))
	}
}
