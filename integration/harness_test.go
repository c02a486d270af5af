package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/integration/fleet"
	"github.com/deployctl/deployctl/internal/cli"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// requireFleet skips the test where this machine cannot run a fleet, and
// fails it in CI, where a skipped fleet would prove nothing.
func requireFleet(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fleet tests are left out with -short (make test-quick)")
	}
	if err := fleet.Prerequisites(); err != nil {
		nixtest.Unavailable(t, "this machine cannot run a test fleet: "+err.Error())
	}
}

// testEnv is a running fleet with a fixture flake for it.
type testEnv struct {
	t     *testing.T
	fleet *fleet.Fleet
	flake string
	home  string
}

// startFleet starts one host per spec and writes their fixture flake.
func startFleet(t *testing.T, specs ...fixture.Host) *testEnv {
	t.Helper()
	return startFleetOf(t, "", specs...)
}

// startSystemdFleet is startFleet with hosts that boot systemd, of a
// Debian release (its root is built the first time: about a minute).
func startSystemdFleet(t *testing.T, release string, specs ...fixture.Host) *testEnv {
	t.Helper()
	requireFleet(t)
	if err := fleet.SystemdPrerequisites(); err != nil {
		nixtest.Unavailable(t, "this machine cannot run systemd hosts: "+err.Error())
	}
	return startFleetOf(t, release, specs...)
}

func startFleetOf(t *testing.T, systemd string, specs ...fixture.Host) *testEnv {
	t.Helper()
	requireFleet(t)
	dir := t.TempDir()
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log bytes.Buffer
	f, err := fleet.Start(ctx, fleet.Options{Dir: filepath.Join(dir, "fleet"), Hosts: names, Log: &log, Systemd: systemd})
	if err != nil {
		t.Fatalf("start fleet: %v", err)
	}
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() && log.Len() > 0 {
			t.Logf("sshd output:\n%s", log.String())
		}
	})
	e := &testEnv{t: t, fleet: f, flake: filepath.Join(dir, "flake"), home: filepath.Join(dir, "home")}
	if err := os.MkdirAll(e.home, 0o700); err != nil {
		t.Fatal(err)
	}
	e.writeFlake(specs...)
	return e
}

func (e *testEnv) writeFlake(specs ...fixture.Host) {
	e.t.Helper()
	if err := fixture.Write(e.flake, specs); err != nil {
		e.t.Fatal(err)
	}
}

// env is the environment deployctl and nix run with in tests: no binary
// cache (unreachable here), no ssh agent, a home of the test's own.
func (e *testEnv) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "SSH_AUTH_SOCK" && k != "NIX_CONFIG" && k != "HOME" {
			env = append(env, kv)
		}
	}
	return append(append(env, "NIX_CONFIG=substituters =", "HOME="+e.home), extra...)
}

// result is one deployctl run.
type result struct {
	code           int
	stdout, stderr string
}

// deployctl runs deployctl in-process against the fleet and its flake.
func (e *testEnv) deployctl(args ...string) result {
	e.t.Helper()
	return e.run(nil, nil, "", args...)
}

func (e *testEnv) deployctlWith(env []string, args ...string) result {
	e.t.Helper()
	return e.run(nil, env, "", args...)
}

// deployctlInput runs deployctl with stdin as its standard input.
func (e *testEnv) deployctlInput(stdin string, args ...string) result {
	e.t.Helper()
	return e.run(nil, nil, stdin, args...)
}

// deployctlInterrupted runs deployctl and interrupts it (as Ctrl-C does)
// as soon as its stderr contains when.
func (e *testEnv) deployctlInterrupted(when string, args ...string) result {
	e.t.Helper()
	return e.run([]trigger{{when: when, interrupt: true}}, nil, "", args...)
}

// deployctlInterruptedTwice interrupts deployctl once its stderr contains
// first, and again (detaching it) once it then contains second.
func (e *testEnv) deployctlInterruptedTwice(first, second string, args ...string) result {
	e.t.Helper()
	return e.run([]trigger{{when: first, interrupt: true}, {when: second, interrupt: true}}, nil, "", args...)
}

// deployctlWatching runs deployctl and calls fn, once, as soon as its
// stderr contains when; deployctl waits meanwhile.
func (e *testEnv) deployctlWatching(when string, fn func(), args ...string) result {
	e.t.Helper()
	return e.run([]trigger{{when: when, fn: fn}}, nil, "", args...)
}

// trigger is something done to a running deployctl once its stderr
// contains when: fn called, or an interrupt (the first interrupts, the
// second detaches).
type trigger struct {
	when      string
	fn        func()
	interrupt bool
}

// run runs deployctl in-process, pulling the triggers in order.
func (e *testEnv) run(triggers []trigger, env []string, stdin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	detach, detachNow := context.WithCancel(context.Background())
	defer detachNow()
	interrupts := []func(){cancel, detachNow}
	for i := range triggers {
		if triggers[i].interrupt {
			triggers[i].fn, interrupts = interrupts[0], interrupts[1:]
		}
	}
	var stdout bytes.Buffer
	stderr := &watchWriter{triggers: triggers}
	full := append([]string{"--flake", e.flake, "--ssh-config", e.fleet.SSHConfig}, args...)
	code := cli.Main(ctx, cli.Invocation{Args: full, Stdin: strings.NewReader(stdin), Stdout: &stdout, Stderr: stderr, Env: e.env(env...), Detach: detach})
	e.t.Logf("deployctl %s → exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	return result{code, stdout.String(), stderr.String()}
}

// watchWriter collects output and pulls each trigger, in order, once the
// output after the previous one contains its text.
type watchWriter struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	from     int
	triggers []trigger
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for len(w.triggers) > 0 {
		t := w.triggers[0]
		i := strings.Index(w.buf.String()[w.from:], t.when)
		if i < 0 {
			break
		}
		w.from += i + len(t.when)
		w.triggers = w.triggers[1:]
		t.fn()
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// ssh runs a command on a host with OpenSSH, failing the test on error.
func (e *testEnv) ssh(host, command string) string {
	e.t.Helper()
	out, err := e.fleet.SSH(context.Background(), host, command)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// verifyClosure fails the test unless top and every path of its closure
// are valid in host's store, with the contents Nix recorded.
func (e *testEnv) verifyClosure(host, top string) {
	e.t.Helper()
	e.ssh(host, "paths=$(nix-store -qR "+top+") && nix-store --verify-path $paths")
}

// gc collects host's garbage.
func (e *testEnv) gc(host string) {
	e.t.Helper()
	e.ssh(host, "nix-store --gc >/dev/null 2>&1")
}

// cutter returns a function that kills every SSH session on host (sshd
// itself stays): connections to it die under whatever uses them.
func (e *testEnv) cutter(host string) func() {
	return func() {
		out, err := e.fleet.SSH(e.t.Context(), host, "pkill -f 'sshd: root@notty'")
		e.t.Logf("cut %s's sessions: %v %s", host, err, out)
	}
}

// currentSystem is the host's /run/current-system target, "" when unset.
func (e *testEnv) currentSystem(host string) string {
	return e.ssh(host, "readlink /run/current-system || true")
}

// toplevel is the store path the flake's host evaluates to, from Nix
// directly (not from deployctl).
func (e *testEnv) toplevel(host string) string {
	e.t.Helper()
	cmd := exec.Command("nix", "--extra-experimental-features", "nix-command flakes", "eval", "--raw",
		"path:"+e.flake+"#nixosConfigurations."+host+".config.system.build.toplevel.outPath")
	cmd.Env = e.env()
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("nix eval toplevel of %s: %v", host, err)
	}
	return string(out)
}

func (r result) wantCode(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, code, r.stderr)
	}
}
