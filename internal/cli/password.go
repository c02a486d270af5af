package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"
)

// readSudoPassword gets the sudo password for --ask-sudo-password: asked
// once on the terminal (not echoed), or the first line of standard input
// when that is not a terminal (a CI secret piped in).
func (g *globals) readSudoPassword() (string, error) {
	if f, ok := g.inv.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(g.inv.Stderr, "sudo password for the hosts: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(g.inv.Stderr)
		if err != nil {
			return "", fmt.Errorf("read the sudo password: %w", err)
		}
		return string(pw), nil
	}
	if g.inv.Stdin == nil {
		return "", usageErrorf("--ask-sudo-password: no terminal and no standard input to read the password from")
	}
	line, err := bufio.NewReader(g.inv.Stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err == nil {
			err = errors.New("it is empty")
		}
		return "", usageErrorf("--ask-sudo-password: no password on standard input: %v", err)
	}
	return line, nil
}
