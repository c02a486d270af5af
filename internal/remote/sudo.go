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
		case errors.As(err, &ee) && sudoSays(ee.Stderr, c.ep.User, "is not allowed to execute", "is not in the sudoers file"):
			hint := helperHint
			if c.helper.Load() {
				hint = ""
			}
			c.sudo.err = fmt.Errorf("sudo with the password given: %s may not run %s as root (check the host's sudo rules%s): %w", c.ep.User, noop[0], hint, err)
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
// for a password nobody gave, or its rules do not allow the command
// (notAllowed). Only a command that exited 1 with nothing but sudo's own
// lines on its standard error counts: the command itself may say the same
// words. Asked without a password, sudo says the first for both; `sudo -n
// -l COMMAND` then tells them apart. viaHelper says a step went through
// deployctl-remote.
func (c *Conn) sudoRefused(ctx context.Context, cmd Cmd, viaHelper bool, err error) (_ error, notAllowed bool) {
	var ee *ExitError
	user := c.ep.User
	if !errors.As(err, &ee) || ee.Status != 1 || !sudoAlone(ee.Stderr, user) {
		return err, false
	}
	hint := ""
	if cmd.Step != nil && !viaHelper {
		hint = helperHint
	}
	refused := fmt.Errorf("%s may not run this as root through sudo (check the host's sudo rules%s): %w", user, hint, err)
	switch {
	case sudoSays(ee.Stderr, user, "is not in the sudoers file", "is not allowed to execute"):
		return refused, true
	case !sudoSays(ee.Stderr, user, "a terminal is required to read the password", "a password is required"):
		return err, false
	}
	if c.password == "" && len(c.escalation) > 0 && path.Base(c.escalation[0]) == "sudo" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		command := c.argvVia(Cmd{Argv: cmd.Argv, Step: cmd.Step}, viaHelper)
		list := append([]string{c.escalation[0], "-n", "-l", "--"}, command...)
		c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(list)+"   # does sudo allow it?")
		var lerr *ExitError
		if errors.As(c.run(ctx, list, Cmd{}), &lerr) && !sudoSays(lerr.Stderr, user, "password") {
			return refused, true
		}
	}
	return fmt.Errorf("sudo asks %s for a password (pass --ask-sudo-password, or give %s a NOPASSWD sudo rule): %w", user, user, err), false
}

// helperHint points a step refused as a script at deployctl-remote.
const helperHint = "; a rule for " + HelperPath + " alone needs deployctl-remote installed there: see deployctl remote-helper"

// sudoLine reports whether line is one sudo prints when it refuses user:
// "sudo: …", "Sorry, user …", "USER is not in the sudoers file…".
func sudoLine(line, user string) bool {
	return strings.HasPrefix(line, "sudo: ") || strings.HasPrefix(line, "Sorry, ") || strings.HasPrefix(line, user+" is not in the sudoers file")
}

// sudoAlone reports whether every line of stderr is one of sudo's.
func sudoAlone(stderr, user string) bool {
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if line = strings.TrimSpace(line); line != "" && !sudoLine(line, user) {
			return false
		}
	}
	return true
}

// sudoSays reports whether one of sudo's own lines in stderr holds one of
// phrases.
func sudoSays(stderr, user string, phrases ...string) bool {
	for _, line := range strings.Split(stderr, "\n") {
		if !sudoLine(strings.TrimSpace(line), user) {
			continue
		}
		for _, p := range phrases {
			if strings.Contains(line, p) {
				return true
			}
		}
	}
	return false
}
