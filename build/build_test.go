package build

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestBuildKeepsGoing builds three derivations in one call, one of which
// fails: the other two are built and the failing one carries Nix's error.
func TestBuildKeepsGoing(t *testing.T) {
	nixtest.Require(t, "nix")
	system := nixtest.System()
	dir := t.TempDir()
	// The unique salt makes fresh derivations, so the test really builds.
	expr := `salt: let mk = name: script: derivation { inherit name; system = "` + system + `"; builder = "/bin/sh"; args = [ "-c" script ]; salt = salt; }; in {
	  a = mk "a" "echo a > $out";
	  b = mk "b" "echo this build fails on purpose >&2; exit 1";
	  c = mk "c" "echo c > $out";
	}`
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	var reqs []Request
	for _, name := range []string{"a", "b", "c"} {
		args := []string{"eval", "--raw", "--file", filepath.Join(dir, "default.nix"), "--apply", "f: let d = (f \"" + dir + "\")." + name + "; in d.drvPath + \" \" + d.outPath"}
		out, err := n.Nix(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		drv, outPath, _ := strings.Cut(string(out), " ")
		reqs = append(reqs, Request{Host: name, DrvPath: drv, OutPath: outPath})
	}
	res, err := Build(ctx, n, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Host != reqs[i].Host {
			t.Fatalf("result %d is for %s, want %s", i, r.Host, reqs[i].Host)
		}
		switch r.Host {
		case "a", "c":
			if r.Err != nil || r.Toplevel != reqs[i].OutPath {
				t.Errorf("%s: toplevel %q err %v", r.Host, r.Toplevel, r.Err)
			}
			if _, err := os.Stat(r.Toplevel); err != nil {
				t.Errorf("%s: built output missing: %v", r.Host, err)
			}
		case "b":
			if r.Err == nil || !strings.Contains(r.Err.Error(), "this build fails on purpose") {
				t.Errorf("b: error %v, want Nix's build log", r.Err)
			}
		}
	}
}
