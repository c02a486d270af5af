package push

import (
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/remote"
)

// TestNixCopyRefusesWhatNIXSSHOPTSCannotCarry: Nix splits NIX_SSHOPTS on
// white space, so an argument containing some would silently become two.
// (NixCopy checks with NixSSHOpts first; the copy itself is tested against
// the fleet in integration/.)
func TestNixCopyRefusesWhatNIXSSHOPTSCannotCarry(t *testing.T) {
	d, err := remote.NewDialer(remote.Options{ConfigFile: "/dev/null", Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := d.Resolve(remote.Target{Name: "h1", Host: "h1", Options: []string{"-i", "/keys/my key"}})
	if err != nil {
		t.Fatal(err)
	}
	if opts, err := NixSSHOpts(ep, ""); err == nil || !strings.Contains(err.Error(), `"/keys/my key"`) {
		t.Errorf("NixSSHOpts with a spaced argument = %q, %v, want a refusal naming it", opts, err)
	}
}
