package nixmodule

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestFlakeOutputs evaluates flake.nix against a stub nixpkgs
// (testdata/flake-stub.nix) and checks what it declares: the package (Go
// module, the command, the version through ldflags into a variable that
// exists, completions), the app, the module, the overlay, the dev shell
// and the checks.
func TestFlakeOutputs(t *testing.T) {
	nixtest.Require(t, "nix-instantiate")
	var got struct {
		Inputs  []string
		Package struct {
			Pname, Version, VendorHash, MainProgram, Completions, Go string
			SubPackages, Ldflags                                     []string
			DoCheck                                                  bool
		}
		Same     bool
		App      struct{ Type, Program string }
		Module   bool
		Overlay  string
		DevShell []string
		Check    struct {
			DoCheck    bool
			CheckFlags []string
		}
		Systems []string
	}
	out, err := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "testdata/flake-stub.nix").CombinedOutput()
	if err != nil {
		t.Fatalf("evaluating flake.nix: %v\n%s", err, out)
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	p := got.Package
	if p.Pname != "deployctl" || p.Version != "0.1.0-abc1234" || p.Go != "go-1.26" || !slices.Equal(p.SubPackages, []string{"cmd/deployctl"}) || p.MainProgram != "deployctl" || p.DoCheck || !got.Same {
		t.Errorf("the package: %+v", p)
	}
	// The Go it builds with is the one go.mod asks for.
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(mod); m == nil || p.Go != "go-"+string(m[1])+"."+string(m[2]) {
		t.Errorf("flake.nix builds with %s, go.mod asks for %s", p.Go, m)
	}
	// The version goes into a variable that exists.
	src, err := os.ReadFile("../internal/cli/cli.go")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.Ldflags, "-X github.com/deployctl/deployctl/internal/cli.Version="+p.Version) || !regexp.MustCompile(`(?m)^var Version = `).Match(src) {
		t.Errorf("the version's ldflags %v do not set internal/cli.Version", p.Ldflags)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if !strings.Contains(p.Completions, "deployctl completion "+sh) {
			t.Errorf("no %s completion installed: %s", sh, p.Completions)
		}
	}
	if got.App.Type != "app" || got.App.Program != "/nix/store/stub-deployctl/bin/deployctl" {
		t.Errorf("the app: %+v", got.App)
	}
	if !got.Module || got.Overlay != "deployctl" || !slices.Contains(got.DevShell, "gopls") || !got.Check.DoCheck || !slices.Contains(got.Check.CheckFlags, "-short") {
		t.Errorf("module %v, overlay %q, dev shell %v, check %+v", got.Module, got.Overlay, got.DevShell, got.Check)
	}
	if !slices.Equal(got.Inputs, []string{"nixpkgs"}) || !slices.Contains(got.Systems, "x86_64-linux") || !slices.Contains(got.Systems, "aarch64-darwin") {
		t.Errorf("inputs %v, systems %v", got.Inputs, got.Systems)
	}
}

// TestFlakeVendorHash: the package's vendorHash is the hash of what `go
// mod vendor` makes of go.mod now, so the flake builds after a dependency
// changes only once the hash is updated with it.
func TestFlakeVendorHash(t *testing.T) {
	if testing.Short() {
		t.Skip("go mod vendor copies every dependency: not in -short")
	}
	nixtest.Require(t, "nix")
	flake, err := os.ReadFile("../flake.nix")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`vendorHash = "([^"]+)"`).FindSubmatch(flake)
	if m == nil {
		t.Fatal("flake.nix sets no vendorHash")
	}
	dir := filepath.Join(t.TempDir(), "vendor")
	cmd := exec.Command("go", "mod", "vendor", "-o", dir)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	out, err := exec.Command("nix", "--extra-experimental-features", "nix-command", "hash", "path", "--type", "sha256", dir).Output()
	if err != nil {
		t.Fatalf("nix hash path: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != string(m[1]) {
		t.Errorf("flake.nix's vendorHash is %s, but go mod vendor hashes to %s: update it", m[1], got)
	}
}
