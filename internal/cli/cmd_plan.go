package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/hooks"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/keys"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/script"
	"github.com/deployctl/deployctl/internal/shell"
	"github.com/deployctl/deployctl/push"
)

type planOptions struct {
	selection
	action       string
	probeTimeout time.Duration
}

func newPlanCommand(g *globals) *cobra.Command {
	var opts planOptions
	cmd := &cobra.Command{
		Use:   "plan [SELECTORS…|--all]",
		Short: "Print what a deploy would run, as a shell script to read or run by hand",
		Long: `Evaluate the selected hosts and print, on standard output, the commands
'deployctl deploy' would run for them, as a POSIX shell script: the local
nix build, then per host the push, the key uploads (each secret replaced by
the command that produces it), the hooks, the activation (each remote
command with the ssh line that carries it) and the health checks, which
roll the host back when they fail.

Where deployctl does a thing natively (the streamed push), the script has
the equivalent nix copy command and says so. What deployctl adds around the
commands (the host's lock, the journal, the dead-man's switch, the switch in
a detached job, hosts in parallel) is listed in the script's header and left
out. Running the script deploys the hosts; it stops at the first failure.
Nothing is built and no host is contacted to print it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlan(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerBuildFlags(cmd, g)
	cmd.Flags().StringVar(&opts.action, "action", "switch", "switch-to-configuration `ACTION`: switch, boot, test or dry-activate")
	cmd.Flags().DurationVar(&opts.probeTimeout, "probe-timeout", 60*time.Second, "how long each host's health checks may take to pass")
	return cmd
}

// planDir is where a planned activation records the system it replaces.
const planDir = activate.Dir + "/plan"

func runPlan(ctx context.Context, g *globals, opts planOptions, args []string) error {
	if err := (&activateFlags{action: opts.action, probeTimeout: opts.probeTimeout}).check(); err != nil {
		return err
	}
	inv, hosts, err := g.loadDeployable(ctx, args, opts.selection)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.EvalError != "" {
			return fmt.Errorf("%s: eval: %s", h.Name, h.EvalError)
		}
	}
	at, err := g.placeAll(hosts, inv.Hosts)
	if err != nil {
		return err
	}
	specs, err := activationSpecs(hosts)
	if err != nil {
		return err
	}
	if err := g.loadHooks(hosts); err != nil {
		return err
	}
	d, err := g.dialer()
	if err != nil {
		return err
	}
	n := g.nix()
	s := script.Script{Command: "deployctl deploy --action " + opts.action + " " + shell.Join(names(hosts))}
	var installables []string
	confirm := false
	for _, h := range hosts {
		conn, err := d.Unconnected(targetOf(h))
		if err != nil {
			return usageErrorf("%s: %w", h.Name, err)
		}
		if conn.Unprivileged() {
			return usageErrorf("%s: %w", h.Name, noRoot("deploy", conn.Endpoint().User))
		}
		ph, err := g.planHost(d, conn, h, at[h.Name], specs[h.Name], opts, inv.FlakeRef)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if at[h.Name].local() {
			inst, err := n.OutputOf(ctx, h.DrvPath, "out")
			if err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
			installables = append(installables, inst)
		}
		confirm = confirm || specs[h.Name].confirmTimeout > 0
		s.Hosts = append(s.Hosts, ph)
	}
	if len(installables) > 0 {
		s.Build = shell.Join(nix.NixArgs(append([]string{"build", "--no-link", "--keep-going"}, installables...)...))
	}
	s.Notes = []string{
		"it pushes natively, over `nix-store --serve`: only the paths a host lacks, each read once for all hosts (the `nix copy` lines are the equivalent);",
		"it keeps each pushed system a GC root on its host until it is activated, and each system it builds here a GC root until the run ends;",
		"it holds each host's lock (" + activate.Dir + "/lock) through the activation, and journals it in " + activate.Journal + ";",
		"it runs the switch in a job detached from the SSH session (a transient systemd unit where systemd runs), so a lost connection cannot kill it;",
	}
	if confirm {
		s.Notes = append(s.Notes, "it arms each host's dead-man's switch (deployment.confirmTimeout): the host rolls itself back unless deployctl checks in over a new SSH connection after the switch;")
	}
	s.Notes = append(s.Notes, fmt.Sprintf("it deploys up to --parallel (%d) hosts at once, and a host that fails does not stop the others.", g.parallel))
	return script.Write(g.inv.Stdout, s)
}

// planHost is what a deploy runs for h, reached through conn.
func (g *globals) planHost(d *remote.Dialer, conn *remote.Conn, h *inventory.Host, at placement, spec activationSpec, opts planOptions, flakeRef string) (script.Host, error) {
	top := h.OutPath
	root := func(argv ...string) string { return onHost(conn, remote.Cmd{Argv: argv, Root: true}) }
	ph := script.Host{
		Name: h.Name, Toplevel: top, Action: opts.action,
		ReadPrevious: conn.CommandLine(remote.Cmd{Argv: []string{"sh", "-c", "readlink /run/current-system || true"}}),
		Record:       root(activate.RecordArgv(planDir, opts.action)...),
		Realise:      onHost(conn, activate.RealiseCmd(top)),
		Switch:       root("sh", "-c", activate.SwitchLine(top, opts.action)),
		Rollback:     root(activate.RollbackArgv(planDir)...),
		ProbeTimeout: opts.probeTimeout,
		Hooks:        map[string][]script.Step{},
	}
	// copyLine is the nix copy of top to c's host, or from it (direction
	// "--from").
	copyLine := func(c *remote.Conn, direction string) (string, error) {
		env, argv, err := push.NixCopyCommand(c, g.sshConfig, push.SSH, top, g.substitute && direction == "--to", false)
		if err != nil {
			return "", err
		}
		for i, a := range argv {
			if a == "--to" {
				argv[i] = direction
				break
			}
		}
		return assignments(env) + shell.Join(argv), nil
	}
	switch {
	case at.local():
		line, err := copyLine(conn, "--to")
		if err != nil {
			return ph, err
		}
		ph.Push = &script.Step{What: "Push: deployctl streams the paths " + h.Name + " lacks itself; this nix copy is the equivalent.", Line: line}
	default:
		bconn := conn
		if at.on != "target" {
			var err error
			if bconn, err = d.Unconnected(at.target); err != nil {
				return ph, err
			}
		}
		drvEnv, drvArgv, err := push.NixCopyCommand(bconn, g.sshConfig, push.SSH, h.DrvPath, false, false)
		if err != nil {
			return ph, err
		}
		drvArgv = append(append(append([]string{}, drvArgv[:len(drvArgv)-2]...), "--derivation"), drvArgv[len(drvArgv)-2:]...)
		ph.Build = []script.Step{
			{What: "Build on " + at.on + ": the derivation goes there (deployctl sends it natively), then is built there, kept as a GC root.", Line: assignments(drvEnv) + shell.Join(drvArgv)},
			{Line: onHost(bconn, build.RealiseCmd(bconn, h.DrvPath, h.Name))},
		}
		if at.on != "target" {
			from, err := copyLine(bconn, "--from")
			if err != nil {
				return ph, err
			}
			to, err := copyLine(conn, "--to")
			if err != nil {
				return ph, err
			}
			ph.Push = &script.Step{What: "Push from " + at.on + ": deployctl streams it from there to " + h.Name + " through its memory; by hand it passes through this machine's store (whose Nix must then trust this user, or the paths be signed).", Line: from + "\n" + to}
		}
	}
	if opts.action == "dry-activate" {
		// A dry activation uploads no key, runs no hook or check.
		return ph, nil
	}
	// Keys: each secret is read into a file only this user can read (a
	// failing command stops the script before anything goes up; deployctl
	// keeps it in memory), then sent on the upload's standard input.
	textAttr := func(k keys.Key) string {
		return flakeRef + "#nixosConfigurations." + nix.Quote(h.Name) + ".config.deployment.keys." + nix.Quote(k.Attr) + ".text"
	}
	var reown []script.Step
	for _, k := range spec.keys {
		st := script.Step{What: fmt.Sprintf("Key %s to %s (%s, %s:%s, %04o).", k.Attr, k.Path(), k.UploadAt, k.User, k.Group, k.Permissions),
			Line: "key_file=$(mktemp)\n" + k.Producer(textAttr(k)) + ` > "$key_file"` + "\n" +
				conn.CommandLine(k.UploadCmd()) + ` < "$key_file"` + "\n" + `rm -f "$key_file"`}
		if k.UploadAt == keys.PostActivation {
			ph.AfterSwitch = append(ph.AfterSwitch, st)
			continue
		}
		ph.PreKeys = append(ph.PreKeys, st)
		if (k.User != "root" || k.Group != "root") && opts.action != "boot" {
			// An owner the new system makes exists only after the switch.
			reown = append(reown, script.Step{What: fmt.Sprintf("Key %s: its owner %s:%s, which the new system may have made.", k.Attr, k.User, k.Group), Line: onHost(conn, k.ReownCmd())})
		}
	}
	ph.AfterSwitch = append(reown, ph.AfterSwitch...)
	// Each point's variables, as a deploy sets them.
	for point, hs := range g.hooks[h.Name] {
		if opts.action == "boot" && point == "postActivate" {
			continue // (checks of a system that is not running)
		}
		e := hooks.Env{Host: h.Name, TargetHost: h.TargetHost, Toplevel: top}
		switch point {
		case "preBuild":
			e.Toplevel = ""
		case "preActivate":
			e.Action = opts.action
		case "postActivate", "postRollback":
			e.Action, e.Previous = opts.action, script.Previous
		}
		for _, hk := range hs {
			argv := hk.Argv(point, e)
			line := shell.Join(argv)
			if hk.On == "target" {
				line = root(argv...)
			}
			ph.Hooks[point] = append(ph.Hooks[point], script.Step{Line: line})
		}
	}
	if opts.action == "boot" {
		return ph, nil // health checks are for a running system
	}
	for _, c := range spec.checks.Lines(conn.Endpoint().HostName, func(argv []string) string {
		return conn.CommandLine(remote.Cmd{Argv: argv})
	}) {
		ph.Checks = append(ph.Checks, script.Check{What: c.Name, Line: c.Line, Period: c.Period})
	}
	return ph, nil
}

// assignments are variables (NAME=value) as a shell line's prefix.
func assignments(env []string) string {
	var b strings.Builder
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		b.WriteString(k + "=" + shell.Quote(v) + " ")
	}
	return b.String()
}

// hereDoc ends the here-documents of onHost.
const hereDoc = "DEPLOYCTL_SCRIPT"

// onHost is the ssh line that runs cmd on conn's host. A script of
// several lines (sh -c SCRIPT NAME ARGS…) goes on the remote shell's
// standard input as a here-document, where it reads as it is written,
// not quoted twice on one line.
func onHost(conn *remote.Conn, cmd remote.Cmd) string {
	if cmd.Step != nil {
		cmd = remote.Cmd{Argv: cmd.Step.Inline(cmd.Argv), Root: true}
	}
	argv := cmd.Argv
	if len(argv) < 3 || argv[0] != "sh" || argv[1] != "-c" || !strings.Contains(argv[2], "\n") || strings.Contains(argv[2], hereDoc) {
		return conn.CommandLine(cmd)
	}
	var args []string
	if len(argv) > 4 {
		args = argv[4:] // (argv[3] is the script's $0)
	}
	line := conn.CommandLine(remote.Cmd{Argv: append([]string{"sh", "-s", "--"}, args...), Root: cmd.Root})
	return line + " <<'" + hereDoc + "'\n" + strings.TrimRight(argv[2], "\n") + "\n" + hereDoc
}
