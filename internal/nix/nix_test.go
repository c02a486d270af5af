package nix

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]Version{
		"nix (Nix) 2.8.0\n":                 {"Nix", 2, 8, 0},
		"nix (Nix) 2.26.3":                  {"Nix", 2, 26, 3},
		"nix (Lix, like Nix) 2.91.1\nextra": {"Lix", 2, 91, 1},
		"nix (Nix) 2.25.0pre20241101_dirty": {"Nix", 2, 25, 0},
		"nix (Nix) 2.3":                     {"Nix", 2, 3, 0},
	} {
		got, err := ParseVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "nix", "nix (Nix) x.y"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted garbage", bad)
		}
	}
}

func TestAtLeast(t *testing.T) {
	v := Version{"Nix", 2, 8, 0}
	if !v.AtLeast(2, 8) || v.AtLeast(2, 13) || !v.AtLeast(1, 99) {
		t.Errorf("AtLeast wrong for %v", v)
	}
}

func TestFlakeRef(t *testing.T) {
	plain := t.TempDir()
	if err := os.WriteFile(filepath.Join(plain, "flake.nix"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := FlakeRef(plain); err != nil || got != "path:"+plain {
		t.Errorf("FlakeRef(plain dir) = %q, %v; want path:%s", got, err, plain)
	}
	repo := t.TempDir()
	sub := filepath.Join(repo, "sub")
	for _, d := range []string{filepath.Join(repo, ".git"), sub} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sub, "flake.nix"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := FlakeRef(sub); err != nil || got != sub {
		t.Errorf("FlakeRef(dir in git tree) = %q, %v; want %s", got, err, sub)
	}
	for _, ref := range []string{"github:o/r", "path:/x", "git+https://e/x"} {
		if got, err := FlakeRef(ref); err != nil || got != ref {
			t.Errorf("FlakeRef(%q) = %q, %v; want unchanged", ref, got, err)
		}
	}
	if _, err := FlakeRef(t.TempDir()); err == nil {
		t.Error("FlakeRef of a directory without flake.nix succeeded")
	}
}

func TestParsePathInfoBothShapes(t *testing.T) {
	old := `[{"path":"/nix/store/a-x","narHash":"sha256-A","narSize":10,"references":["/nix/store/b-y"]},
	         {"path":"/nix/store/b-y","narHash":"sha256-B","narSize":5,"references":[]},
	         {"path":"/nix/store/c-invalid","valid":false}]`
	current := `{"/nix/store/a-x":{"narHash":"sha256-A","narSize":10,"references":["/nix/store/b-y"]},
	             "/nix/store/b-y":{"narHash":"sha256-B","narSize":5,"references":[]},
	             "/nix/store/c-invalid":null}`
	for name, in := range map[string]string{"2.8": old, "2.19+": current} {
		got, err := ParsePathInfo([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != 2 || got["/nix/store/a-x"].NarSize != 10 || got["/nix/store/a-x"].References[0] != "/nix/store/b-y" ||
			got["/nix/store/b-y"].Path != "/nix/store/b-y" {
			t.Errorf("%s: %+v", name, got)
		}
	}
	if _, err := ParsePathInfo([]byte(`"nonsense"`)); err == nil {
		t.Error("nonsense accepted")
	}
}

// TestQuoteRoundTripsThroughNix has Nix read back every tricky string.
func TestQuoteRoundTripsThroughNix(t *testing.T) {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("nix-instantiate is not installed")
	}
	for _, s := range []string{"a&b<c>", `quote " back\slash`, "${x} $y $${z}", "tab\tnl\ncr\r", "café", "''", "$"} {
		out, err := exec.Command("nix-instantiate", "--eval", "--json", "--expr", Quote(s)).Output()
		if err != nil {
			t.Fatalf("%q → %s: %v", s, Quote(s), err)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil || got != s {
			t.Errorf("%q → %s → %q (%v)", s, Quote(s), got, err)
		}
	}
}
