package push

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
)

// TestNixCopyRefusesWhatNIXSSHOPTSCannotCarry: Nix splits NIX_SSHOPTS on
// white space, so an argument containing some would silently become two.
// (The copy itself is tested against the fleet in integration/.)
func TestNixCopyRefusesWhatNIXSSHOPTSCannotCarry(t *testing.T) {
	d, err := remote.NewDialer(remote.Options{ConfigFile: "/dev/null", Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := d.Resolve(remote.Target{Name: "h1", Host: "h1", Options: []string{"-i", "/keys/my key"}})
	if err != nil {
		t.Fatal(err)
	}
	n := nix.New(nil, slog.New(slog.DiscardHandler))
	err = NixCopy(context.Background(), n, ep, "", "/nix/store/aaaa-x", Options{})
	if err == nil || !strings.Contains(err.Error(), `"/keys/my key"`) {
		t.Errorf("NixCopy with a spaced argument = %v, want a refusal naming it", err)
	}
}
