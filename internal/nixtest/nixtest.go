// Package nixtest holds what tests that run real Nix share: the rule for
// missing prerequisites and this machine's Nix system string.
package nixtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Unavailable skips the test because of why, except in CI (CI=true), where
// it fails it: a green CI that skipped the real thing proves nothing.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI must run this test, but %s (scripts/setup.sh installs what is missing)", why)
	}
	t.Skipf("skipped: %s (scripts/setup.sh installs what is missing)", why)
}

// Require calls Unavailable unless every command is on PATH.
func Require(t testing.TB, commands ...string) {
	t.Helper()
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			Unavailable(t, c+" is not installed")
		}
	}
}

// System is this machine's Nix system string, such as "x86_64-linux".
func System() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	return arch + "-linux"
}

// LoggingNix writes a `nix` that logs each invocation's arguments and
// runs the real one, in a directory to put first on PATH. calls returns
// the invocations logged since the last call (each one's arguments as a
// line) and forgets them.
func LoggingNix(t testing.TB) (dir string, calls func() []string) {
	t.Helper()
	real, err := exec.LookPath("nix")
	if err != nil {
		Unavailable(t, "nix is not installed")
	}
	dir = t.TempDir()
	log := filepath.Join(dir, "calls")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", log, real)
	if err := os.WriteFile(filepath.Join(dir, "nix"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, func() []string {
		data, _ := os.ReadFile(log)
		os.Remove(log)
		if len(data) == 0 {
			return nil
		}
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}
}
