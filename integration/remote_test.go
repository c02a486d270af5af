package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/remote"
)

// TestAgentAuthentication: with no identity file, deployctl (and the nix
// copy it runs) log in with the keys of the ssh-agent at SSH_AUTH_SOCK.
func TestAgentAuthentication(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	noKeyConfig := filepath.Join(t.TempDir(), "ssh_config")
	cfg := fmt.Sprintf("Host alpha\n  HostName %s\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
		e.fleet.Host("alpha").Addr, e.fleet.KnownHosts)
	if err := os.WriteFile(noKeyConfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(env ...string) result {
		return e.deployctlWith(env, "--ssh-config", noKeyConfig, "deploy", "alpha")
	}
	r := run()
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "unable to authenticate") {
		t.Errorf("without agent or key, the error does not say authentication failed:\n%s", r.stderr)
	}

	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		} else if i > 100 {
			t.Fatal("ssh-agent did not create its socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	add := exec.Command("ssh-add", e.fleet.Identity)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
	run("SSH_AUTH_SOCK="+sock).wantCode(t, 0)
	if got, want := e.currentSystem("alpha"), e.toplevel("alpha"); got != want {
		t.Errorf("alpha: /run/current-system = %q, want %s", got, want)
	}
}

// TestHandshakeDeadline: a server that accepts TCP but never speaks SSH
// fails the connection after ConnectTimeout instead of hanging it.
func TestHandshakeDeadline(t *testing.T) {
	d := newDialer(t, fmt.Sprintf("Host silent\n  HostName 127.0.0.1\n  Port %d\n  ConnectTimeout 1\n", silentServer(t)))
	expectHandshakeTimeout(t, d, 5*time.Second)
}

// TestHandshakeDeadlineThroughJump: the same through a ProxyJump hop,
// whose channel has no deadlines of its own. The hop goes through a
// counting proxy, to prove the jump was taken (the silent server could be
// reached directly too).
func TestHandshakeDeadlineThroughJump(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	p, alpha := proxiedHost(t, e, "alpha")
	d := newDialer(t, fmt.Sprintf("Host silent\n  HostName 127.0.0.1\n  Port %d\n  ConnectTimeout 1\n  ProxyJump alpha\n%s",
		silentServer(t), alpha))
	expectHandshakeTimeout(t, d, 8*time.Second)
	if p.connections() == 0 {
		t.Error("the dial did not go through the jump host")
	}
}

// expectHandshakeTimeout dials "silent" and expects it to give up after
// ConnectTimeout 1, within limit.
func expectHandshakeTimeout(t *testing.T, d *remote.Dialer, limit time.Duration) {
	t.Helper()
	start := time.Now()
	_, err := d.Dial(context.Background(), remote.Target{Name: "silent", Host: "silent"})
	if err == nil || !strings.Contains(err.Error(), "no answer within 1s") {
		t.Errorf("Dial to a silent server = %v", err)
	}
	if took := time.Since(start); took > limit {
		t.Errorf("Dial took %s with ConnectTimeout 1", took)
	}
}

// proxiedHost puts a proxy in front of a fleet host and returns it with an
// ssh_config block that reaches the host, as its own name, through it.
func proxiedHost(t *testing.T, e *testEnv, name string) (*proxy, string) {
	t.Helper()
	h := e.fleet.Host(name)
	p := startProxy(t, h.Addr+":22")
	key := strings.Fields(h.KnownHostsLine)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", p.port, key[1], key[2])), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, fmt.Sprintf("Host %s\n  HostName 127.0.0.1\n  Port %d\n  IdentityFile %s\n  UserKnownHostsFile %s\n", name, p.port, e.fleet.Identity, kh)
}

// TestKeepaliveClosesDeadConnection: when the network to a host goes
// silent mid-command, keepalives close the connection and the command
// fails with an unknown outcome, rather than waiting forever.
func TestKeepaliveClosesDeadConnection(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	p, alpha := proxiedHost(t, e, "alpha")
	d := newDialer(t, alpha+"  ServerAliveInterval 1\n  ServerAliveCountMax 2\n")
	conn, err := d.Dial(context.Background(), remote.Target{Name: "alpha", Host: "alpha"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Run(context.Background(), remote.Cmd{Argv: []string{"true"}}); err != nil {
		t.Fatalf("a command before the network dies: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- conn.Run(context.Background(), remote.Cmd{Argv: []string{"sleep", "60"}}) }()
	time.Sleep(300 * time.Millisecond)
	p.freeze()
	select {
	case err := <-done:
		if !errors.Is(err, remote.ErrOutcomeUnknown) && (err == nil || !strings.Contains(err.Error(), "closed")) {
			t.Errorf("command on a dead connection ended with %v, want an unknown outcome", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the command still waits 15s after the network died: keepalives did not close the connection")
	}
}

// silentServer listens on a loopback port, accepts connections and never
// says anything on them, until the test ends.
func silentServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func newDialer(t *testing.T, config string) *remote.Dialer {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := remote.NewDialer(remote.Options{ConfigFile: cfg, Home: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// proxy forwards TCP to a target until frozen; frozen, it forwards nothing
// and keeps the connections open, as a network that silently drops packets.
type proxy struct {
	port   int
	mu     sync.Mutex
	frozen bool
	conns  int
}

// connections counts the connections the proxy has carried.
func (p *proxy) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &proxy{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns++
			p.mu.Unlock()
			t.Cleanup(func() { c.Close(); u.Close() })
			go p.pipe(u, c)
			go p.pipe(c, u)
		}
	}()
	return p
}

func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

func (p *proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen {
			if err != nil {
				return
			}
			continue // swallow: the packets are lost
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
