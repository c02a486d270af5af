package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/cli"
)

// openPTY opens a pseudo-terminal pair: what is written to tty is read
// from pty.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	fd := int(pty.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return pty, tty
}

// TestBuildBarOnTerminal: on a terminal, a build draws an overall bar
// below the per-host lines, and erases it at the end.
func TestBuildBarOnTerminal(t *testing.T) {
	nonce := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	e := startFleet(t, fixture.Host{Name: "alpha", Revision: nonce})
	pty, tty := openPTY(t)
	defer pty.Close()
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() {
		io.Copy(&screen, pty)
		close(read)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	args := []string{"--flake", e.flake, "--ssh-config", e.fleet.SSHConfig, "build", "alpha"}
	code := cli.Main(ctx, cli.Invocation{Args: args, Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: tty, Env: e.env("TERM=xterm")})
	tty.Close()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
	}
	out := screen.String()
	t.Logf("terminal:\n%q", out)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out, "\r\x1b[Kbuilding") || !strings.Contains(out, "(1/1") {
		t.Errorf("no build bar drawn on the terminal")
	}
	if !strings.Contains(out, "[alpha] building (1 derivation)") || !strings.Contains(out, "[alpha] built ") {
		t.Errorf("the per-host lines are missing on the terminal")
	}
}
