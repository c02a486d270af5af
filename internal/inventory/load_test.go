package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestLoadEvaluatesOnlySelectedToplevels checks on real Nix that one eval
// returns every host's deployment options, that the Nix side of selection
// agrees with Go's (a disagreement is an error from Load), and that an
// unselected host's toplevel is never evaluated: here it would throw.
func TestLoadEvaluatesOnlySelectedToplevels(t *testing.T) {
	nixtest.Require(t, "nix")
	ref := writeFlake(t, `
      "web-1" = sys "web-1" { tags = [ "web" "edge-eu" ]; keyFile = ./flake.nix; };
      "web-2" = sys "web-2" { tags = [ "web" ]; targetPort = 2222; };
      "db.1" = sys "db" { tags = [ "db" ]; };
      "café" = sys "cafe" { tags = [ "été" ]; };
      typo = { config.system.build.toplevel = { }.missing-attribute; };
      badopts = { config.deployment = { tags = [ "x" ]; } // throw "no such option deployment.helthChecks"; config.system.build.toplevel = throw "unused"; };
      builder = sys "builder" { targetHost = null; };
      broken = { config.system.build.toplevel = throw "broken on purpose"; };`)
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, tc := range []struct {
		args []string
		all  bool
		want string
	}{
		{[]string{"@edge-*", "db.1"}, false, "db.1,web-1"},
		{[]string{"web-?"}, false, "web-1,web-2"},
		{[]string{"café", "@été"}, false, "café"},
		{[]string{"d?.[0-9]"}, false, "db.1"},
		{[]string{"caf??"}, false, "café"},
	} {
		sels, err := ParseSelectors(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := Load(context.Background(), n, ref, LoadOptions{Selectors: sels, All: tc.all, DeployableOnly: true, Toplevel: true})
		if err != nil {
			t.Fatalf("Load(%v): %v", tc.args, err)
		}
		if got := names(inv.Selected); got != tc.want {
			t.Errorf("Load(%v) selected %s, want %s", tc.args, got, tc.want)
		}
		for _, h := range inv.Selected {
			if h.EvalError != "" {
				t.Errorf("%s: evaluated an unselected host: %s", h.Name, h.EvalError)
			}
			if !strings.HasSuffix(h.DrvPath, ".drv") || !strings.HasPrefix(h.OutPath, "/nix/store/") {
				t.Errorf("%s: drv %q out %q", h.Name, h.DrvPath, h.OutPath)
			}
		}
		for _, h := range inv.Hosts {
			if h.Name == "broken" && !tc.all && (h.EvalError != "" || h.DrvPath != "") {
				t.Errorf("Load(%v) evaluated the toplevel of unselected host broken", tc.args)
			}
			if h.Name == "web-1" {
				var kf string
				if err := jsonUnmarshal(h.Extra["keyFile"], &kf); err != nil || !strings.HasSuffix(kf, "/flake.nix") {
					t.Errorf("keyFile given as a path came back as %s, want the path as a string", h.Extra["keyFile"])
				}
			}
			if h.Name == "web-2" && h.TargetPort != 2222 {
				t.Errorf("web-2 targetPort = %d", h.TargetPort)
			}
		}
	}
	// A host whose deployment block does not evaluate is left out (and
	// reported) unless the selection includes it, which refuses the run.
	inv, err := Load(context.Background(), n, ref, LoadOptions{})
	if err != nil {
		t.Fatalf("an unselected broken deployment block stopped the load: %v", err)
	}
	if len(inv.Broken) != 1 || inv.Broken[0].Name != "badopts" || !strings.Contains(inv.Broken[0].Err, "deployment.helthChecks") {
		t.Errorf("Broken = %+v, want badopts with Nix's message", inv.Broken)
	}
	for _, args := range [][]string{{"badopts"}, {"bad*"}, nil} {
		sels, _ := ParseSelectors(args)
		_, err := Load(context.Background(), n, ref, LoadOptions{Selectors: sels, All: args == nil, Toplevel: true})
		var oe *OptionError
		if !errors.As(err, &oe) || !strings.Contains(err.Error(), "badopts: config.deployment does not evaluate") {
			t.Errorf("selecting %v (nil: --all) = %v, want an option error naming badopts", args, err)
		}
	}

	// A throw (caught by tryEval) and a missing attribute (not caught)
	// each fail only their host, with Nix's message.
	sels, _ := ParseSelectors([]string{"broken", "typo", "web-1"})
	inv, err = Load(context.Background(), n, ref, LoadOptions{Selectors: sels, Toplevel: true})
	if err != nil {
		t.Fatalf("a host whose toplevel fails must not fail the whole load: %v", err)
	}
	for _, h := range inv.Selected {
		want := map[string]string{"broken": "broken on purpose", "typo": "missing-attribute", "web-1": ""}[h.Name]
		if want == "" && (h.EvalError != "" || h.DrvPath == "") || want != "" && !strings.Contains(h.EvalError, want) {
			t.Errorf("%s: eval error %q drv %q, want error containing %q", h.Name, h.EvalError, h.DrvPath, want)
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func writeFlake(t *testing.T, hosts string) string {
	t.Helper()
	dir := t.TempDir()
	flake := `{
  outputs = { self }: let
    sys = name: deployment: {
      config.deployment = deployment;
      config.system.build.toplevel = derivation {
        inherit name; system = "` + nixtest.System() + `"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ];
      };
    };
  in { nixosConfigurations = { ` + hosts + ` }; };
}`
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return "path:" + dir
}

// TestLoadOptionsErrorEscapingTryEval: a deployment block with an error
// tryEval cannot catch (a missing attribute) fails only its host.
func TestLoadOptionsErrorEscapingTryEval(t *testing.T) {
	nixtest.Require(t, "nix")
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	ref := writeFlake(t, `good = sys "good" { tags = [ "x" ]; }; typo = sys "typo" { targetHost = { }.fqdnn; };
	  "a&b" = { config.system.build.toplevel = throw "the ampersand host is broken"; };`)
	sels, _ := ParseSelectors([]string{"@x"})
	inv, err := Load(context.Background(), n, ref, LoadOptions{Selectors: sels, Toplevel: true})
	if err != nil {
		t.Fatalf("a broken host's options stopped the load of another: %v", err)
	}
	if names(inv.Selected) != "good" || inv.Selected[0].DrvPath == "" {
		t.Errorf("selected %s", names(inv.Selected))
	}
	if len(inv.Broken) != 1 || inv.Broken[0].Name != "typo" || !strings.Contains(inv.Broken[0].Err, "fqdnn") {
		t.Errorf("Broken = %+v, want typo with Nix's message", inv.Broken)
	}
	sels, _ = ParseSelectors([]string{"a&b"})
	inv, err = Load(context.Background(), n, ref, LoadOptions{Selectors: sels, Toplevel: true})
	if err != nil || len(inv.Selected) != 1 || !strings.Contains(inv.Selected[0].EvalError, "the ampersand host is broken") {
		t.Errorf("a&b: %v, %+v", err, inv)
	}
	_, err = Load(context.Background(), n, ref, LoadOptions{All: true, DeployableOnly: true, Toplevel: true})
	if err == nil || !strings.Contains(err.Error(), "typo: config.deployment does not evaluate") {
		t.Errorf("--all with a broken host = %v", err)
	}
}

// TestLoadAllDeployableOnly: --all leaves build-only hosts out on the Nix
// side too: their toplevels are not even evaluated.
func TestLoadAllDeployableOnly(t *testing.T) {
	nixtest.Require(t, "nix")
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	ref := writeFlake(t, `web = sys "web" { }; builder = sys "builder" { targetHost = null; };`)
	inv, err := Load(context.Background(), n, ref, LoadOptions{All: true, DeployableOnly: true, Toplevel: true})
	if err != nil {
		t.Fatal(err)
	}
	if names(inv.Selected) != "web" {
		t.Errorf("--all selected %s, want web", names(inv.Selected))
	}
	for _, h := range inv.Hosts {
		if h.Name == "builder" && h.DrvPath != "" {
			t.Error("the build-only host's toplevel was evaluated")
		}
	}
	inv, err = Load(context.Background(), n, ref, LoadOptions{All: true, Toplevel: true})
	if err != nil || names(inv.Selected) != "builder,web" || inv.Selected[0].DrvPath == "" {
		t.Errorf("--all for build: %v, %v", err, inv)
	}
}
