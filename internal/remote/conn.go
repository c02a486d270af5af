package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/deployctl/deployctl/internal/shell"
)

// Conn is one SSH connection to a target, shared by every step of a run.
type Conn struct {
	name       string
	client     *ssh.Client
	hops       []*ssh.Client
	ep         *Endpoint
	escalation []string
	configFile string
	log        *slog.Logger
}

// Endpoint is where the connection goes.
func (c *Conn) Endpoint() *Endpoint { return c.ep }

// Close closes the connection and its ProxyJump hops.
func (c *Conn) Close() error {
	err := c.client.Close()
	for i := len(c.hops) - 1; i >= 0; i-- {
		c.hops[i].Close()
	}
	return err
}

// Cmd is a command to run on the target.
type Cmd struct {
	Argv []string
	// Root runs the command as root: through the privilege escalation
	// command when the login user is not root.
	Root   bool
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// ExitError is a remote command that ran and exited non-zero. Its message
// is the status and the end of the command's standard error; callers say
// which command it was.
type ExitError struct {
	Cmd    string
	Status int
	Stderr string // the end of its standard error, when captured
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("exit status %d", e.Status)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// ErrOutcomeUnknown is a remote command whose session ended without an exit
// status (the connection dropped, or the command was killed by a signal):
// it may or may not have done its work.
var ErrOutcomeUnknown = errors.New("the session ended without an exit status: the command's outcome is unknown")

// argv is the command as the remote shell will run it.
func (c *Conn) argv(cmd Cmd) []string {
	if cmd.Root && c.ep.User != "root" {
		return append(append([]string{}, c.escalation...), cmd.Argv...)
	}
	return cmd.Argv
}

// CommandLine is an OpenSSH command line a person could paste to run argv on
// the target by hand.
func (c *Conn) CommandLine(cmd Cmd) string {
	args := append([]string{"ssh"}, c.ep.OpenSSHArgs(c.configFile)...)
	args = append(args, c.ep.Destination(), shell.Join(c.argv(cmd)))
	return shell.Join(args)
}

// Run runs cmd and waits for it. When ctx ends first, Run closes the
// session and returns ctx's error. It sends the remote command no signal:
// an interrupted deploy must not kill a switch halfway (the command sees
// its input and output close instead).
func (c *Conn) Run(ctx context.Context, cmd Cmd) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	line := shell.Join(c.argv(cmd))
	c.log.Debug("exec", "host", c.name, "cmd", c.CommandLine(cmd))
	sess, err := c.client.NewSession()
	if err != nil {
		return fmt.Errorf("open ssh session: %w", err)
	}
	defer sess.Close()
	sess.Stdin = cmd.Stdin
	sess.Stdout = cmd.Stdout
	tail := &tailBuffer{max: 4096}
	if cmd.Stderr != nil {
		sess.Stderr = io.MultiWriter(cmd.Stderr, tail)
	} else {
		sess.Stderr = tail
	}
	if err := sess.Start(line); err != nil {
		return fmt.Errorf("start %s: %w", line, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		sess.Close()
		// Let the session's copying goroutines finish with our writers
		// before handing them back.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		return ctx.Err()
	}
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exitErr):
		if exitErr.Signal() != "" {
			return fmt.Errorf("%s: killed by signal %s: %w", line, exitErr.Signal(), ErrOutcomeUnknown)
		}
		return &ExitError{Cmd: line, Status: exitErr.ExitStatus(), Stderr: tail.String()}
	case errors.As(err, &missing), errors.Is(err, io.EOF):
		return fmt.Errorf("%s: %w", line, ErrOutcomeUnknown)
	default:
		return fmt.Errorf("%s: %w", line, err)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }
