package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/serve"
)

// TestRemoteHelper: deployctl-remote is valid POSIX sh (dash -n), says its
// protocol, refuses a step it lacks, and a step sent as one command
// (Direct, for a host without deployctl-remote) runs exactly what the
// helper's script for it execs.
func TestRemoteHelper(t *testing.T) {
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "sh"
	}
	seen := map[string]bool{}
	for _, s := range remoteSteps() {
		if seen[s.Name] {
			t.Errorf("two steps are called %s", s.Name)
		}
		seen[s.Name] = true
	}
	// A nix-store that prints its command line, first on the helper's
	// PATH (which is its own, whatever the caller's).
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "nix-store"), []byte("#!/bin/sh\nprintf '%s\\n' nix-store \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := RemoteHelper()
	pathLine := regexp.MustCompile(`(?m)^PATH=(/run/wrappers/bin:\S+)$`)
	if m := pathLine.FindStringSubmatch(text); m == nil || !strings.Contains(m[1], "/usr/bin") {
		t.Fatalf("deployctl-remote sets no PATH of its own")
	}
	text = pathLine.ReplaceAllString(text, "PATH="+bin+":$1")
	helper := filepath.Join(t.TempDir(), "deployctl-remote")
	if err := os.WriteFile(helper, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sh, "-n", helper).CombinedOutput(); err != nil {
		t.Fatalf("deployctl-remote does not parse: %v\n%s", err, out)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(sh, append([]string{helper}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("--protocol"); err != nil || out != "1\n" {
		t.Errorf("--protocol: %q, %v", out, err)
	}
	out, err := run("reboot", "now")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 64 || !strings.Contains(out, "no step reboot") {
		t.Errorf("an unknown step: %v\n%s", err, out)
	}

	if err := os.WriteFile(filepath.Join(bin, "nix-daemon"), []byte("#!/bin/sh\nprintf '%s\\n' nix-daemon \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	drv, root, top := "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a.drv", remote.GCRootDir+"/build-a", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a"
	sentAlone := func(step *remote.Step, args ...string) []string { return step.Direct(args) }
	for _, c := range []struct{ args, want []string }{
		{[]string{"serve"}, sentAlone(serve.Step)},
		{[]string{"serve", "--write"}, sentAlone(serve.Step, "--write")},
		{[]string{"build", drv, root}, sentAlone(stepNamed(t, "build"), drv, root)},
		{[]string{"build", drv, root, "--max-jobs", "4"}, sentAlone(stepNamed(t, "build"), drv, root, "--max-jobs", "4")},
		{[]string{"build-dry-run", drv, drv}, sentAlone(stepNamed(t, "build-dry-run"), drv, drv)},
		{[]string{"realise", top}, sentAlone(stepNamed(t, "realise"), top)},
		// nix copy's remote-programs, with the arguments Nix adds.
		{[]string{"serve", "--serve", "--write"}, []string{"nix-store", "--serve", "--write"}},
		{[]string{"daemon", "--stdio"}, []string{"nix-daemon", "--stdio"}},
	} {
		if out, err := run(c.args...); err != nil || out != strings.Join(c.want, "\n")+"\n" {
			t.Errorf("%q runs\n%s(%v), want %q", c.args, out, err, c.want)
		}
	}
	for _, bad := range [][]string{
		{"serve", "--write", "--option", "x"},
		{"daemon", "--stdio", "--option", "x"},
		{"build", drv, "/tmp/root"},
		{"build", "/tmp/x.drv", root},
		{"build", drv, root, "--option", "sandbox", "false"},
		{"realise", "/nix/store/x/../../../tmp"},
		{"dry-activate", "/tmp/evil"},
		{"lease", "../../etc", "{}", "switch", "/nix/store/x-a"},
		{"lease", "id", "{}", "switch", "/tmp/evil"},
		{"start-job", "id", "../x", ""},
		{"wait-job", "id", "../../etc/shadow"},
		{"key-upload", "/run/keys", "../shadow", "root", "root", "0400", "0400"},
		{"key-upload", "/run/keys", "k", "--reference=/etc/shadow", "root", "0400", "0400"},
		{"key-upload", "/run/keys", "k", "root", "root", "u+s", "0400"},
		{"key-reown", "/run/keys/..", "root", "root", "0400"},
		{"key-reown", "/run/keys/k", "-x", "root", "0400"},
		{"journal", "{}\n{\"forged\":1}"},
		{"journal", "not json"},
		{"lease", "id", "{}\n", "switch", "/nix/store/x-a"},
		{"push-root", "/nix/store/x-a", remote.GCRootDir + "/pushed/x"},
	} {
		out, err := run(bad...)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 64 || strings.Contains(out, "nix-store") {
			t.Errorf("%q is not refused: %v\n%s", bad, err, out)
		}
	}
}

// stepNamed is the helper's step called name.
func stepNamed(t *testing.T, name string) *remote.Step {
	t.Helper()
	for _, s := range remoteSteps() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %s", name)
	return nil
}
