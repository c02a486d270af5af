package remote

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/deployctl/deployctl/internal/shell"
)

// Step is one of the things deployctl runs as root on a host, by name: a
// subcommand of the host program deployctl-remote.
//
// Where the host has deployctl-remote installed at HelperPath, speaking
// HelperProtocol, and the login user is not root, a step runs as
// `HelperPath NAME ARGS…` behind the escalation command, which one sudo
// rule allows on its own. Elsewhere deployctl sends the step's script:
// `sh -c BODY deployctl-NAME ARGS…`. Either way the same script runs; no
// step takes code to run as an argument.
type Step struct {
	Name string
	// Body is the step's POSIX sh script; its arguments are $1….
	Body string
	// Direct, for a step that is one command, is that command: what
	// deployctl sends instead of Body, so that -v shows it plainly. Body
	// then checks the arguments and execs the same.
	Direct func(args []string) []string
}

// Cmd is the step run as root with args.
func (s *Step) Cmd(args ...string) Cmd { return Cmd{Step: s, Argv: args, Root: true} }

// Inline is the step as deployctl sends it: its script and arguments.
func (s *Step) Inline(args []string) []string {
	if s.Direct != nil {
		return s.Direct(args)
	}
	return append([]string{"sh", "-c", s.Body, "deployctl-" + s.Name}, args...)
}

// HelperPath is where a host keeps deployctl-remote (the NixOS module puts
// a copy there, a file of root's: a sudo rule names it).
const HelperPath = "/etc/deployctl/remote"

// helperPATH is deployctl-remote's PATH: NixOS's, then a Nix profile's,
// then the usual.
const helperPATH = "/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// HelperProtocol is the version of the steps' names and arguments: a
// host's deployctl-remote is used only when it says the same.
const HelperProtocol = 1

// Helper is the program deployctl-remote: every step, chosen by its first
// argument, and --protocol.
func Helper(steps []*Step) string {
	sorted := append([]*Step{}, steps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("# deployctl-remote: the steps deployctl runs as root on this host, by name,\n")
	b.WriteString("# so that one sudo rule can allow them (" + HelperPath + " ALL).\n")
	b.WriteString("# Generated from deployctl's source: do not edit.\n")
	// The steps' commands come from here, not from the caller's PATH (sudo
	// may keep it).
	b.WriteString("PATH=" + helperPATH + "\nexport PATH\n")
	fmt.Fprintf(&b, "case ${1-} in\n--protocol)\n  echo %d\n  ;;\n", HelperProtocol)
	for _, s := range sorted {
		fmt.Fprintf(&b, "%s)\n  shift\n%s\n  ;;\n", s.Name, strings.TrimRight(s.Body, "\n"))
	}
	names := make([]string, len(sorted))
	for i, s := range sorted {
		names[i] = s.Name
	}
	fmt.Fprintf(&b, "*)\n  echo \"deployctl-remote: no step ${1-} (protocol %d: --protocol, %s)\" >&2\n  exit 64\n  ;;\nesac\n", HelperProtocol, strings.Join(names, ", "))
	return b.String()
}

// UsesHelper says whether root steps run through the host's
// deployctl-remote (probeHelper asks the host).
func (c *Conn) UsesHelper(ctx context.Context) bool {
	c.probeHelper(ctx)
	return c.helper.Load()
}

// probeHelper finds out whether the host has a deployctl-remote of this
// protocol: asked for a login user who is not root and becomes root
// through the escalation command, the one who may have a sudo rule for it
// alone. An answer (a protocol, or a command that failed) holds for the
// connection; a probe that could not run (a lost connection) is tried
// again with the next step.
func (c *Conn) probeHelper(ctx context.Context) {
	if c.ep.User == "root" || len(c.escalation) == 0 {
		return
	}
	c.helperMu.Lock()
	defer c.helperMu.Unlock()
	if c.helperKnown {
		return
	}
	argv := []string{HelperPath, "--protocol"}
	c.log.Debug("exec", "host", c.name, "cmd", c.commandLine(argv)+"   # is deployctl-remote there?")
	var out strings.Builder
	err := c.run(ctx, argv, Cmd{Stdout: &out})
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		c.helperKnown = true // not there, or not runnable
	case err != nil:
		return
	default:
		c.helperKnown = true
		v, err := strconv.Atoi(strings.TrimSpace(out.String()))
		c.helper.Store(err == nil && v == HelperProtocol)
		if !c.helper.Load() {
			c.log.Debug("deployctl-remote speaks another protocol: deployctl sends its steps' scripts", "host", c.name,
				"theirs", strings.TrimSpace(out.String()), "ours", HelperProtocol, "cmd", shell.Join(argv))
		}
	}
}

// helperNow asks the host again whether it has deployctl-remote, for a
// step sudo refused when sent as a script: the switch may just have
// installed it and narrowed the sudo rules to it.
func (c *Conn) helperNow(ctx context.Context) bool {
	c.helperMu.Lock()
	c.helperKnown = false
	c.helperMu.Unlock()
	c.probeHelper(ctx)
	return c.helper.Load()
}

// StorePathFn is sh defining store_path, which ends the step (exit 64)
// unless its argument names a store path: /nix/store/NAME, nothing below.
const StorePathFn = `store_path() {
  case $1 in
    /nix/store/*/*|/nix/store/.*) ;;
    /nix/store/?*) return 0 ;;
  esac
  echo "not a store path: $1" >&2; exit 64
}
`

// GCRootDir holds the GC roots deployctl makes as root on a host.
const GCRootDir = "/nix/var/nix/gcroots/deployctl"

// GCRootFn is sh defining gc_root, which ends the step (exit 64) unless its
// argument is a link deployctl makes: a name in GCRootDir, or in its
// flake-inputs.new (push.Flake's inputs).
const GCRootFn = `gc_root() {
  for dir in ` + GCRootDir + `/flake-inputs.new ` + GCRootDir + `; do
    case ${1#"$dir"/} in
      "$1"|''|.|..|*/*) ;;
      *) return 0 ;;
    esac
  done
  echo "not a GC root of deployctl's: $1" >&2; exit 64
}
`
