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
	port := silentServer(t)
	d := newDialer(t, fmt.Sprintf("Host silent\n  HostName 127.0.0.1\n  Port %d\n  ConnectTimeout 1\n", port))
	start := time.Now()
	_, err := d.Dial(context.Background(), remote.Target{Name: "silent", Host: "silent"})
	if err == nil || !strings.Contains(err.Error(), "no answer within 1s") {
		t.Errorf("Dial to a silent server = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Dial took %s with ConnectTimeout 1", took)
	}
}

// TestHandshakeDeadlineThroughJump: the same through a ProxyJump hop,
// whose channel has no deadlines of its own. The config reaches the fleet's
// hosts through an Include.
func TestHandshakeDeadlineThroughJump(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	d := newDialer(t, fmt.Sprintf("Host silent\n  HostName 127.0.0.1\n  Port %d\n  ConnectTimeout 1\n  ProxyJump alpha\nHost *\n  Include %s\n",
		silentServer(t), e.fleet.SSHConfig))
	start := time.Now()
	_, err := d.Dial(context.Background(), remote.Target{Name: "silent", Host: "silent"})
	if err == nil || !strings.Contains(err.Error(), "no answer within 1s") {
		t.Errorf("Dial through a jump host to a silent server = %v", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("Dial took %s with ConnectTimeout 1", took)
	}
}

// TestKeepaliveClosesDeadConnection: when the network to a host goes
// silent mid-command, keepalives close the connection and the command
// fails with an unknown outcome, rather than waiting forever.
func TestKeepaliveClosesDeadConnection(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	p := startProxy(t, e.fleet.Host("alpha").Addr+":22")
	hostKey := strings.Fields(e.fleet.Host("alpha").KnownHostsLine)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", p.port, hostKey[1], hostKey[2])), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDialer(t, fmt.Sprintf("Host alpha\n  HostName 127.0.0.1\n  Port %d\n  IdentityFile %s\n  UserKnownHostsFile %s\n"+
		"  ServerAliveInterval 1\n  ServerAliveCountMax 2\n", p.port, e.fleet.Identity, kh))
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
