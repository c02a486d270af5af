package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/cli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"deployctl": func() {
			os.Exit(cli.Main(context.Background(), cli.Invocation{
				Args: os.Args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Environ(),
			}))
		},
	})
}

// TestScripts runs the acceptance scripts in testdata/script: deployctl as
// a user types it, checked on its output and exit status.
//
// Beyond testscript's own commands:
//
//	exits N PROG ARGS…   runs PROG and wants exit status N
//	fixture FILE DIR     writes DIR/flake.nix: fixture hosts, FILE's JSON
//	events               the last stdout is a valid --json event stream
//
// and the condition [nix]: Nix is installed (in CI, its absence fails the
// script rather than skipping it).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			home := filepath.Join(env.WorkDir, ".home")
			env.Setenv("HOME", home)
			env.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
			// Never wait on an unreachable binary cache.
			env.Setenv("NIX_CONFIG", "substituters =")
			return os.MkdirAll(home, 0o755)
		},
		Condition: func(cond string) (bool, error) {
			if cond != "nix" {
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			if _, err := exec.LookPath("nix"); err != nil {
				if os.Getenv("CI") == "true" {
					return false, errors.New("CI must run the scripts that need nix, but it is not installed (scripts/setup.sh installs it)")
				}
				return false, nil
			}
			return true, nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":   cmdExits,
			"fixture": cmdFixture,
			"events":  cmdEvents,
		},
	})
}

// cmdExits runs a program and checks its exit status.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N PROG ARGS…")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// cmdFixture writes a fixture flake for the hosts in a JSON file (a list
// of fixture.Host).
func cmdFixture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: fixture HOSTS.json DIR")
	}
	var hosts []fixture.Host
	ts.Check(json.Unmarshal([]byte(ts.ReadFile(args[0])), &hosts))
	ts.Check(fixture.Write(ts.MkAbs(args[1]), hosts))
}

// cmdEvents checks the last command's stdout against docs/events.md:
// every line an event of version 1 with only the fields its type has,
// the summary last and only there.
func cmdEvents(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: events")
	}
	if err := validEvents(ts.ReadFile("stdout")); err != nil {
		ts.Fatalf("not a valid event stream: %v", err)
	}
}

func validEvents(stream string) error {
	fields := map[string][]string{
		"step":     {"host", "step", "state", "toplevel", "durationMs", "error"},
		"progress": {"host", "step", "state", "paths", "pathsTotal", "bytes"},
		"summary":  {"command", "hosts", "error"},
	}
	states := map[string][]string{
		"step":     {"started", "done", "failed", "skipped"},
		"progress": {"sending", "sent"},
	}
	hostFields := []string{"host", "ok", "skipped", "step", "error", "toplevel", "durationMs"}
	sc := bufio.NewScanner(strings.NewReader(stream))
	sc.Buffer(nil, 1<<20)
	n, summaries := 0, 0
	for sc.Scan() {
		n++
		if summaries > 0 {
			return fmt.Errorf("line %d follows the summary", n)
		}
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("line %d: %v", n, err)
		}
		if ev["v"] != float64(1) {
			return fmt.Errorf("line %d: v is %v, want 1", n, ev["v"])
		}
		if s, _ := ev["time"].(string); s == "" {
			return fmt.Errorf("line %d: no time", n)
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fmt.Errorf("line %d: time: %v", n, err)
		}
		typ, _ := ev["type"].(string)
		allowed, ok := fields[typ]
		if !ok {
			return fmt.Errorf("line %d: type %q", n, typ)
		}
		for k := range ev {
			if k != "v" && k != "time" && k != "type" && !slices.Contains(allowed, k) {
				return fmt.Errorf("line %d: a %s event has no field %q", n, typ, k)
			}
		}
		if want := states[typ]; want != nil && !slices.Contains(want, fmt.Sprint(ev["state"])) {
			return fmt.Errorf("line %d: a %s event's state is %v", n, typ, ev["state"])
		}
		switch typ {
		case "step", "progress":
			if h, _ := ev["host"].(string); h == "" {
				return fmt.Errorf("line %d: a %s event without a host", n, typ)
			}
			if s, _ := ev["step"].(string); s == "" && ev["state"] != "skipped" {
				return fmt.Errorf("line %d: a %s event without a step", n, typ)
			}
			if ev["state"] == "failed" && ev["error"] == nil {
				return fmt.Errorf("line %d: a failed step without its error", n)
			}
		case "summary":
			summaries++
			if c, _ := ev["command"].(string); c == "" {
				return fmt.Errorf("line %d: a summary without its command", n)
			}
			hosts, ok := ev["hosts"].([]any)
			if !ok && ev["error"] == nil {
				return fmt.Errorf("line %d: a summary with neither hosts nor an error", n)
			}
			for _, h := range hosts {
				obj, _ := h.(map[string]any)
				if obj["host"] == nil || obj["ok"] == nil {
					return fmt.Errorf("line %d: a summary host without host or ok: %v", n, h)
				}
				for k := range obj {
					if !slices.Contains(hostFields, k) {
						return fmt.Errorf("line %d: a summary host has no field %q", n, k)
					}
				}
			}
		}
	}
	if n == 0 || summaries == 0 {
		return errors.New("no summary at the end")
	}
	return sc.Err()
}

// TestValidEventsRejects: the events command's check fails on streams
// that break docs/events.md.
func TestValidEventsRejects(t *testing.T) {
	const step = `{"v":1,"time":"2026-11-24T01:00:00Z","type":"step","host":"a","step":"push","state":"started"}`
	const summary = `{"v":1,"time":"2026-11-24T01:00:00Z","type":"summary","command":"deploy","hosts":[{"host":"a","ok":true,"durationMs":1}]}`
	if err := validEvents(step + "\n" + summary + "\n"); err != nil {
		t.Fatalf("a valid stream is refused: %v", err)
	}
	for name, stream := range map[string]string{
		"no summary":         step,
		"summary not last":   summary + "\n" + step,
		"version 2":          strings.Replace(step, `"v":1`, `"v":2`, 1) + "\n" + summary,
		"unknown field":      strings.Replace(step, `"state"`, `"bytes":1,"state"`, 1) + "\n" + summary,
		"unknown state":      strings.Replace(step, "started", "begun", 1) + "\n" + summary,
		"failed, no error":   strings.Replace(step, "started", "failed", 1) + "\n" + summary,
		"no host":            strings.Replace(step, `"host":"a",`, "", 1) + "\n" + summary,
		"bad time":           strings.Replace(step, "2026-11-24T01:00:00Z", "yesterday", 1) + "\n" + summary,
		"summary host field": strings.Replace(summary, `"ok":true`, `"ok":true,"colour":"red"`, 1),
		"not JSON":           "web-1: deployed\n" + summary,
	} {
		if validEvents(stream) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
