// Package cli is deployctl's command tree: flags to options, one run
// function per command, and one table from errors to exit codes.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/internal/events"
	"github.com/deployctl/deployctl/internal/hooks"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/report"
	"github.com/deployctl/deployctl/push"
)

// Version is set at link time (-ldflags "-X …/internal/cli.Version=v1.2.3").
var Version = "dev"

// Invocation is everything a run of deployctl gets from its process.
type Invocation struct {
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Env is the environment, as os.Environ returns it. deployctl reads
	// HOME and SSH_AUTH_SOCK from it and passes it to the commands it runs.
	Env []string
	// Detach ends when the user insists (a second Ctrl-C): activations
	// that Main's context (the first Ctrl-C) let finish are left to run on
	// their hosts. nil: never.
	Detach context.Context
}

// globals are the options every command shares.
type globals struct {
	flake    string
	parallel int
	json     bool
	verbose  bool
	// colorMode is --color; color says the human output is coloured.
	colorMode         string
	color             bool
	sshConfig         string
	acceptNewHostKeys bool
	// askSudoPassword asks for sudoPassword before the run.
	askSudoPassword bool
	sudoPassword    string
	// maxJobs, buildOnTarget and buildHost are the build flags of the
	// commands that build.
	maxJobs       int
	evalChunk     int
	buildOnTarget bool
	buildHost     string
	// copyBackend, substitute and signKeyFile are flags of the commands
	// that push; signer is the key signKeyFile holds.
	copyBackend string
	substitute  bool
	signKeyFile string
	signer      *push.Signer
	// copyFlake copies the flake's source to the hosts too.
	copyFlake bool

	inv     Invocation
	log     *slog.Logger
	handler *report.Handler
	nixCLI  *nix.CLI
	dialMu  sync.Mutex
	dial    *remote.Dialer
	conns   conns
	// buildBar and pushBar show the derivations the run builds here and
	// the bytes its pushes send, on a terminal.
	buildBar countBar
	pushBar  byteBar
	// localInfos is the metadata of the local systems' closures, read once
	// for all the run's pushes.
	localInfos map[string]nix.PathInfo
	// hooks are the run's hosts' deployment.hooks; local, for deploy
	// --local, is the machine its target hooks run on.
	hooks map[string]hooks.Hooks
	local *remote.Local
	// noHooks runs no hooks (deploy --skip hooks).
	noHooks bool
	// tagsWithin is how long completion waits for the tags before it
	// completes host names alone.
	tagsWithin time.Duration
	// board is the live line per host on a terminal (nil elsewhere).
	board *board
	// logDir is --log-dir: where each host's steps' transcripts go.
	logDir string
	// events is the run's event stream (--json on the commands that work
	// on hosts); nil drops events.
	events *events.Stream
	// shared serialises local NARs once for every host a run pushes to.
	sharedOnce sync.Once
	shared     *push.Shared
	// roots holds the run's GC roots; removed when the run ends.
	rootsMu sync.Mutex
	roots   string
	// activating are the hosts whose activation runs, which an interrupt
	// lets finish.
	activatingMu sync.Mutex
	activating   map[string]bool
	// held are the local paths the run holds as GC roots already.
	held map[string]bool
}

func (g *globals) getenv(key string) string {
	for i := len(g.inv.Env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(g.inv.Env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Main runs deployctl and returns its exit code.
func Main(ctx context.Context, inv Invocation) int {
	stdout := &countingWriter{w: inv.Stdout}
	inv.Stdout = stdout
	if inv.Detach == nil {
		inv.Detach = context.Background()
	}
	g := &globals{inv: inv, tagsWithin: 2 * time.Second}
	g.buildBar.g, g.pushBar.g = g, g
	root := newRootCommand(g)
	root.SetArgs(inv.Args)
	root.SetIn(inv.Stdin)
	root.SetOut(inv.Stdout)
	root.SetErr(inv.Stderr)
	err := root.ExecuteContext(ctx)
	g.closeAll()
	if g.roots != "" {
		os.RemoveAll(g.roots)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	code := exitCode(ctx, err)
	if g.json && err != nil && stdout.n == 0 {
		// A --json caller reads stdout: say there what went wrong.
		msg := err.Error()
		if code == exitInterrupted {
			msg = "interrupted"
		}
		_ = json.NewEncoder(inv.Stdout).Encode(map[string]any{"version": 1, "error": msg, "exitCode": code})
	}
	switch {
	case code == exitInterrupted:
		fmt.Fprintln(inv.Stderr, "deployctl: interrupted")
	case err != nil && !isReported(err):
		fmt.Fprintf(inv.Stderr, "deployctl: %v\n", err)
		if code == exitUsage {
			fmt.Fprintln(inv.Stderr, "Run 'deployctl --help' for usage.")
		}
	}
	return code
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

const exitCodesHelp = `Exit codes:
  0    every selected host succeeded
  1    a failure (for a command over hosts: every host failed)
  2    usage error: bad flags, selectors or deployment options; nothing was done
  3    some hosts failed, others succeeded
  130  interrupted`

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "deployctl",
		Short: "Build, push and activate NixOS systems across a fleet",
		Long: `deployctl deploys the nixosConfigurations of a flake to their hosts over SSH.

Building a system, pushing its closure and activating it are separate phases:
'build', 'push' and 'activate' run one each, and 'deploy' chains them.
Deployment options are read from each host's config.deployment, with the
names Colmena uses (targetHost, targetPort, targetUser, tags, …).

Hosts are selected by name, shell glob ("web-*") or tag ("@db", "@edge-*");
arguments are OR'd, and --all selects every deployable host (for 'build',
every host).

` + exitCodesHelp,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Reached only when no subcommand matched.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.parallel < 1 {
				return usageErrorf("--parallel must be at least 1, got %d", g.parallel)
			}
			if err := g.checkBuildFlags(); err != nil {
				return err
			}
			level := slog.LevelInfo
			if g.verbose {
				level = slog.LevelDebug
			}
			switch g.colorMode {
			case "auto":
				// NO_COLOR (no-color.org) set to anything but "".
				g.color = g.terminal() && g.getenv("NO_COLOR") == ""
			case "always", "never":
				g.color = g.colorMode == "always"
			default:
				return usageErrorf("--color must be auto, always or never, not %q", g.colorMode)
			}
			g.handler = report.NewHandler(g.inv.Stderr, level)
			g.log = slog.New(g.handler)
			if g.askSudoPassword {
				if g.copyBackend != "" && g.copyBackend != "native" {
					return usageErrorf("--ask-sudo-password works with the native push only: nix copy starts its own ssh, which cannot be given the password")
				}
				pw, err := g.readSudoPassword()
				if err != nil {
					return err
				}
				g.sudoPassword = pw
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	f := root.PersistentFlags()
	f.StringVar(&g.flake, "flake", ".", "flake `REF` whose nixosConfigurations to deploy (a plain directory works)")
	f.IntVarP(&g.parallel, "parallel", "p", 10, "work on at most `N` hosts at once")
	f.BoolVar(&g.json, "json", false, "print machine-readable JSON on stdout: an event stream for the commands that work on hosts (docs/events.md), a document for build, list and status; human output stays on stderr")
	f.StringVar(&g.colorMode, "color", "auto", "colour the results in summaries: `auto` (on a terminal, unless NO_COLOR is set or TERM=dumb), always or never")
	f.BoolVarP(&g.verbose, "verbose", "v", false, "print every local and remote command deployctl runs, as a shell line")
	f.StringVar(&g.logDir, "log-dir", "", "record every command run on a host, with its full output and exit status, in `DIR`/HOST/STEP.log (appended to)")
	f.StringVar(&g.sshConfig, "ssh-config", "", "read SSH settings from `FILE` instead of ~/.ssh/config and /etc/ssh/ssh_config")
	f.BoolVar(&g.acceptNewHostKeys, "accept-new-host-keys", false, "record the key of a host known_hosts does not know yet (a changed key is always refused)")
	f.BoolVar(&g.askSudoPassword, "ask-sudo-password", false, "ask once for the password sudo wants on hosts deployed as a user other than root (read from standard input when it is not a terminal); it reaches each host's sudo on standard input, never in a command line")

	root.AddCommand(
		newListCommand(g),
		newBuildCommand(g),
		newDeployCommand(g),
		newPushCommand(g),
		newActivateCommand(g),
		newRollbackCommand(g),
		newUploadKeysCommand(g),
		newStatusCommand(g),
		newPlanCommand(g),
		newRemoteHelperCommand(g),
	)
	g.completion(root)
	return root
}

// nix is the run's one Nix CLI, so that `nix --version` runs once.
func (g *globals) nix() *nix.CLI {
	if g.nixCLI == nil {
		g.nixCLI = nix.New(g.inv.Env, g.log)
	}
	return g.nixCLI
}

// sharedNARs is the run's one cache of serialised NARs (256 MiB at most).
func (g *globals) sharedNARs() *push.Shared {
	g.sharedOnce.Do(func() { g.shared = push.NewShared(256 << 20) })
	return g.shared
}

// dialer is the run's one SSH dialer (its known_hosts and agent are shared).
func (g *globals) dialer() (*remote.Dialer, error) {
	g.dialMu.Lock()
	defer g.dialMu.Unlock()
	if g.dial != nil {
		return g.dial, nil
	}
	d, err := remote.NewDialer(remote.Options{
		ConfigFile:        g.sshConfig,
		Home:              g.getenv("HOME"),
		LocalUser:         g.getenv("USER"),
		AgentSocket:       g.getenv("SSH_AUTH_SOCK"),
		AcceptNewHostKeys: g.acceptNewHostKeys,
		SudoPassword:      g.sudoPassword,
		Log:               g.log,
	})
	if err != nil {
		return nil, usageError{err}
	}
	g.dial = d
	return d, nil
}

// selection is how a command was told which hosts to work on.
type selection struct {
	all bool
	// deployableOnly makes --all leave out build-only hosts.
	deployableOnly bool
}

func (s *selection) register(cmd *cobra.Command, deployableOnly bool) {
	s.deployableOnly = deployableOnly
	help := "select every host"
	if deployableOnly {
		help = "select every deployable host"
	}
	cmd.Flags().BoolVar(&s.all, "all", false, help)
}

// load evaluates the flake and selects hosts. required makes "no selector
// and no --all" a usage error; toplevel evaluates the selected toplevels.
func (g *globals) load(ctx context.Context, args []string, sel selection, required, toplevel bool) (*inventory.Inventory, error) {
	if sel.all && len(args) > 0 {
		return nil, usageErrorf("give host selectors or --all, not both")
	}
	if required && !sel.all && len(args) == 0 {
		return nil, usageErrorf("no hosts selected: name hosts, globs (web-*) or tags (@db), or pass --all")
	}
	sels, err := inventory.ParseSelectors(args)
	if err != nil {
		return nil, usageError{err}
	}
	ref, err := nix.FlakeRef(g.flake)
	if err != nil {
		return nil, usageError{err}
	}
	g.log.Info("evaluating " + ref)
	inv, err := inventory.Load(ctx, g.nix(), ref, inventory.LoadOptions{Selectors: sels, All: sel.all, DeployableOnly: sel.deployableOnly, Toplevel: toplevel})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var se *inventory.SelectionError
		var oe *inventory.OptionError
		if errors.As(err, &se) || errors.As(err, &oe) {
			// Selection and deployment option errors are the user's input.
			return nil, usageError{err}
		}
		return nil, err
	}
	for _, b := range inv.Broken {
		first, _, _ := strings.Cut(strings.TrimSpace(b.Err), "\n")
		g.log.Warn("left out: its config.deployment does not evaluate", "host", b.Name, "err", first)
	}
	return inv, nil
}

func targetOf(h *inventory.Host) remote.Target {
	return remote.Target{
		Name:       h.Name,
		Host:       h.TargetHost,
		Port:       h.TargetPort,
		User:       h.TargetUser,
		Options:    h.SSHOptions,
		Escalation: h.PrivilegeEscalationCommand,
	}
}
