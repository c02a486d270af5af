package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/integration/fixture"
)

// TestUnknownHostKeyRefusedUnlessAccepted: a host known_hosts does not know
// is refused with its fingerprint and a hint, and nothing is done on it;
// --accept-new-host-keys records the key and deploys.
func TestUnknownHostKeyRefusedUnlessAccepted(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	if err := os.WriteFile(e.fleet.KnownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fp := fingerprint(t, filepath.Join(e.fleet.Host("alpha").Root, "etc", "ssh_host_ed25519_key.pub"))

	r := e.deployctl("deploy", "alpha")
	r.wantCode(t, 1)
	for _, want := range []string{"connect: host key of 127.0.0.", "is unknown", fp, "--accept-new-host-keys"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal lacks %q:\n%s", want, r.stderr)
		}
	}
	if kh, _ := os.ReadFile(e.fleet.KnownHosts); len(kh) != 0 {
		t.Errorf("known_hosts was written without --accept-new-host-keys: %s", kh)
	}
	restoreKnownHosts(t, e) // so that OpenSSH's checks below can log in
	if got := e.currentSystem("alpha"); got != "" {
		t.Errorf("alpha switched to %s although its key was refused", got)
	}

	if err := os.WriteFile(e.fleet.KnownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r = e.deployctl("deploy", "alpha", "--accept-new-host-keys")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, "recorded new host key") || !strings.Contains(r.stderr, fp) {
		t.Errorf("accepting a key is not reported with its fingerprint:\n%s", r.stderr)
	}
	kh, err := os.ReadFile(e.fleet.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.fleet.Host("alpha").KnownHostsLine; strings.TrimSpace(string(kh)) != want {
		t.Errorf("known_hosts = %q, want %q", kh, want)
	}
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, want)
	}
}

// TestChangedHostKeyAlwaysRefused: a key that differs from the recorded one
// is refused, also with --accept-new-host-keys, and nothing is done.
func TestChangedHostKeyAlwaysRefused(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	other := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(other + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	forged := e.fleet.Host("alpha").Addr + " " + f[0] + " " + f[1] + "\n"
	if err := os.WriteFile(e.fleet.KnownHosts, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"deploy", "alpha"}, {"deploy", "alpha", "--accept-new-host-keys"}} {
		r := e.deployctl(args...)
		r.wantCode(t, 1)
		if !strings.Contains(r.stderr, "has CHANGED") || !strings.Contains(r.stderr, "refuses to connect") ||
			!strings.Contains(r.stderr, "ssh-keygen -f "+e.fleet.KnownHosts+" -R 127.0.0.") {
			t.Errorf("%v: changed key not refused as such:\n%s", args, r.stderr)
		}
	}
	if kh, _ := os.ReadFile(e.fleet.KnownHosts); string(kh) != forged {
		t.Errorf("known_hosts was modified: %q", kh)
	}
	restoreKnownHosts(t, e)
	if got := e.currentSystem("alpha"); got != "" {
		t.Errorf("alpha switched to %s although its key was refused", got)
	}
}

// TestProxyJump: a target reached through another host (sshOptions -J) is
// deployed through it, and fails at connect when the jump host is down.
func TestProxyJump(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "jump"}, fixture.Host{Name: "inner"})
	e.writeFlake(fixture.Host{Name: "jump"}, fixture.Host{Name: "inner", Deployment: map[string]any{"sshOptions": []string{"-J", "jump"}}})
	r := e.deployctl("deploy", "inner")
	r.wantCode(t, 0)
	if got, want := e.currentSystem("inner"), e.toplevel("inner"); got != want {
		t.Errorf("inner: /run/current-system = %q, want %s", got, want)
	}
	if got := e.currentSystem("jump"); got != "" {
		t.Errorf("the jump host was switched: %s", got)
	}
	e.fleet.Host("jump").Stop()
	r = e.deployctl("deploy", "inner")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "connect: ProxyJump jump: connect to 127.0.0.") {
		t.Errorf("with the jump host down, the error does not say so:\n%s", r.stderr)
	}
}

func fingerprint(t *testing.T, pubFile string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-f", pubFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[1] // "256 SHA256:… comment (ED25519)"
}

func restoreKnownHosts(t *testing.T, e *testEnv) {
	t.Helper()
	var lines []string
	for _, h := range e.fleet.Hosts {
		lines = append(lines, h.KnownHostsLine)
	}
	if err := os.WriteFile(e.fleet.KnownHosts, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}
