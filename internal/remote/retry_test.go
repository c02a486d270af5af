package remote

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sudoHost is an SSH server that plays a host whose sudo rules narrow to
// deployctl-remote once narrowed is set (as a switch to a system with the
// module does): then deployctl-remote answers --protocol, sudo refuses
// anything else (as sudo -n does: "a password is required"), and sudo -l
// says it is not allowed. It keeps each command it ran with its input.
type sudoHost struct {
	narrowed atomic.Bool
	mu       sync.Mutex
	ran      []string // "COMMAND <- INPUT"
}

func (h *sudoHost) exec(line string, input []byte) (stdout, stderr string, status uint32) {
	narrow := h.narrowed.Load()
	switch {
	case line == HelperPath+" --protocol" && narrow:
		return "1\n", "", 0
	case line == HelperPath+" --protocol":
		return "", "sh: 1: " + HelperPath + ": not found\n", 127
	case strings.HasPrefix(line, "sudo -n -l -- "):
		return "", "", 1
	case narrow && !strings.HasPrefix(line, "sudo -H -- "+HelperPath+" "):
		return "", "sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\nsudo: a password is required\n", 1
	case strings.Contains(line, "fails-by-itself"):
		return "", "the database says: a password is required\n", 1
	}
	h.mu.Lock()
	h.ran = append(h.ran, line+" <- "+string(input))
	h.mu.Unlock()
	return "", "", 0
}

func (h *sudoHost) serve(t *testing.T) string {
	return fakeServer(t, func(nc ssh.NewChannel) {
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			for r := range creqs {
				r.Reply(r.Type == "exec", nil)
				if r.Type != "exec" {
					continue
				}
				var cmd struct{ Command string }
				ssh.Unmarshal(r.Payload, &cmd)
				input, _ := io.ReadAll(ch)
				stdout, stderr, status := h.exec(cmd.Command, input)
				io.WriteString(ch, stdout)
				io.WriteString(ch.Stderr(), stderr)
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
				ch.Close()
			}
		}()
	})
}

// TestStepAgainThroughTheHelper: a step sudo refuses as a script, once
// the host has deployctl-remote (a switch installed it and narrowed the
// rules), runs again through it, with its whole input; a command that
// fails by itself, in words like sudo's, is neither explained as sudo's
// refusal nor run again.
func TestStepAgainThroughTheHelper(t *testing.T) {
	h := &sudoHost{}
	addr := h.serve(t)
	client, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "deploy", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	host, _, _ := net.SplitHostPort(addr)
	c := &Conn{name: "fake", client: client, ep: &Endpoint{HostName: host, User: "deploy"}, escalation: []string{"sudo", "-H", "--"},
		log: slog.New(slog.DiscardHandler), sessions: make(chan struct{}, MaxSessions)}
	step := &Step{Name: "key-upload", Body: "cat > /run/keys/k"}
	ctx := context.Background()
	if err := c.Run(ctx, step.Cmd()); err != nil {
		t.Fatalf("before the switch: %v", err)
	}
	if c.UsesHelper(ctx) {
		t.Fatal("deployctl-remote found before it was installed")
	}

	h.narrowed.Store(true)
	cmd := step.Cmd("k")
	cmd.Stdin = strings.NewReader("the secret")
	if err := c.Run(ctx, cmd); err != nil {
		t.Fatalf("after the switch: %v", err)
	}
	h.mu.Lock()
	last := h.ran[len(h.ran)-1]
	h.mu.Unlock()
	if want := "sudo -H -- " + HelperPath + " key-upload k <- the secret"; last != want {
		t.Errorf("the step ran again as %q, want %q", last, want)
	}

	h.narrowed.Store(false)
	before := len(h.ran)
	err = c.Run(ctx, (&Step{Name: "fails-by-itself", Body: "false"}).Cmd())
	var ee *ExitError
	if !errors.As(err, &ee) || strings.Contains(err.Error(), "sudo") || len(h.ran) != before {
		t.Errorf("a command's own failure: %v (ran %d more)", err, len(h.ran)-before)
	}
}
