package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"
	"time"
)

// sudoState is how a connection's root commands reach sudo when the user
// gave a password: found out once per connection.
type sudoState struct {
	// feed says sudo asks for the password: each root command gets it
	// on its standard input (sudo -S), ahead of the command's own.
	feed atomic.Bool
	err  error
}

// sudoFlags make sudo read the password from standard input (-S), every
// time (-k: a cached credential would leave the line to the command),
// without a prompt.
var sudoFlags = []string{"-S", "-k", "-p", ""}

// withSudoFlags is the escalation with sudoFlags after "sudo".
func (c *Conn) withSudoFlags() []string {
	return append(append([]string{c.escalation[0]}, sudoFlags...), c.escalation[1:]...)
}

// ErrSudoPassword is a sudo that did not accept the password given.
var ErrSudoPassword = errors.New("sudo did not accept the password")

// prepareSudo finds out, once, whether the host's sudo asks for the
// password: `sudo -n sh -c true` first, with no input; only when that says
// a password is required is the password tried (`sudo -S -k sh -c true`,
// the password alone on its input), and then fed to every root command.
// A host whose escalation is not sudo, or whose sudo needs no password, is
// never sent it.
func (c *Conn) prepareSudo(ctx context.Context) error {
	c.sudoOnce.Do(func() {
		if len(c.escalation) == 0 || path.Base(c.escalation[0]) != "sudo" {
			return
		}
		noop := []string{"sh", "-c", "true"}
		if c.helper.Load() {
			noop = []string{HelperPath, "--protocol"}
		}
		probe := append(append([]string{c.escalation[0], "-n"}, c.escalation[1:]...), noop...)
		c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(probe))
		err := c.run(ctx, probe, Cmd{})
		var ee *ExitError
		if err == nil || !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "password is required") {
			return // no password needed, or a failure the commands will report
		}
		try := append(c.withSudoFlags(), noop...)
		c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(try)+" (input: the password)")
		err = c.run(ctx, try, Cmd{Stdin: strings.NewReader(c.password + "\n")})
		switch {
		case err == nil:
			c.sudo.feed.Store(true)
		case errors.As(err, &ee) && (strings.Contains(ee.Stderr, "incorrect password") || strings.Contains(ee.Stderr, "Sorry, try again")):
			c.sudo.err = fmt.Errorf("sudo with the password given: %w", ErrSudoPassword)
		default:
			c.sudo.err = fmt.Errorf("sudo with the password given: %w", err)
		}
	})
	return c.sudo.err
}

// sudoInput is a root command's standard input when sudo is fed the
// password: the password line, then the command's own.
func (c *Conn) sudoInput(stdin io.Reader) io.Reader {
	if stdin == nil {
		return strings.NewReader(c.password + "\n")
	}
	return io.MultiReader(strings.NewReader(c.password+"\n"), stdin)
}

// sudoRefused explains a root command that sudo refused to run: it asked
// for a password nobody gave, or its rules do not allow the command. Asked
// without a password, sudo says the first for both; `sudo -n -l COMMAND`
// then tells them apart.
func (c *Conn) sudoRefused(ctx context.Context, cmd Cmd, err error) error {
	var ee *ExitError
	if !errors.As(err, &ee) {
		return err
	}
	user := c.ep.User
	notAllowed := fmt.Errorf("%s may not run this as root through sudo (check the host's sudo rules): %w", user, err)
	if cmd.Step != nil && !c.helper.Load() {
		notAllowed = fmt.Errorf("%s may not run this as root through sudo (check the host's sudo rules; a rule for %s alone needs deployctl-remote installed there: see deployctl remote-helper): %w", user, HelperPath, err)
	}
	switch {
	case strings.Contains(ee.Stderr, "is not in the sudoers file") || strings.Contains(ee.Stderr, "is not allowed to execute"):
		return notAllowed
	case !strings.Contains(ee.Stderr, "a terminal is required to read the password") && !strings.Contains(ee.Stderr, "a password is required"):
		return err
	}
	if c.password == "" && len(c.escalation) > 0 && path.Base(c.escalation[0]) == "sudo" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		command := c.argv(Cmd{Argv: cmd.Argv, Step: cmd.Step})
		list := append([]string{c.escalation[0], "-n", "-l", "--"}, command...)
		c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(list)+"   # does sudo allow it?")
		var lerr *ExitError
		if lerr2 := c.run(ctx, list, Cmd{}); errors.As(lerr2, &lerr) && !strings.Contains(lerr.Stderr, "password") {
			return notAllowed
		}
	}
	return fmt.Errorf("sudo asks %s for a password (pass --ask-sudo-password, or give %s a NOPASSWD sudo rule): %w", user, user, err)
}
