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

// TestSudoSays: only sudo's own lines count, not a command's output.
func TestSudoSays(t *testing.T) {
	for stderr, want := range map[string]bool{
		"sudo: a password is required\n": true,
		"Sorry, user deploy is not allowed to execute '/bin/sh -c true' as root on alpha.\n": true,
		"activating...\nwarning: a password is required for the database\n":                  false,
	} {
		if got := sudoSays(stderr, "a password is required", "is not allowed to execute"); got != want {
			t.Errorf("sudoSays(%q) = %v", stderr, got)
		}
	}
}
