package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
	// sessions holds a token per open session: sshd refuses more than
	// MaxSessions per connection (10 by default).
	sessions chan struct{}
	// password is the sudo password given, if any; sudo is what its
	// use was found to be.
	password string
	sudoOnce sync.Once
	sudo     sudoState
	// helper says the host's deployctl-remote runs the steps, once
	// helperKnown (probeHelper).
	helperMu    sync.Mutex
	helperKnown bool
	helper      atomic.Bool
}

// MaxSessions is how many sessions deployctl opens at once on one
// connection; OpenSSH's sshd allows 10 unless configured otherwise, and a
// closed session takes a moment to be freed there.
const MaxSessions = 8

// session opens a session once fewer than MaxSessions are open; release
// frees its place once it is closed.
func (c *Conn) session(ctx context.Context) (sess *ssh.Session, release func(), err error) {
	select {
	case c.sessions <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	release = func() { <-c.sessions }
	if c.client == nil {
		release()
		return nil, nil, errNotConnected
	}
	// A session of ours that just ended may not be freed on the server
	// yet (or the server allows fewer): a refusal is worth a few retries.
	for wait := 20 * time.Millisecond; ; wait *= 2 {
		sess, err = c.client.NewSession()
		if err == nil || !refused(err) || wait > time.Second {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			release()
			return nil, nil, ctx.Err()
		}
	}
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("open ssh session: %w", err)
	}
	return sess, release, nil
}

// Endpoint is where the connection goes.
func (c *Conn) Endpoint() *Endpoint { return c.ep }

// Close closes the connection and its ProxyJump hops.
func (c *Conn) Close() error {
	if c.client == nil {
		return nil
	}
	err := c.client.Close()
	for i := len(c.hops) - 1; i >= 0; i-- {
		c.hops[i].Close()
	}
	return err
}

// Cmd is a command to run on the target.
type Cmd struct {
	Argv []string
	// Step, when set, is what runs: Argv are its arguments (Step.Cmd).
	Step *Step
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
func (c *Conn) argv(cmd Cmd) []string { return c.argvVia(cmd, c.helper.Load()) }

// argvVia is argv with a step run through deployctl-remote or not.
func (c *Conn) argvVia(cmd Cmd, viaHelper bool) []string {
	argv := cmd.Argv
	if cmd.Step != nil {
		argv = cmd.Step.Inline(cmd.Argv)
		if viaHelper {
			argv = append([]string{HelperPath, cmd.Step.Name}, cmd.Argv...)
		}
	}
	if cmd.Root && c.ep.User != "root" {
		if c.sudo.feed.Load() {
			return append(c.withSudoFlags(), argv...)
		}
		return append(append([]string{}, c.escalation...), argv...)
	}
	return argv
}

// escalated says whether cmd runs through the escalation, and prepares a
// sudo password for it when one was given, and deployctl-remote for a step.
func (c *Conn) escalated(ctx context.Context, cmd Cmd) (bool, error) {
	if !cmd.Root || c.ep.User == "root" {
		return false, nil
	}
	if cmd.Step != nil || c.password != "" {
		c.probeHelper(ctx)
	}
	if c.password != "" {
		if err := c.prepareSudo(ctx); err != nil {
			return true, err
		}
	}
	return true, nil
}

// Unprivileged says whether root commands run as the login user itself:
// a user who is not root, with no privilege escalation command.
func (c *Conn) Unprivileged() bool { return Unprivileged(c.ep.User, c.escalation) }

// Unprivileged says whether user, with the escalation command escalation,
// runs commands as itself only: it is not root and has no way to become
// root.
func Unprivileged(user string, escalation []string) bool {
	return user != "root" && len(escalation) == 0
}

// AsRoot is argv as it runs as root on the target: behind the privilege
// escalation command when the login user is not root.
func (c *Conn) AsRoot(argv ...string) []string { return c.argv(Cmd{Argv: argv, Root: true}) }

// CommandLine is an OpenSSH command line a person could paste to run argv on
// the target by hand.
func (c *Conn) CommandLine(cmd Cmd) string { return c.commandLine(c.argv(cmd)) }

// commandLine is CommandLine for the remote argv as it runs.
func (c *Conn) commandLine(argv []string) string {
	args := append([]string{"ssh"}, c.ep.OpenSSHArgs(c.configFile)...)
	args = append(args, c.ep.Destination(), shell.Join(argv))
	return shell.Join(args)
}

// refused reports whether a session was refused for being one too many:
// OpenSSH answers "open failed" (SSH2_OPEN_CONNECT_FAILED); other servers
// say "administratively prohibited".
func refused(err error) bool {
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) {
		return false
	}
	return oce.Reason == ssh.Prohibited || oce.Reason == ssh.ConnectionFailed && oce.Message == "open failed"
}

// Run runs cmd and waits for it. When ctx ends first, Run closes the
// session and returns ctx's error. It sends the remote command no signal:
// an interrupted deploy must not kill a switch halfway (the command sees
// its input and output close instead).
//
// A step sent as a script that sudo refuses is sent again through the
// host's deployctl-remote when the host has it now (a switch installed it
// and narrowed the sudo rules to it); sudo ran nothing the first time.
func (c *Conn) Run(ctx context.Context, cmd Cmd) error {
	// A second try needs the input again, whole: a step's is small.
	var input []byte
	hasInput := cmd.Step != nil && cmd.Stdin != nil
	if hasInput {
		var err error
		if input, err = io.ReadAll(cmd.Stdin); err != nil {
			return fmt.Errorf("read the input of %s: %w", cmd.Step.Name, err)
		}
		cmd.Stdin = bytes.NewReader(input)
	}
	err, retry := c.runOnce(ctx, cmd)
	if retry {
		if hasInput {
			cmd.Stdin = bytes.NewReader(input)
		}
		err, _ = c.runOnce(ctx, cmd)
	}
	return err
}

// runOnce is Run's one try. retry says sudo's rules refused a step sent as
// a script, and the host has deployctl-remote now: sudo ran nothing, and
// the step can go through it.
func (c *Conn) runOnce(ctx context.Context, cmd Cmd) (err error, retry bool) {
	if err := ctx.Err(); err != nil {
		return err, false
	}
	root, err := c.escalated(ctx, cmd)
	if err != nil {
		return err, false
	}
	viaHelper := c.helper.Load()
	argv := c.argvVia(cmd, viaHelper)
	line := c.commandLine(argv)
	c.log.Debug("exec", "host", c.name, "cmd", line)
	if root && c.sudo.feed.Load() {
		cmd.Stdin = c.sudoInput(cmd.Stdin)
	}
	rec := transcriptOf(ctx).begin(line)
	cmd.Stdout, cmd.Stderr = rec.stdout(cmd.Stdout), rec.stderr(cmd.Stderr)
	err = c.run(ctx, argv, cmd)
	var notAllowed bool
	if root {
		err, notAllowed = c.sudoRefused(ctx, cmd, viaHelper, err)
	}
	rec.end(err)
	if notAllowed && cmd.Step != nil && !viaHelper && c.helperNow(ctx) {
		c.log.Debug("sudo refused the step's script, and the host has deployctl-remote now: the step again through it", "host", c.name, "step", cmd.Step.Name)
		return err, true
	}
	return err, false
}

// run runs argv with cmd's input and output.
func (c *Conn) run(ctx context.Context, argv []string, cmd Cmd) error {
	line := shell.Join(argv)
	sess, release, err := c.session(ctx)
	if err != nil {
		return err
	}
	defer release()
	defer sess.Close()
	sess.Stdin = cmd.Stdin
	sess.Stdout = cmd.Stdout
	tail := NewTail(4096)
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
	return exitError(line, err, tail)
}

// exitError turns a finished session's error into Run's errors.
func exitError(line string, err error, tail *Tail) error {
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

// Process is a remote command whose input and output the caller drives
// (a protocol such as nix-store --serve).
type Process struct {
	Stdin  io.WriteCloser
	Stdout io.Reader
	close  func() error
	line   string
	tail   *Tail
	done   chan struct{}
	err    error
}

// Start starts cmd with its standard input and output given to the caller;
// its standard error goes to cmd.Stderr and is kept for errors. When ctx
// ends, the session is closed.
func (c *Conn) Start(ctx context.Context, cmd Cmd) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root, err := c.escalated(ctx, cmd)
	if err != nil {
		return nil, err
	}
	viaHelper := c.helper.Load()
	argv := c.argvVia(cmd, viaHelper)
	line := shell.Join(argv)
	c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(argv))
	sess, release, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	p := &Process{close: sess.Close, line: line, tail: NewTail(4096), done: make(chan struct{})}
	rec := transcriptOf(ctx).begin(c.commandLine(argv) + "   # its output is a protocol stream: not recorded")
	cmd.Stderr = rec.stderr(cmd.Stderr)
	if cmd.Stderr != nil {
		sess.Stderr = io.MultiWriter(cmd.Stderr, p.tail)
	} else {
		sess.Stderr = p.tail
	}
	if p.Stdin, err = sess.StdinPipe(); err == nil {
		p.Stdout, err = sess.StdoutPipe()
	}
	if err == nil {
		err = sess.Start(line)
	}
	if err == nil && root && c.sudo.feed.Load() {
		_, err = io.WriteString(p.Stdin, c.password+"\n")
	}
	if err != nil {
		sess.Close()
		release()
		err = fmt.Errorf("start %s: %w", line, err)
		rec.end(err)
		return nil, err
	}
	go func() {
		err := sess.Wait()
		p.err = exitError(line, err, p.tail)
		sess.Close()
		release()
		if root {
			p.err, _ = c.sudoRefused(context.WithoutCancel(ctx), cmd, viaHelper, p.err)
		}
		rec.end(p.err)
		close(p.done)
	}()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	go func() {
		<-p.done
		stop()
	}()
	return p, nil
}

// Wait waits for the command to exit and returns what Run would.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Exited waits at most d for the command to exit: for a caller whose reads
// failed, to learn why.
func (p *Process) Exited(d time.Duration) (err error, ok bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(d):
		return nil, false
	}
}

// Stderr is the end of the command's standard error so far.
func (p *Process) Stderr() string { return p.tail.String() }

// Close ends the session; the remote command sees its input and output close.
func (p *Process) Close() error { return p.close() }

// Tail keeps the last bytes written to it; goroutines may share one.
type Tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

// NewTail returns a Tail keeping max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

// Reset forgets what was written.
func (t *Tail) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
