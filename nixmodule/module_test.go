// Package nixmodule holds deployctl's NixOS module (default.nix); this file
// only tests it.
package nixmodule

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/hooks"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/keys"
	"github.com/deployctl/deployctl/internal/nixtest"
	"github.com/deployctl/deployctl/internal/remote"
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
	for _, opt := range []string{"targetHost", "targetPort", "targetUser", "tags", "buildOnTarget", "privilegeEscalationCommand", "sshOptions",
		"allowLocalDeployment", "replaceUnknownProfiles", "keys", "healthChecks", "confirmTimeout", "deployUser", "hooks"} {
		if !strings.Contains(string(out), opt+" = ") {
			t.Errorf("default.nix does not declare deployment.%s", opt)
		}
	}
}

// TestModuleEvaluatesWithNixpkgsLib evaluates the module with the nixpkgs
// lib checkout named by NIXPKGS_LIB (for example nix-community/nixpkgs.lib),
// and checks that deployctl reads what it yields as the module means it.
func TestModuleEvaluatesWithNixpkgsLib(t *testing.T) {
	libDir := os.Getenv("NIXPKGS_LIB")
	if libDir == "" {
		t.Skip("NIXPKGS_LIB is unset: set it to a nixpkgs lib checkout (nix-community/nixpkgs.lib) to evaluate the module")
	}
	out := evalWithLib(t, libDir, "testdata/eval.nix")
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	colmena, err := inventory.Decode("web-1", got["colmena"])
	if err != nil {
		t.Fatalf("deployctl rejects the module's output for a Colmena block: %v", err)
	}
	if colmena.TargetHost != "web-1.example.org" || colmena.TargetPort != 2222 || colmena.TargetUser != "deploy" ||
		strings.Join(colmena.Tags, ",") != "web,eu" || !colmena.BuildOnTarget || strings.Join(colmena.PrivilegeEscalationCommand, " ") != "doas" ||
		strings.Join(colmena.SSHOptions, " ") != "-J bastion" || colmena.Extra["keys"] == nil {
		t.Errorf("Colmena block read back as %+v", colmena)
	}
	ks, err := keys.Parse(colmena.Extra["keys"])
	if err != nil || len(ks) != 1 || ks[0].Path() != "/run/keys/db-password" || ks[0].User != "postgres" || ks[0].Group != "root" ||
		ks[0].Permissions != 0o400 || ks[0].UploadAt != keys.PreActivation || strings.Join(ks[0].KeyCommand, " ") != "pass db" || ks[0].Text != nil {
		t.Errorf("the Colmena block's keys read back as %+v (%v)", ks, err)
	}
	plain, err := inventory.Decode("db-1", got["plain"])
	if err != nil {
		t.Fatal(err)
	}
	// The module's defaults, as deployctl reads them, are deployctl's own.
	bare, err := inventory.Decode("db-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if plain.TargetHost != bare.TargetHost || plain.TargetPort != bare.TargetPort || plain.TargetUser != bare.TargetUser ||
		len(plain.Tags) != len(bare.Tags) || plain.BuildOnTarget != bare.BuildOnTarget ||
		strings.Join(plain.PrivilegeEscalationCommand, " ") != strings.Join(bare.PrivilegeEscalationCommand, " ") ||
		len(plain.SSHOptions) != len(bare.SSHOptions) || plain.ConfirmTimeout != bare.ConfirmTimeout || plain.AllowLocalDeployment != bare.AllowLocalDeployment {
		t.Errorf("module defaults %+v differ from deployctl's %+v", plain, bare)
	}
	if checks, err := activate.ParseChecks(plain.Extra["healthChecks"]); err != nil || !checks.Empty() {
		t.Errorf("a host that sets nothing: checks %+v (%v)", checks, err)
	}
	// deployUser: the user, its keys, its sudo rule, and the default
	// targetUser; nothing of it when not enabled.
	var du struct {
		Deployment json.RawMessage
		User       struct {
			IsSystemUser bool
			Openssh      struct{ AuthorizedKeys struct{ Keys []string } }
		}
		Group  bool
		Helper struct{ Mode, Source string }
		Sudo   []struct {
			Users    []string
			Commands []struct {
				Command string
				Options []string
			}
		}
	}
	if err := json.Unmarshal(got["deployUser"], &du); err != nil {
		t.Fatal(err)
	}
	ci, err := inventory.Decode("ci-1", du.Deployment)
	if err != nil {
		t.Fatal(err)
	}
	if ci.TargetUser != "deploy" || !du.User.IsSystemUser || !slices.Equal(du.User.Openssh.AuthorizedKeys.Keys, []string{"ssh-ed25519 AAAAtest ci"}) || !du.Group ||
		len(du.Sudo) != 1 || !slices.Equal(du.Sudo[0].Users, []string{"deploy"}) || len(du.Sudo[0].Commands) != 1 || du.Sudo[0].Commands[0].Command != remote.HelperPath || !slices.Equal(du.Sudo[0].Commands[0].Options, []string{"NOPASSWD"}) {
		t.Errorf("deployUser: targetUser %q, %+v", ci.TargetUser, du)
	}
	// deployctl-remote, as a copy (mode) of the file TestRemoteHelperFile checks.
	if wd, _ := os.Getwd(); du.Helper.Mode != "0555" || du.Helper.Source != filepath.Join(wd, "deployctl-remote") || remote.HelperPath != "/etc/deployctl/remote" {
		t.Errorf("deployUser installs deployctl-remote as %+v", du.Helper)
	}
	if string(got["plainUsers"]) != "{}" {
		t.Errorf("a host without deployUser gets users: %s", got["plainUsers"])
	}

	// A morph block, with the module's defaults filled in, reads back as
	// written.
	morph, err := inventory.Decode("app-1", got["morph"])
	if err != nil {
		t.Fatal(err)
	}
	hs, err := hooks.Parse(morph.Extra["hooks"])
	if err != nil || len(hs["preActivate"]) != 1 || hs["preActivate"][0].On != "target" || len(hs["postBuild"]) != 0 {
		t.Errorf("the hooks read back as %+v (%v)", hs, err)
	}
	checks, err := activate.ParseChecks(morph.Extra["healthChecks"])
	if err != nil {
		t.Fatalf("deployctl rejects the module's health checks: %v", err)
	}
	c, h, p := checks.Cmd[0], checks.HTTP[0], checks.TCP[0]
	if len(checks.Cmd) != 1 || c.Description != "nginx runs" || strings.Join(c.Cmd, " ") != "systemctl is-active nginx" || c.Period != 2 || c.Timeout != 5 ||
		h.Scheme != "https" || h.Host != nil || h.Port != 443 || h.Path != "/health" || h.Headers["Host"] != "app.example.org" || h.Period != 1 || h.Timeout != 2.5 || !h.InsecureSSL ||
		p.Port != 5432 || p.Period != 2 || morph.ConfirmTimeout != 45*time.Second {
		t.Errorf("morph's block read back as %+v, confirmTimeout %s", checks, morph.ConfirmTimeout)
	}
}

// evalWithLib evaluates file, a function of nixpkgs' lib, with the lib of
// the checkout libDir, to JSON.
func evalWithLib(t *testing.T, libDir, file string) []byte {
	t.Helper()
	nixtest.Require(t, "nix-instantiate")
	lib, err := filepath.Abs(filepath.Join(libDir, "lib"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", "--eval", "--strict", "--json", file, "--arg", "lib", "import "+lib).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("evaluating %s: %v\n%s", file, err, stderr)
	}
	return out
}
