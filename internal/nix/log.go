package nix

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"

	"github.com/deployctl/deployctl/internal/shell"
)

// BuildLog collects what `--log-format internal-json` says about each
// derivation a build touched: its log lines and Nix's error messages.
type BuildLog struct {
	mu       sync.Mutex
	activity map[int64]string // activity id → derivation being built
	lines    map[string][]string
	started  map[string]bool
	errors   []string // error messages, colours removed
	builds   int64    // the id of the activity counting builds
	progress [4]int   // its last counts
	// OnLine, when set, receives each build log line as it comes.
	OnLine func(drv, line string)
	// OnProgress, when set, receives Nix's count of derivations built,
	// expected, running and failed, each time it changes.
	OnProgress func(done, expected, running, failed int)
}

// maxLines is how many log lines are kept per derivation.
const maxLines = 25

// NewBuildLog returns an empty BuildLog.
func NewBuildLog() *BuildLog {
	return &BuildLog{activity: map[int64]string{}, lines: map[string][]string{}, started: map[string]bool{}}
}

// Activity types and result types of Nix's internal-json log format.
const (
	actBuilds      = 104
	actBuild       = 105
	resBuildLogLne = 101
	resProgress    = 105
)

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// Add reads one line of stderr.
func (b *BuildLog) Add(line string) {
	rest, ok := strings.CutPrefix(line, "@nix ")
	if !ok {
		return
	}
	var ev struct {
		Action string            `json:"action"`
		ID     int64             `json:"id"`
		Type   int               `json:"type"`
		Level  int               `json:"level"`
		Msg    string            `json:"msg"`
		Fields []json.RawMessage `json:"fields"`
	}
	if json.Unmarshal([]byte(rest), &ev) != nil {
		return
	}
	b.mu.Lock()
	var drv, logLine string
	var progress []int
	switch {
	case ev.Action == "start" && ev.Type == actBuilds:
		b.builds = ev.ID
	case ev.Action == "result" && ev.Type == resProgress && ev.ID == b.builds && b.builds != 0 && len(ev.Fields) == 4:
		var p [4]int
		for i, f := range ev.Fields {
			_ = json.Unmarshal(f, &p[i])
		}
		if p != b.progress {
			b.progress = p
			progress = p[:]
		}
	case ev.Action == "start" && ev.Type == actBuild && len(ev.Fields) > 0:
		_ = json.Unmarshal(ev.Fields[0], &drv)
		b.activity[ev.ID] = drv
		b.started[drv] = true
		drv = ""
	case ev.Action == "result" && ev.Type == resBuildLogLne && len(ev.Fields) > 0:
		_ = json.Unmarshal(ev.Fields[0], &logLine)
		drv = b.activity[ev.ID]
		if drv != "" {
			l := append(b.lines[drv], logLine)
			if len(l) > maxLines {
				l = l[len(l)-maxLines:]
			}
			b.lines[drv] = l
		}
	case ev.Action == "msg" && ev.Level == 0:
		b.errors = append(b.errors, strings.TrimSpace(ansi.ReplaceAllString(ev.Msg, "")))
	}
	onLine, onProgress := b.OnLine, b.OnProgress
	b.mu.Unlock()
	if onLine != nil && drv != "" {
		onLine(drv, logLine)
	}
	if onProgress != nil && progress != nil {
		onProgress(progress[0], progress[1], progress[2], progress[3])
	}
}

// Started reports whether Nix began building drv.
func (b *BuildLog) Started(drv string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started[drv]
}

// Lines returns the last log lines of drv's build.
func (b *BuildLog) Lines(drv string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string{}, b.lines[drv]...)
}

// BuilderErrors returns Nix's messages that drv's own builder failed
// ("builder for 'drv' failed …"), leaving out those that only mention it:
// "N dependencies of derivation 'drv' failed" and the closing
// "build of 'a', 'b' … failed" of newer releases.
func (b *BuildLog) BuilderErrors(drv string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.errors {
		if strings.Contains(e, "builder for '"+drv+"'") {
			out = append(out, e)
		}
	}
	return out
}

// FailedBuilders returns the derivations whose builder Nix said failed.
func (b *BuildLog) FailedBuilders() map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]bool{}
	for _, e := range b.errors {
		if _, rest, ok := strings.Cut(e, "builder for '"); ok {
			if drv, _, ok := strings.Cut(rest, "'"); ok {
				out[drv] = true
			}
		}
	}
	return out
}

// Errors returns every error message.
func (b *BuildLog) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string{}, b.errors...)
}

// NixLogged runs `nix ARGS…` with --log-format internal-json, feeding its
// standard error line by line to log, and returns its standard output.
func (c *CLI) NixLogged(ctx context.Context, log *BuildLog, args ...string) ([]byte, error) {
	full := append(append(append([]string{}, experimental...), "--log-format", "internal-json"), args...)
	argv := append([]string{"nix"}, full...)
	line := shell.Join(argv)
	c.log.Debug("exec", "host", "local", "cmd", line)
	cmd := c.command(ctx, "nix", full...)
	cmd.Env = c.env
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	var plain bytes.Buffer // stderr lines that are not structured
	done := make(chan struct{})
	go func() {
		defer close(done)
		// bufio.Reader, not Scanner: a line has no length limit.
		r := bufio.NewReader(pr)
		for {
			line, err := r.ReadString('\n')
			if line = strings.TrimRight(line, "\n"); line != "" {
				if strings.HasPrefix(line, "@nix ") {
					log.Add(line)
				} else {
					plain.WriteString(line + "\n")
				}
			}
			if err != nil {
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg := strings.Join(log.Errors(), "\n")
			if p := strings.TrimSpace(plain.String()); p != "" {
				msg = strings.TrimSpace(msg + "\n" + p)
			}
			return stdout.Bytes(), &Error{Cmd: line, ExitCode: ee.ExitCode(), Stderr: msg}
		}
		return nil, fmt.Errorf("nix: %w", err)
	}
	return stdout.Bytes(), nil
}
