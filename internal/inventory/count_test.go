package inventory

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// nixCounter puts a logging `nix` first on PATH and returns a function
// counting the `eval` calls since it last counted.
func nixCounter(t *testing.T) func() int {
	t.Helper()
	dir, calls := nixtest.LoggingNix(t)
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return func() int {
		n := 0
		for _, l := range calls() {
			if strings.Contains(" "+l+" ", " eval ") {
				n++
			}
		}
		return n
	}
}

// TestEvaluationCount: all selected hosts are evaluated by one nix process;
// with a host whose error tryEval cannot catch, bisection keeps the number
// of evaluations logarithmic.
func TestEvaluationCount(t *testing.T) {
	nixtest.Require(t, "nix")
	evals := nixCounter(t)
	dir := t.TempDir()
	var hosts strings.Builder
	for i := 0; i < 32; i++ {
		fmt.Fprintf(&hosts, "      h%02d = sys \"h%02d\";\n", i, i)
	}
	flake := `{
  outputs = { self }: let
    sys = name: { config.system.build.toplevel = derivation {
      inherit name; system = "` + nixtest.System() + `"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }; };
  in {
    nixosConfigurations = {
` + hosts.String() + `      h17x = { config.system.build.toplevel = { }.missing; };
    };
  };
}`
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ref := "path:" + dir
	load := func(glob string) *Inventory {
		sels, err := ParseSelectors([]string{glob})
		if err != nil {
			t.Fatal(err)
		}
		inv, err := Load(context.Background(), n, ref, LoadOptions{Selectors: sels, Toplevel: true})
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	evals()
	if inv := load("h??"); len(inv.Selected) != 32 || inv.Selected[31].DrvPath == "" {
		t.Fatalf("selected %d hosts", len(inv.Selected))
	}
	if got := evals(); got != 1 {
		t.Errorf("32 hosts took %d nix eval processes, want 1", got)
	}
	inv := load("h*")
	got := evals()
	for _, h := range inv.Selected {
		if (h.EvalError != "") != (h.Name == "h17x") || h.Name != "h17x" && h.DrvPath == "" {
			t.Errorf("%s: drv %q error %q", h.Name, h.DrvPath, h.EvalError)
		}
	}
	// 2 (together, then options only) + bisection over 33 hosts with one
	// broken: 1 + 2 per level, 5 levels = 11. One per host would be 35.
	if got > 13 {
		t.Errorf("one broken host among 33 took %d nix eval processes, want at most 13", got)
	}
	t.Logf("one broken host among 33: %d evaluations", got)
}
