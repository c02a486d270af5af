// Package nixmodule holds deployctl's NixOS module (default.nix); this file
// only tests it.
package nixmodule

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestModuleParses checks that the module is valid Nix and declares the
// options deployctl reads. Evaluating it needs nixpkgs' lib, which this
// machine lacks.
func TestModuleParses(t *testing.T) {
	nixtest.Require(t, "nix-instantiate")
	out, err := exec.Command("nix-instantiate", "--parse", "default.nix").CombinedOutput()
	if err != nil {
		t.Fatalf("default.nix does not parse: %v\n%s", err, out)
	}
	for _, opt := range []string{"targetHost", "targetPort", "targetUser", "tags", "buildOnTarget", "privilegeEscalationCommand", "sshOptions"} {
		if !strings.Contains(string(out), opt+" = ") {
			t.Errorf("default.nix does not declare deployment.%s", opt)
		}
	}
}
