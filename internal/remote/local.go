package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/deployctl/deployctl/internal/shell"
)

// Local runs commands on this machine, as Conn does on a target: for
// deploying the machine deployctl runs on. Root commands go through
// Escalation unless this process is root.
type Local struct {
	Escalation []string
	Log        *slog.Logger
	// Env is the commands' environment (nil: this process's).
	Env []string
}

func (l *Local) argv(cmd Cmd) []string {
	argv := cmd.Argv
	if cmd.Step != nil {
		argv = cmd.Step.Inline(cmd.Argv)
	}
	if cmd.Root && os.Geteuid() != 0 {
		return append(append([]string{}, l.Escalation...), argv...)
	}
	return argv
}

func (l *Local) command(cmd Cmd) *exec.Cmd {
	argv := l.argv(cmd)
	if l.Log != nil {
		l.Log.Debug("exec", "host", "local", "cmd", shell.Join(argv))
	}
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = l.Env
	return c
}

// Run runs cmd and waits for it. When ctx ends first, Run returns ctx's
// error and leaves the command running, as Conn does (it sends no signal).
func (l *Local) Run(ctx context.Context, cmd Cmd) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := l.command(cmd)
	rec := transcriptOf(ctx).begin(shell.Join(c.Args))
	cmd.Stdout, cmd.Stderr = rec.stdout(cmd.Stdout), rec.stderr(cmd.Stderr)
	c.Stdin, c.Stdout = cmd.Stdin, cmd.Stdout
	tail := NewTail(4096)
	c.Stderr = tail
	if cmd.Stderr != nil {
		c.Stderr = io.MultiWriter(cmd.Stderr, tail)
	}
	if err := c.Start(); err != nil {
		err = fmt.Errorf("start %s: %w", shell.Join(c.Args), err)
		rec.end(err)
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		err = localExit(c, err, tail)
		rec.end(err)
		return err
	case <-ctx.Done():
		// As Conn does: the command goes on, but give it a moment to stop
		// writing to the caller's writers before handing them back.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		rec.end(ctx.Err())
		return ctx.Err()
	}
}

// Start starts cmd with its standard input and output given to the caller.
func (l *Local) Start(ctx context.Context, cmd Cmd) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := l.command(cmd)
	p := &Process{line: shell.Join(c.Args), tail: NewTail(4096), done: make(chan struct{})}
	rec := transcriptOf(ctx).begin(p.line + "   # its output is a protocol stream: not recorded")
	cmd.Stderr = rec.stderr(cmd.Stderr)
	c.Stderr = p.tail
	if cmd.Stderr != nil {
		c.Stderr = io.MultiWriter(cmd.Stderr, p.tail)
	}
	var err error
	if p.Stdin, err = c.StdinPipe(); err == nil {
		p.Stdout, err = c.StdoutPipe()
	}
	if err == nil {
		err = c.Start()
	}
	if err != nil {
		err = fmt.Errorf("start %s: %w", p.line, err)
		rec.end(err)
		return nil, err
	}
	p.close = func() error {
		p.Stdin.Close()
		return c.Process.Kill()
	}
	go func() {
		p.err = localExit(c, c.Wait(), p.tail)
		rec.end(p.err)
		close(p.done)
	}()
	return p, nil
}

// localExit is a finished command's error as Run reports it.
func localExit(c *exec.Cmd, err error, tail *Tail) error {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return &ExitError{Cmd: shell.Join(c.Args), Status: ee.ExitCode(), Stderr: tail.String()}
	}
	return fmt.Errorf("%s: %w", shell.Join(c.Args), err)
}
