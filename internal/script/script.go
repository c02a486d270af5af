// Package script writes what a deploy runs as a POSIX shell script that a
// person can read, and run by hand.
package script

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/deployctl/deployctl/internal/shell"
)

// Previous stands, in a command given to the script, for the system the
// host ran before the deploy, which the script reads from the host.
const Previous = "\x00previous\x00"

// Host is what a deploy runs for one host, in the order it runs it. The
// commands are shell lines; the remote ones carry their ssh.
type Host struct {
	Name, Toplevel, Action string
	// Build builds the system elsewhere (on a builder, or on the host):
	// empty when Script.Build builds it here.
	Build []Step
	// Push copies it to the host; nil when it is there already (built on
	// the host).
	Push *Step
	// PreKeys go up before the switch; AfterSwitch runs after it and its
	// checks (the post-activation keys, owners the new system made).
	PreKeys, AfterSwitch []Step
	// Hooks are the host's hooks by point (preBuild, prePush, …).
	Hooks map[string][]Step
	// ReadPrevious prints the system the host runs now. With the action
	// dry-activate only Realise and Switch run.
	ReadPrevious string
	// Record, Realise and Switch run on the host, in that order; Rollback
	// goes back to what Record recorded.
	Record, Realise, Switch, Rollback string
	// Checks are the health checks, each tried until it passes or
	// ProbeTimeout has passed; a failing one rolls the host back.
	Checks       []Check
	ProbeTimeout time.Duration
}

// Step is one command and what it does.
type Step struct {
	What string
	Line string
}

// Check is a health check as a command.
type Check struct {
	What   string
	Line   string
	Period time.Duration
}

// Script is the plan of one run.
type Script struct {
	// Command is the deployctl command the script stands for.
	Command string
	// Notes say what deployctl does that the script does not.
	Notes []string
	// Build builds the systems built here, in one nix build; "" when none.
	Build string
	Hosts []Host
}

// Write writes the script.
func Write(w io.Writer, s Script) error {
	p := &printer{w: w}
	p.line("#!/bin/sh")
	p.comment("What `%s` runs, as commands a person can read and run by hand.", s.Command)
	if len(s.Notes) > 0 {
		p.comment("")
		p.comment("deployctl does more than these commands, which this script leaves out:")
		for _, n := range s.Notes {
			p.comment("  - %s", n)
		}
	}
	p.comment("The script stops at the first command that fails.")
	p.line("set -eu")
	p.line("")
	p.comment("retry SECONDS PERIOD COMMAND...: run COMMAND every PERIOD seconds until it")
	p.comment("succeeds; fail when SECONDS have passed.")
	p.line(`retry() {
  end=$(($(date +%s) + $1)); period=$2; shift 2
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep "$period"
  done
}`)
	p.line("")
	p.comment("All of it in one function, read whole before it runs: the ssh commands")
	p.comment("cannot eat the rest of a script piped into sh.")
	p.line("main() {")
	p.line(`trap 'rm -f "${key_file:-}"' EXIT # a key's secret, should its upload fail`)
	for _, h := range s.Hosts {
		p.hooks(h, "preBuild")
	}
	if s.Build != "" {
		p.line("")
		p.comment("Build, here, every system built here, in one nix build.")
		p.line(s.Build)
	}
	for _, h := range s.Hosts {
		p.host(h)
	}
	p.line("}")
	p.line("")
	p.line(`main "$@"`)
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(s string) {
	if p.err == nil {
		_, p.err = io.WriteString(p.w, s+"\n")
	}
}

func (p *printer) comment(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	if text == "" {
		p.line("#")
		return
	}
	p.line("# " + text)
}

func (p *printer) step(s Step) {
	if s.What != "" {
		p.comment("%s", s.What)
	}
	p.line(previous(s.Line))
}

// hooks prints h's hooks at point.
func (p *printer) hooks(h Host, point string) {
	for i, s := range h.Hooks[point] {
		if i == 0 {
			p.line("")
		}
		p.comment("%s: %s hook %d of %d", h.Name, point, i+1, len(h.Hooks[point]))
		p.line(previous(s.Line))
	}
}

func (p *printer) host(h Host) {
	p.line("")
	p.line("")
	p.comment("==== %s: %s, %s", h.Name, h.Toplevel, h.Action)
	for _, s := range h.Build {
		p.step(s)
	}
	p.hooks(h, "postBuild")
	p.hooks(h, "prePush")
	if h.Push != nil {
		p.line("")
		p.step(*h.Push)
	}
	p.hooks(h, "postPush")
	p.line("")
	if h.Action == "dry-activate" {
		p.comment("What the switch would do, changing nothing.")
		p.line(h.Realise)
		p.line(h.Switch)
		p.line(say(h.Name + ": dry activation done"))
		return
	}
	p.comment("The system that runs now, for the hooks and a rollback.")
	p.line("previous=$(" + h.ReadPrevious + ")")
	p.line("")
	rollback := "rollback_" + shellName(h.Name)
	p.comment("Going back: to the system and profile recorded below, then the postRollback hooks.")
	p.line(rollback + "() {")
	p.line("  " + h.Rollback)
	for _, s := range h.Hooks["postRollback"] {
		p.line("  " + previous(s.Line))
	}
	p.line("}")
	p.line("")
	p.comment("Activate: record what runs, make the system valid in the host's store,")
	p.comment("then the preActivate hooks and the keys, then switch (exit status 100:")
	p.comment("done, a reboot is required; any other but 0 rolls back).")
	p.line(h.Record)
	p.line(h.Realise)
	p.hooks(h, "preActivate")
	for _, s := range h.PreKeys {
		p.line("")
		p.step(s)
	}
	p.line("status=0")
	p.line(h.Switch + " || status=$?")
	p.line(`case $status in`)
	p.line(`  0) ;;`)
	p.line("  100) " + say(h.Name+": switched; it wants a reboot") + " ;;")
	p.line("  *) " + say(h.Name+": the switch failed: rolling back"))
	p.line("     " + rollback)
	p.line("     exit 1 ;;")
	p.line("esac")
	if len(h.Checks) > 0 || len(h.Hooks["postActivate"]) > 0 {
		p.line("")
		secs := int(h.ProbeTimeout.Round(time.Second).Seconds())
		p.comment("Health checks, each tried until it passes or %d s have passed (deployctl runs", secs)
		p.comment("them at once), then the postActivate hooks; any failing rolls the host back.")
		for _, c := range h.Checks {
			p.comment("  - %s", c.What)
		}
		var conds []string
		for _, c := range h.Checks {
			conds = append(conds, fmt.Sprintf("retry %d %g %s", secs, c.Period.Seconds(), c.Line))
		}
		for _, s := range h.Hooks["postActivate"] {
			conds = append(conds, previous(s.Line))
		}
		p.line("if ! { " + strings.Join(conds, " &&\n    ") + "; }; then")
		p.line("  " + say(h.Name+": a health check failed: rolling back"))
		p.line("  " + rollback)
		p.line("  exit 1")
		p.line("fi")
	}
	for _, s := range h.AfterSwitch {
		p.line("")
		p.step(s)
	}
	p.line(say(h.Name + ": deployed"))
}

// say is a line that tells the person running the script text.
func say(text string) string { return "echo " + shell.Quote(text) + " >&2" }

// previous makes Previous in a line the variable the script sets. Quoted
// lines (the only kind that can hold it) have it inside single quotes:
// they close around the variable.
func previous(line string) string {
	return strings.ReplaceAll(line, Previous, `'"$previous"'`)
}

// shellName is name as part of a shell function's name.
func shellName(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
