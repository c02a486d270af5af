package shell

import (
	"os/exec"
	"strings"
	"testing"
)

func TestQuoteRoundTripsThroughSh(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh on PATH")
	}
	argv := []string{"plain", "", "with space", "it's", `back\slash`, "$HOME", "`id`", "a\nb", "-dash", "*", "semi;colon", "ü"}
	// printf prints each argument followed by NUL, so we can split exactly.
	line := "printf '%s\\0' " + Join(argv)
	out, err := exec.Command("sh", "-c", line).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", line, err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(argv) {
		t.Fatalf("sh split %q into %d words, want %d: %q", line, len(got), len(argv), got)
	}
	for i := range argv {
		if got[i] != argv[i] {
			t.Errorf("word %d: got %q, want %q", i, got[i], argv[i])
		}
	}
}

func TestQuoteLeavesSafeWordsAlone(t *testing.T) {
	for _, s := range []string{"nix-env", "/nix/store/abc-x", "--set", "a=b"} {
		if got := Quote(s); got != s {
			t.Errorf("Quote(%q) = %q, want it unchanged", s, got)
		}
	}
	if got := Quote("a b"); got != "'a b'" {
		t.Errorf("Quote(%q) = %q", "a b", got)
	}
}
