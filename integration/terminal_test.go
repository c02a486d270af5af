package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
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

// onTerminal runs deployctl with its stderr on a pseudo-terminal and
// returns its exit code and what the terminal received.
func (e *testEnv) onTerminal(args ...string) (int, string) {
	e.t.Helper()
	return e.onTerminalWith(nil, args...)
}

// onTerminalWith is onTerminal with extra environment variables.
func (e *testEnv) onTerminalWith(env []string, args ...string) (int, string) {
	e.t.Helper()
	pty, tty := openPTY(e.t)
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
	full := append([]string{"--flake", e.flake, "--ssh-config", e.fleet.SSHConfig}, args...)
	code := cli.Main(ctx, cli.Invocation{Args: full, Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: tty, Env: e.env(append([]string{"TERM=xterm"}, env...)...)})
	tty.Close()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
	}
	e.t.Logf("deployctl %s → exit %d; the terminal got:\n%q", strings.Join(args, " "), code, screen.String())
	return code, screen.String()
}

// TestBarsOnTerminal: on a terminal, a build and a push each draw an
// overall bar below the per-host lines, and erase it at the end.
func TestBarsOnTerminal(t *testing.T) {
	nonce := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	e := startFleet(t, fixture.Host{Name: "alpha", Revision: nonce})
	code, out := e.onTerminal("build", "alpha")
	if code != 0 {
		t.Fatalf("build: exit %d", code)
	}
	if !strings.Contains(out, "building 100%") || !strings.Contains(out, "(1/1") {
		t.Errorf("no build bar drawn on the terminal")
	}
	if !strings.Contains(out, "[alpha] building (1 derivation)") || !strings.Contains(out, "[alpha] built ") {
		t.Errorf("the per-host build lines are missing on the terminal")
	}
	// The bar is erased before the summary: the last thing before it is
	// an erase, not a bar.
	if i := strings.Index(out, "build: 1 of 1 hosts ok"); i < 0 || !strings.HasSuffix(strings.TrimRight(out[:i], "\r\n"), "\x1b[K") {
		t.Errorf("the build bar is not erased before the summary")
	}
	code, out = e.onTerminal("push", "alpha")
	if code != 0 {
		t.Fatalf("push: exit %d", code)
	}
	if !strings.Contains(out, "pushing 100%") || !strings.Contains(out, "[alpha] sending 2 of 2 paths") || !strings.Contains(out, "[alpha] pushed 2 of 2 paths") {
		t.Errorf("no push bar, or no per-host push lines, on the terminal")
	}
}

// TestColor: on a terminal the summary's results are coloured, unless
// NO_COLOR is set, TERM is dumb or --color=never; --color=always colours
// them anywhere; a bad --color is a usage error.
func TestColor(t *testing.T) {
	e := startFleet(t, fixture.Host{Name: "alpha"})
	green := "\x1b[32mok\x1b[0m"
	if code, out := e.onTerminal("build", "alpha"); code != 0 || !strings.Contains(out, green) {
		t.Errorf("on a terminal (exit %d) the summary's ok is not green", code)
	}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{[]string{"NO_COLOR=1"}, nil},
		{[]string{"TERM=dumb"}, nil},
		{nil, []string{"--color=never"}},
	} {
		code, out := e.onTerminalWith(c.env, append(c.args, "build", "alpha")...)
		if code != 0 || strings.Contains(out, "\x1b[3") {
			t.Errorf("with %v %v (exit %d) the terminal got colour", c.env, c.args, code)
		}
	}
	r := e.deployctl("--color=always", "build", "alpha")
	r.wantCode(t, 0)
	if !strings.Contains(r.stderr, green) {
		t.Errorf("--color=always did not colour the summary:\n%q", r.stderr)
	}
	if r := e.deployctl("build", "alpha"); strings.Contains(r.stderr, "\x1b[") {
		t.Errorf("not on a terminal, the output has escape sequences:\n%q", r.stderr)
	}
	if r := e.deployctl("--color=sometimes", "build", "alpha"); r.code != 2 || !strings.Contains(r.stderr, "--color must be auto, always or never") {
		t.Errorf("a bad --color: exit %d, %q", r.code, r.stderr)
	}
}

// TestLiveLinesOnTerminal: on a terminal, each host at work has a line
// below the output, redrawn in place, naming its step, its time, and for
// a push the bytes sent of those to send; the lines go before the
// summary. Off a terminal there are none.
func TestLiveLinesOnTerminal(t *testing.T) {
	nonce := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	e := startFleet(t,
		fixture.Host{Name: "alpha", Revision: nonce, SwitchSeconds: 2, PayloadKiB: 40000},
		fixture.Host{Name: "beta", Revision: nonce, SwitchSeconds: 2, PayloadKiB: 40000},
	)
	code, out := e.onTerminal("deploy", "alpha", "beta")
	if code != 0 {
		t.Fatalf("deploy: exit %d", code)
	}
	for _, re := range []string{
		`  (alpha|beta)  build  +\d+s`,
		`  (alpha|beta) +push  \d+s  [1-9][0-9.]* [KM]iB of 39\.1 MiB`,
		`  (alpha|beta) +activate  [12]s\r?\n  (alpha|beta) +activate  [12]s`,
		// Two lines on the screen: up one, then clear to the end.
		`\x1b\[1A\r\x1b\[J`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("nothing on the terminal matches %q", re)
		}
	}
	// The board is off the screen before the summary: what comes last
	// before it is an erase, not a host's line.
	i := strings.Index(out, "deploy: 2 of 2 hosts ok")
	if i < 0 || !regexp.MustCompile(`(\x1b\[K|\x1b\[J)[\r\n]*$`).MatchString(out[:i]) {
		t.Errorf("the live lines are not erased before the summary")
	}
	r := e.deployctl("activate", "alpha")
	r.wantCode(t, 0)
	if strings.Contains(r.stderr, "  alpha  activate") || strings.Contains(r.stderr, "\x1b[") {
		t.Errorf("off a terminal, live lines or escape sequences:\n%q", r.stderr)
	}
}
