package remote

import (
	"os/exec"
	"testing"
)

// TestStepChecks: store_path and gc_root accept what deployctl passes and
// refuse what would reach elsewhere.
func TestStepChecks(t *testing.T) {
	for _, c := range []struct {
		fn, arg string
		ok      bool
	}{
		{"store_path", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a", true},
		{"store_path", "/nix/store/x/../../../etc", false},
		{"store_path", "/nix/store/x/bin", false},
		{"store_path", "/nix/store/..", false},
		{"store_path", "/tmp/nix/store/x", false},
		{"gc_root", GCRootDir + "/pushed", true},
		{"gc_root", GCRootDir + "/build-web-1", true},
		{"gc_root", GCRootDir + "/flake-inputs.new/abc-source", true},
		{"gc_root", GCRootDir + "/pushed/x", false},
		{"gc_root", GCRootDir + "/..", false},
		{"gc_root", GCRootDir + "/flake-inputs.new/..", false},
		{"gc_root", GCRootDir + "/flake-inputs.new/a/b", false},
		{"gc_root", GCRootDir + "/", false},
		{"gc_root", "/tmp/x", false},
	} {
		err := exec.Command("sh", "-c", StorePathFn+GCRootFn+`"$0" "$1"`, c.fn, c.arg).Run()
		if (err == nil) != c.ok {
			t.Errorf("%s %s: %v, want ok=%v", c.fn, c.arg, err, c.ok)
		}
	}
}

// TestSudoSays: only sudo's own lines count, not a command's output, and
// a refusal is sudo's lines alone.
func TestSudoSays(t *testing.T) {
	for stderr, want := range map[string][2]bool{ // says, alone
		"sudo: a password is required\n": {true, true},
		"Sorry, user deploy is not allowed to execute '/bin/sh -c true' as root on alpha.\n": {true, true},
		"deploy is not in the sudoers file.  This incident will be reported.\n":              {true, true},
		"activating...\nwarning: a password is required for the database\n":                  {false, false},
		"sudo: a password is required\nthe database: a password is required\n":               {true, false},
	} {
		says := sudoSays(stderr, "deploy", "a password is required", "is not allowed to execute", "is not in the sudoers file")
		if alone := sudoAlone(stderr, "deploy"); says != want[0] || alone != want[1] {
			t.Errorf("%q: says %v, alone %v; want %v", stderr, says, alone, want)
		}
	}
}
