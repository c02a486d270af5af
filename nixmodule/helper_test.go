package nixmodule

import (
	"os"
	"testing"

	"github.com/deployctl/deployctl/internal/cli"
)

// TestRemoteHelperFile: deployctl-remote, the copy the module installs, is
// the program this deployctl's steps make (-update writes it: `make docs`).
func TestRemoteHelperFile(t *testing.T) {
	want := cli.RemoteHelper()
	if *update {
		if err := os.WriteFile("deployctl-remote", []byte(want), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("deployctl-remote")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("nixmodule/deployctl-remote is not what deployctl's steps make: run `make docs`")
	}
}
