package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/integration/fixture"
)

type manifestDoc struct {
	Version   int
	Deployctl string
	Flake     struct{ Ref, URL string }
	Hosts     map[string]struct {
		Toplevel, DrvPath, BuiltOn string
		ClosurePaths               int
		NarSize                    int64
		Deployment                 map[string]any
	}
}

// TestManifestRoundTrip: build writes a manifest; deploy --manifest then
// deploys from it alone, though the flake can no longer be evaluated.
func TestManifestRoundTrip(t *testing.T) {
	e := startFleet(t,
		fixture.Host{Name: "alpha", Deployment: map[string]any{"tags": []string{"web"}}},
		fixture.Host{Name: "beta", Deployment: map[string]any{"tags": []string{"db"}}},
	)
	m := filepath.Join(t.TempDir(), "manifest.json")
	e.deployctl("build", "--all", "--manifest-out", m).wantCode(t, 0)
	data, err := os.ReadFile(m)
	if err != nil {
		t.Fatal(err)
	}
	var doc manifestDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("manifest: %v\n%s", err, data)
	}
	if doc.Version != 1 || doc.Deployctl == "" || doc.Flake.Ref != "path:"+e.flake || !strings.HasPrefix(doc.Flake.URL, "path:"+e.flake) {
		t.Errorf("manifest header: %+v", doc)
	}
	for _, host := range []string{"alpha", "beta"} {
		h := doc.Hosts[host]
		if h.Toplevel != e.toplevel(host) || !strings.HasSuffix(h.DrvPath, ".drv") || h.BuiltOn != "local" ||
			h.ClosurePaths != 2 || h.NarSize <= 0 || h.Deployment["tags"] == nil {
			t.Errorf("manifest entry for %s: %+v", host, h)
		}
	}

	// Make the flake unevaluable: deploying from the manifest must not care.
	if err := os.WriteFile(filepath.Join(e.flake, "flake.nix"), []byte("{ this is not nix"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.deployctl("-v", "deploy", "--manifest", m, "@web")
	r.wantCode(t, 0)
	if regexp.MustCompile(`(?m)^\[local\] \+ nix .* (eval|build) `).MatchString(r.stderr) {
		t.Errorf("deploy --manifest ran nix eval or nix build:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "flakes' path-info") {
		t.Errorf("-v shows no local nix command: the check above proves nothing\n%s", r.stderr)
	}
	if got := e.currentSystem("alpha"); got != doc.Hosts["alpha"].Toplevel {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, doc.Hosts["alpha"].Toplevel)
	}
	if got := e.currentSystem("beta"); got != "" {
		t.Errorf("beta was not selected (@web) but runs %s", got)
	}

	// Push and activate as separate phases, from the same manifest.
	e.deployctl("push", "--manifest", m, "beta").wantCode(t, 0)
	beta := doc.Hosts["beta"].Toplevel
	e.ssh("beta", "nix-store --verify-path "+beta)
	if got := e.currentSystem("beta"); got != "" {
		t.Errorf("push alone switched beta to %s", got)
	}
	e.deployctl("activate", "--manifest", m, "beta").wantCode(t, 0)
	if got := e.currentSystem("beta"); got != beta {
		t.Errorf("beta after activate: %q, want %s", got, beta)
	}
}

// TestManifestMissingPathTouchesNothing: a manifest naming a path the local
// store lacks fails, naming it, before any host is contacted.
func TestManifestMissingPathTouchesNothing(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	m := filepath.Join(t.TempDir(), "manifest.json")
	e.deployctl("build", "--all", "--manifest-out", m).wantCode(t, 0)
	data, err := os.ReadFile(m)
	if err != nil {
		t.Fatal(err)
	}
	alpha := e.toplevel("alpha")
	gone := "/nix/store/00000000000000000000000000000000-nixos-system-gone"
	if err := os.WriteFile(m, []byte(strings.ReplaceAll(string(data), alpha, gone)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.deployctl("deploy", "--manifest", m, "--all")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "not in the local store") || !strings.Contains(r.stderr, gone) {
		t.Errorf("the error does not name the missing path:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "connected") {
		t.Errorf("a host was contacted:\n%s", r.stderr)
	}
	for _, h := range []string{"alpha", "beta"} {
		if got := e.currentSystem(h); got != "" {
			t.Errorf("%s switched to %s", h, got)
		}
	}
}

// TestActivateUnpushedFailsBeforeProfile: activating a system the host
// does not hold fails at realise, leaving the profile and the running
// system alone.
func TestActivateUnpushedFailsBeforeProfile(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	m := filepath.Join(t.TempDir(), "manifest.json")
	e.deployctl("build", "alpha", "--manifest-out", m).wantCode(t, 0)
	r := e.deployctl("activate", "--manifest", m, "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "activate: realise "+e.toplevel("alpha")) {
		t.Errorf("the failure does not name the realise step:\n%s", r.stderr)
	}
	if got := e.ssh("alpha", "readlink /nix/var/nix/profiles/system || echo none"); got != "none" {
		t.Errorf("the system profile was set: %s", got)
	}
	if got := e.currentSystem("alpha"); got != "" {
		t.Errorf("alpha switched to %s", got)
	}
}

// TestDeployClosureWithoutFlake: --closure deploys one prebuilt system to
// one host, with no flake at all.
func TestDeployClosureWithoutFlake(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	beta := e.toplevel("beta")
	e.deployctl("build", "beta").wantCode(t, 0)
	if err := os.RemoveAll(e.flake); err != nil {
		t.Fatal(err)
	}
	// Deliberately beta's system onto alpha: the host is whatever is named.
	e.deployctl("deploy", "--closure", beta, "alpha").wantCode(t, 0)
	if got := e.currentSystem("alpha"); got != beta {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, beta)
	}
	r := e.deployctl("deploy", "--closure", filepath.Dir(beta)+"/00000000000000000000000000000000-x", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "not in the local store") {
		t.Errorf("a missing closure: %s", r.stderr)
	}
}

// TestGCRoots: build --out-link keeps each system rooted through
// DIR/result-HOST; deploy roots what it deploys while it runs and leaves
// no root behind.
func TestGCRoots(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	links := filepath.Join(t.TempDir(), "roots")
	e.deployctl("build", "--all", "--out-link", links).wantCode(t, 0)
	for _, h := range []string{"alpha", "beta"} {
		top := e.toplevel(h)
		link := filepath.Join(links, "result-"+h)
		if got, err := os.Readlink(link); err != nil || got != top {
			t.Errorf("%s: %v → %q, want %s", link, err, got, top)
		}
		if roots := queryRoots(t, top); !strings.Contains(roots, link) {
			t.Errorf("%s is not a GC root of %s:\n%s", link, top, roots)
		}
	}
	// While deploy runs (once it has connected), the system is rooted.
	var during string
	r := e.deployctlWatching("[alpha] connected", func() { during = queryRoots(t, e.toplevel("alpha")) }, "deploy", "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(during, "deployctl-roots-") {
		t.Errorf("during the deploy, the system had no deployctl root:\n%s", during)
	}
	if roots := queryRoots(t, e.toplevel("alpha")); strings.Contains(roots, "deployctl-roots-") {
		t.Errorf("deploy left its temporary root behind:\n%s", roots)
	}
}

func queryRoots(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("nix-store", "--query", "--roots", path).Output()
	if err != nil {
		t.Fatalf("nix-store --query --roots %s: %v", path, err)
	}
	return string(out)
}
