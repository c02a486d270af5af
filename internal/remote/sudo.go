package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"
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
// password: it runs a command that echoes a line through sudo -S with the
// password and a token on its input. The token back means sudo read the
// password; the password back means it did not need it (NOPASSWD), and
// nothing is fed.
func (c *Conn) prepareSudo(ctx context.Context) error {
	c.sudoOnce.Do(func() {
		if len(c.escalation) == 0 || path.Base(c.escalation[0]) != "sudo" {
			c.sudo.err = fmt.Errorf("a sudo password was given, but the privilege escalation command is %q: only sudo can take one", strings.Join(c.escalation, " "))
			return
		}
		var b [8]byte
		_, _ = rand.Read(b[:])
		token := "deployctl-" + hex.EncodeToString(b[:])
		var out bytes.Buffer
		argv := append(c.withSudoFlags(), "sh", "-c", `IFS= read -r x; printf '%s' "$x"`)
		c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(argv)+" (input: the password, then a token the command prints if sudo read the password)")
		err := c.run(ctx, argv, Cmd{Stdin: strings.NewReader(c.password + "\n" + token + "\n"), Stdout: &out})
		switch {
		case err == nil && out.String() == token:
			c.sudo.feed.Store(true)
		case err == nil:
			// sudo let the command run without reading the password.
		default:
			var ee *ExitError
			if errors.As(err, &ee) && strings.Contains(ee.Stderr, "incorrect password") || strings.Contains(err.Error(), "Sorry, try again") {
				err = ErrSudoPassword
			}
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

// sudoWantsPassword explains a root command that failed because sudo
// asked for a password nobody gave.
func sudoWantsPassword(user string, err error) error {
	var ee *ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if strings.Contains(ee.Stderr, "a terminal is required to read the password") || strings.Contains(ee.Stderr, "a password is required") {
		return fmt.Errorf("sudo asks %s for a password (pass --ask-sudo-password, or give %s a NOPASSWD sudo rule): %w", user, user, err)
	}
	if strings.Contains(ee.Stderr, "is not in the sudoers file") || strings.Contains(ee.Stderr, "is not allowed to execute") {
		return fmt.Errorf("%s may not run this as root through sudo (check the host's sudo rules): %w", user, err)
	}
	return err
}
