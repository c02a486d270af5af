package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/integration/fleet"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// closureOf lists a closure, sorted, from `nix-store -qR` output.
func closureOf(out string) string {
	paths := strings.Fields(out)
	sort.Strings(paths)
	return strings.Join(paths, "\n")
}

// TestPushIntact: the native push delivers the whole closure, verified by
// the target's own Nix; a second push sends nothing and says so; the
// pushed system survives a garbage collection until activation, whose
// profile then keeps it.
func TestPushIntact(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	r := e.deployctl("push", "alpha", "beta", "--substitute-on-destination")
	r.wantCode(t, 0)
	// The fixture service is in both closures: read once, sent twice.
	if !regexp.MustCompile(`local store: [0-9]+ paths? serialised once \([^)]*\), sent to other hosts [1-9][0-9]* times? from memory`).MatchString(r.stderr) {
		t.Errorf("a path both hosts need was not read once for both:\n%s", r.stderr)
	}
	for _, h := range []string{"alpha", "beta"} {
		top := e.toplevel(h)
		local, err := exec.Command("nix-store", "--query", "--requisites", top).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := closureOf(e.ssh(h, "nix-store --query --requisites "+top)), closureOf(string(local)); got != want {
			t.Errorf("%s: closure on the host\n%s\nwant the local one\n%s", h, got, want)
		}
		e.ssh(h, "nix-store --verify --check-contents")
		if got := e.ssh(h, "readlink /nix/var/nix/gcroots/deployctl/pushed"); got != top {
			t.Errorf("%s: push root → %q, want %s", h, got, top)
		}
		if got := e.ssh(h, "ls /nix/var/nix/gcroots/deployctl"); got != "pushed" {
			t.Errorf("%s: roots left besides the push root: %q", h, got)
		}
	}
	r = e.deployctl("push", "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[alpha] pushed 0 of ") {
		t.Errorf("a second push does not say it sent nothing:\n%s", r.stderr)
	}
	top := e.toplevel("alpha")
	e.ssh("alpha", "nix-store --gc")
	if out, err := e.fleet.SSH(t.Context(), "alpha", "nix-store --check-validity "+top); err != nil {
		t.Fatalf("a garbage collection between push and activate took the pushed system: %v %s", err, out)
	}
	e.deployctl("activate", "alpha").wantCode(t, 0)
	if e.ssh("alpha", "test -e /nix/var/nix/gcroots/deployctl/pushed && echo kept || true") != "" {
		t.Errorf("the push root outlived the switch that put the system in the profile")
	}
	e.ssh("alpha", "nix-store --gc")
	if got := e.currentSystem("alpha"); got != top {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, top)
	}
	e.ssh("alpha", "nix-store --check-validity "+top)
}

// TestPushSurvivesDroppedHost: a host whose SSH session dies in the
// middle of a push fails with a clear error while the other host's push
// completes; pushing again then completes it.
func TestPushSurvivesDroppedHost(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha", PayloadKiB: 256 << 10}, fixture.Host{Name: "beta", PayloadKiB: 256 << 10})
	e.deployctl("build", "--all").wantCode(t, 0)
	// While alpha's push waits on this (its "sending" line), cut every SSH
	// session on alpha: the push's connection dies under it.
	r := e.deployctlWatching("[alpha] sending", e.cutter("alpha"), "push", "alpha", "beta")
	r.wantCode(t, 3)
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +push: .*the connection was lost`).MatchString(r.stderr) {
		t.Errorf("alpha's cut push is not reported as a push failure:\n%s", r.stderr)
	}
	top := map[string]string{"alpha": e.toplevel("alpha"), "beta": e.toplevel("beta")}
	e.verifyClosure("beta", top["beta"])
	// The failed push did not make its system alpha's push root.
	if got := e.ssh("alpha", "readlink /nix/var/nix/gcroots/deployctl/pushed || true"); got != "" {
		t.Errorf("a failed push made %s alpha's push root", got)
	}
	// Nor did it leave its pending root: the shell holding it saw the
	// connection end and removed it.
	left := "?"
	for deadline := time.Now().Add(3 * time.Second); left != "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		left = e.ssh("alpha", "ls /nix/var/nix/gcroots/deployctl 2>/dev/null || true")
	}
	if left != "" {
		t.Errorf("a cut push left roots on alpha: %q", left)
	}
	r = e.deployctl("push", "alpha")
	r.wantCode(t, 0)
	e.verifyClosure("alpha", top["alpha"])
}

// signingKey makes a Nix signing key pair: the secret key's file, and the
// public key.
func signingKey(t *testing.T) (secretFile, public string) {
	t.Helper()
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "deployctl-fleet-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generate key: %v %s", err, out)
	}
	pub, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	return sk, strings.TrimSpace(string(pub))
}

// TestPushSigned: with --sign-key, every path arrives signed, and the
// target's own Nix verifies the signatures against the public key.
func TestPushSigned(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	sk, pub := signingKey(t)
	e.deployctl("push", "alpha", "--sign-key", sk).wantCode(t, 0)
	top := e.toplevel("alpha")
	// Every path of the closure must carry a signature the key verifies.
	e.ssh("alpha", "nix --extra-experimental-features nix-command store verify --recursive --no-contents --sigs-needed 1 --trusted-public-keys '"+pub+"' "+top)
}

// TestPushSubstitutesOnDestination: with -s, a host first fetches what it
// can from its own binary cache (here a file:// cache it reads), and
// deployctl sends only the rest: nothing.
func TestPushSubstitutesOnDestination(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha", Revision: t.Name()})
	e.deployctl("build", "alpha").wantCode(t, 0)
	top := e.toplevel("alpha")
	// /var/tmp is this machine's on the fleet hosts too (their /tmp is not).
	cache, err := os.MkdirTemp("/var/tmp", "deployctl-test-cache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cache) })
	cp := exec.Command("nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://"+cache, top)
	cp.Env = e.env()
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("nix copy to the cache: %v\n%s", err, out)
	}
	e.ssh("alpha", "printf 'substituters = file://"+cache+"\\nrequire-sigs = false\\n' >> /run/fleet/nix/nix.conf")
	r := e.deployctl("push", "alpha", "--substitute-on-destination")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[alpha] sending 0 of 2 paths") {
		t.Errorf("with -s, deployctl still sent paths the host could fetch itself:\n%s", r.stderr)
	}
	e.verifyClosure("alpha", top)
}

// TestNixCopyBackends: --copy-backend nix (ssh-ng://) and nix-ssh (ssh://)
// push complete, valid closures, as root and as a user behind sudo (the
// escalation goes into the store URL's remote-program), and leave the same
// GC root as the native push.
func TestNixCopyBackends(t *testing.T) {
	if _, err := exec.LookPath("sudo"); err != nil {
		nixtest.Unavailable(t, "sudo is not installed")
	}
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta", Deployment: map[string]any{"targetUser": fleet.DeployUser}})
	for _, c := range []struct{ backend, alpha, beta string }{
		{"nix", "--to ssh-ng://root@alpha --", "--to 'ssh-ng://deploy@beta?remote-program=sudo%20-H%20--%20nix-daemon' --"},
		{"nix-ssh", "--to ssh://root@alpha --", "--to 'ssh://deploy@beta?remote-program=sudo%20-H%20--%20nix-store' --"},
	} {
		for _, h := range []string{"alpha", "beta"} {
			e.ssh(h, "rm -rf /nix/var/nix/gcroots/deployctl; nix-store --gc >/dev/null 2>&1")
		}
		r := e.deployctl("-v", "push", "--copy-backend", c.backend, "alpha", "beta")
		r.wantCode(t, 0)
		for _, want := range []string{c.alpha, c.beta} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%s: -v output lacks %q:\n%s", c.backend, want, r.stderr)
			}
		}
		for _, h := range []string{"alpha", "beta"} {
			top := e.toplevel(h)
			e.gc(h)
			e.verifyClosure(h, top)
			if got := e.ssh(h, "readlink /nix/var/nix/gcroots/deployctl/pushed"); got != top {
				t.Errorf("%s: %s's push root → %q, want %s", c.backend, h, got, top)
			}
		}
	}
}

// TestPushAsUserWithoutRoot: a login user who cannot become root (no sudo,
// privilegeEscalationCommand = [ ]) reaches the host's store through its
// nix-daemon. Untrusted and unsigned, the push is refused with advice and
// leaves nothing; signed with a key the host trusts, or as a trusted user
// (natively and through nix copy), it completes, and the user's own
// indirect root keeps the system through a garbage collection, replaced
// by the next push's; a build on the host keeps its system the same way.
// Steps that need root are refused before anything runs.
func TestPushAsUserWithoutRoot(t *testing.T) {
	user := func(rev string) fixture.Host {
		return fixture.Host{Name: "alpha", Revision: rev, Deployment: map[string]any{"targetUser": fleet.NoSudoUser, "privilegeEscalationCommand": []string{}}}
	}
	e := startFleet(t, user("1"))
	alpha := e.fleet.Host("alpha")
	daemon := func(conf string) {
		t.Helper()
		if err := alpha.StartNixDaemon(t.Context(), conf); err != nil {
			t.Fatal(err)
		}
	}
	userRoot := "/tmp/.local/state/deployctl/pushed" // nosudo's home is /tmp
	valid := func(path string) bool {
		return e.ssh("alpha", "nix-store --check-validity "+path+" 2>/dev/null && echo yes || true") == "yes"
	}
	daemon("")
	top1 := e.toplevel("alpha")

	r := e.deployctl("push", "alpha")
	r.wantCode(t, 1)
	// Nix 2.8 says "lacks a valid signature", later Nix "lacks a
	// signature by a trusted key".
	if !regexp.MustCompile(`lacks a (valid )?signature(.|\n)*trusted-users(.|\n)*--sign-key`).MatchString(r.stderr) {
		t.Errorf("an unsigned push by an untrusted user: no refusal with advice:\n%s", r.stderr)
	}
	if !regexp.MustCompile(`(?m)^  alpha +FAILED +\S+ +push: `).MatchString(r.stderr) {
		t.Errorf("the refusal does not name the host and the step:\n%s", r.stderr)
	}
	if valid(top1) || e.ssh("alpha", "ls -A /tmp/.local/state/deployctl 2>/dev/null || true") != "" {
		t.Errorf("a refused push left the system or a root on alpha")
	}

	sk, pub := signingKey(t)
	daemon("trusted-public-keys = " + pub)
	e.deployctl("push", "alpha", "--sign-key", sk).wantCode(t, 0)
	e.gc("alpha")
	e.verifyClosure("alpha", top1)
	if got := e.ssh("alpha", "readlink "+userRoot); got != top1 {
		t.Errorf("nosudo's root → %q, want %s", got, top1)
	}
	if e.ssh("alpha", "test -e /nix/var/nix/gcroots/deployctl && echo yes || true") != "" {
		t.Errorf("a push without root wrote the system's GC roots")
	}
	r = e.deployctl("push", "alpha", "--sign-key", sk)
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "[alpha] sending 0 of") {
		t.Errorf("a second push sent paths again:\n%s", r.stderr)
	}

	daemon("trusted-users = root " + fleet.NoSudoUser)
	for _, c := range []struct{ rev, backend string }{{"2", "native"}, {"3", "nix"}} {
		old := e.toplevel("alpha")
		e.writeFlake(user(c.rev))
		top := e.toplevel("alpha")
		e.deployctl("push", "alpha", "--copy-backend", c.backend).wantCode(t, 0)
		e.gc("alpha")
		e.verifyClosure("alpha", top)
		if got := e.ssh("alpha", "readlink "+userRoot); got != top {
			t.Errorf("%s: nosudo's root → %q, want %s", c.backend, got, top)
		}
		if valid(old) {
			t.Errorf("%s: the system pushed before (%s) is still kept: its root was not replaced", c.backend, old)
		}
	}

	// Built on the host by the trusted user, through the daemon: the root
	// is the user's too.
	onTarget := user("4")
	onTarget.Deployment["buildOnTarget"] = true
	e.writeFlake(onTarget)
	top := e.toplevel("alpha")
	e.deployctl("build", "alpha").wantCode(t, 0)
	e.gc("alpha")
	e.verifyClosure("alpha", top)
	if got := e.ssh("alpha", "readlink /tmp/.local/state/deployctl/build-alpha"); got != top {
		t.Errorf("built on the host: nosudo's build root → %q, want %s", got, top)
	}

	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"activate", "alpha"}, 2}, {[]string{"deploy", "alpha"}, 2}, {[]string{"push", "alpha", "--copy-flake"}, 2},
		{[]string{"rollback", "alpha"}, 2}, {[]string{"upload-keys", "alpha"}, 2},
		{[]string{"plan", "alpha"}, 2}, {[]string{"deploy", "--dry-run", "alpha"}, 1},
	} {
		args := c.args
		r := e.deployctl(args...)
		r.wantCode(t, c.code)
		if !regexp.MustCompile(`alpha\b.*needs root on the host, and nosudo has no way to become root`).MatchString(r.stderr) {
			t.Errorf("%s: not refused up front with the reason:\n%s", args[0], r.stderr)
		}
	}
	if got := e.currentSystem("alpha"); got != "" {
		t.Errorf("alpha runs %q after refusals", got)
	}
}
