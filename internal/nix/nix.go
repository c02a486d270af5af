// Package nix runs the local Nix CLI: version detection, the flags that differ
// between Nix releases and Lix, flake references and JSON output.
package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deployctl/deployctl/internal/shell"
)

// experimental is passed to every `nix` call: Nix 2.4 to current need it for
// flakes, and newer releases accept it for stable features without complaint.
var experimental = []string{"--extra-experimental-features", "nix-command flakes"}

// CLI runs the nix commands found on its environment's PATH, with that
// environment.
type CLI struct {
	env []string
	log *slog.Logger

	once    sync.Once
	version Version
	verErr  error
}

// New returns a CLI whose commands run with env (as os/exec's Cmd.Env) and
// log each command line they run to log at debug level.
func New(env []string, log *slog.Logger) *CLI {
	return &CLI{env: env, log: log}
}

// Version is a Nix implementation and its release.
type Version struct {
	Impl                string // "Nix" or "Lix"
	Major, Minor, Patch int
}

func (v Version) String() string {
	return fmt.Sprintf("%s %d.%d.%d", v.Impl, v.Major, v.Minor, v.Patch)
}

// AtLeast reports whether v is Nix-compatible release major.minor or newer.
// Lix releases (2.90 and up) count as newer than every Nix 2.x they forked from.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// ParseVersion reads the first line of `nix --version`, for example
// "nix (Nix) 2.8.0" or "nix (Lix, like Nix) 2.91.1".
func ParseVersion(s string) (Version, error) {
	line := strings.TrimSpace(strings.SplitN(s, "\n", 2)[0])
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return Version{}, fmt.Errorf("unrecognised nix --version output %q", line)
	}
	v := Version{Impl: "Nix"}
	if strings.Contains(line, "Lix") {
		v.Impl = "Lix"
	}
	num := fields[len(fields)-1]
	// Drop suffixes such as "pre20240101_abcdef" or "-rc1".
	if i := strings.IndexFunc(num, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		num = num[:i]
	}
	parts := strings.Split(num, ".")
	nums := []*int{&v.Major, &v.Minor, &v.Patch}
	for i := 0; i < len(parts) && i < len(nums); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return Version{}, fmt.Errorf("unrecognised nix version in %q", line)
		}
		*nums[i] = n
	}
	if v.Major == 0 {
		return Version{}, fmt.Errorf("unrecognised nix version in %q", line)
	}
	return v, nil
}

// Version runs `nix --version` once and caches the answer.
func (c *CLI) Version(ctx context.Context) (Version, error) {
	c.once.Do(func() {
		out, err := c.run(ctx, nil, "nix", "--version")
		if err != nil {
			c.verErr = err
			return
		}
		c.version, c.verErr = ParseVersion(string(out))
	})
	return c.version, c.verErr
}

// OutputOf names output out of the derivation drv as an installable for
// `nix build`: "drv^out" where Nix understands it (2.13 and Lix), the bare
// derivation path on older releases, which build all its outputs.
func (c *CLI) OutputOf(ctx context.Context, drv, out string) (string, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	if v.AtLeast(2, 13) {
		return drv + "^" + out, nil
	}
	return drv, nil
}

// Nix runs `nix ARGS…` with the experimental features deployctl needs and
// returns its standard output. Its standard error is part of the error.
func (c *CLI) Nix(ctx context.Context, args ...string) ([]byte, error) {
	return c.run(ctx, nil, "nix", append(append([]string{}, experimental...), args...)...)
}

// Run runs any local command (nix-store, nix copy with extra environment, …)
// with the CLI's environment plus extraEnv, logging it first.
func (c *CLI) Run(ctx context.Context, extraEnv []string, name string, args ...string) ([]byte, error) {
	return c.run(ctx, extraEnv, name, args...)
}

// NixArgs returns args prefixed with the flags every `nix` call needs, for
// callers that build their own command line (for example to show it).
func NixArgs(args ...string) []string {
	return append(append([]string{"nix"}, experimental...), args...)
}

func (c *CLI) run(ctx context.Context, extraEnv []string, name string, args ...string) ([]byte, error) {
	stdout, _, err := c.Output(ctx, extraEnv, name, args...)
	return stdout, err
}

// Output runs a command as Run does and also returns its standard error
// (which some commands, such as nix-store --dry-run, answer on).
func (c *CLI) Output(ctx context.Context, extraEnv []string, name string, args ...string) (stdout, stderr []byte, err error) {
	argv := append([]string{name}, args...)
	line := shell.Join(argv)
	for i := len(extraEnv) - 1; i >= 0; i-- {
		k, v, _ := strings.Cut(extraEnv[i], "=")
		line = k + "=" + shell.Quote(v) + " " + line
	}
	c.log.Debug("exec", "host", "local", "cmd", line)
	cmd := c.command(ctx, name, args...)
	cmd.Env = append(append([]string{}, c.env...), extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.Bytes(), errb.Bytes(), &Error{Cmd: line, ExitCode: ee.ExitCode(), Stderr: errb.String()}
		}
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return out.Bytes(), errb.Bytes(), nil
}

// command is exec.CommandContext with name looked up on the CLI's own
// PATH (os/exec would use this process's).
func (c *CLI) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	// Once ctx ends and the command is killed, its children (a git or
	// ssh fetching an input) may hold its output open: stop waiting soon.
	cmd.WaitDelay = 2 * time.Second
	if strings.Contains(name, "/") {
		return cmd
	}
	path := ""
	for _, kv := range c.env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "PATH" {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			cmd.Path, cmd.Err = p, nil
			return cmd
		}
	}
	return cmd
}

// Error is a Nix command that ran and failed.
type Error struct {
	Cmd      string
	ExitCode int
	Stderr   string
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("%s: exit status %d", e.Cmd, e.ExitCode)
	}
	return msg
}

// FlakeRef turns the user's --flake value into a reference Nix accepts. A
// plain directory becomes "path:/abs/dir" unless it is inside a git work
// tree, where Nix's own git handling (only tracked files) applies and the
// absolute directory is passed on. Anything else (a URL, "github:…", "path:…")
// is returned unchanged.
func FlakeRef(ref string) (string, error) {
	if ref == "" {
		ref = "."
	}
	if strings.Contains(ref, ":") && !strings.HasPrefix(ref, "/") && !strings.HasPrefix(ref, ".") {
		return ref, nil
	}
	dir, err := filepath.Abs(ref)
	if err != nil {
		return "", fmt.Errorf("flake %s: %w", ref, err)
	}
	st, err := os.Stat(filepath.Join(dir, "flake.nix"))
	if err != nil || st.IsDir() {
		return "", fmt.Errorf("flake %s: no flake.nix in %s", ref, dir)
	}
	if insideGitWorkTree(dir) {
		return dir, nil
	}
	return "path:" + dir, nil
}

func insideGitWorkTree(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, ".git")); err == nil {
			return true
		}
		if parent := filepath.Dir(d); parent == d {
			return false
		}
	}
}

// Quote returns s as a Nix string literal. (A JSON string is not one:
// Nix knows no \u escapes, and reads "${" as interpolation.)
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
