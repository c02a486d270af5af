// Package hooks runs a host's deployment.hooks: commands around each
// phase, on the deploying machine or on the host.
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strings"

	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/shell"
)

// Points are where hooks run, in order.
var Points = []string{"preBuild", "postBuild", "prePush", "postPush", "preActivate", "postActivate", "postRollback"}

// Hook is one command.
type Hook struct {
	Command []string `json:"command"`
	// On is "local" (the deploying machine) or "target" (the host, over
	// its SSH session, as root).
	On string `json:"on"`
}

// Hooks are a host's hooks by point.
type Hooks map[string][]Hook

// Parse reads deployment.hooks (nil or null: none); on defaults to local.
func Parse(raw json.RawMessage) (Hooks, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var hs Hooks
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hs); err != nil {
		return nil, fmt.Errorf("deployment.hooks: %w", err)
	}
	var errs []error
	for point, list := range hs {
		if !slices.Contains(Points, point) {
			errs = append(errs, fmt.Errorf("deployment.hooks.%s: not a hook point (%s)", point, strings.Join(Points, ", ")))
		}
		for i := range list {
			where := fmt.Sprintf("deployment.hooks.%s[%d]", point, i)
			if list[i].On == "" {
				list[i].On = "local"
			}
			if list[i].On != "local" && list[i].On != "target" {
				errs = append(errs, fmt.Errorf("%s: on %q: want local or target", where, list[i].On))
			}
			if len(list[i].Command) == 0 {
				errs = append(errs, fmt.Errorf("%s: command is empty", where))
			}
		}
	}
	return hs, errors.Join(errs...)
}

// Env is what a hook is told, as DEPLOYCTL_* variables.
type Env struct {
	Host, TargetHost, Toplevel, Previous, Action string
}

func (e Env) vars(point string) []string {
	return []string{
		"DEPLOYCTL_HOST=" + e.Host, "DEPLOYCTL_TARGET_HOST=" + e.TargetHost, "DEPLOYCTL_TOPLEVEL=" + e.Toplevel,
		"DEPLOYCTL_PREVIOUS=" + e.Previous, "DEPLOYCTL_ACTION=" + e.Action, "DEPLOYCTL_PHASE=" + point,
	}
}

// Target runs commands on the host; *remote.Conn is one.
type Target interface {
	Run(ctx context.Context, cmd remote.Cmd) error
}

// Runner runs hooks: local ones here with env (this process's
// environment), target ones through Target.
type Runner struct {
	Env    []string
	Target Target
	// Output receives the hooks' output as it comes (nil: kept only for
	// errors).
	Output io.Writer
	Log    *slog.Logger
}

// Run runs the point's hooks in order and stops at the first that fails,
// whose error carries its output's end.
func (r Runner) Run(ctx context.Context, hs Hooks, point string, env Env) error {
	for i, h := range hs[point] {
		if err := r.run(ctx, h, point, env); err != nil {
			return fmt.Errorf("%s hook %d (%s, %s): %w", point, i+1, h.On, shell.Join(h.Command), err)
		}
	}
	return nil
}

// Argv is the hook's command with its variables, as env(1) runs it (on
// the target as root, for a target hook). The variables go on the command
// line: they are names and store paths, never secrets.
func (h Hook) Argv(point string, env Env) []string {
	return append(append([]string{"env"}, env.vars(point)...), h.Command...)
}

func (r Runner) run(ctx context.Context, h Hook, point string, env Env) error {
	tail := remote.NewTail(2000)
	var out io.Writer = tail
	if r.Output != nil {
		out = io.MultiWriter(r.Output, tail)
	}
	if h.On == "target" {
		if r.Target == nil {
			return errors.New("no host to run it on")
		}
		err := r.Target.Run(ctx, remote.Cmd{Argv: h.Argv(point, env), Root: true, Stdout: out, Stderr: out})
		var ee *remote.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("exit status %d: %s", ee.Status, strings.TrimSpace(tail.String()))
		}
		return err
	}
	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	cmd.Env = append(append([]string{}, r.Env...), env.vars(point)...)
	cmd.Stdout, cmd.Stderr = out, out
	if r.Log != nil {
		r.Log.Debug("exec", "host", "local", "cmd", shell.Join(h.Command))
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(tail.String()))
	}
	return nil
}
