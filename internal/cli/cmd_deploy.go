package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/keys"
	"github.com/deployctl/deployctl/internal/rollout"
)

type deployOptions struct {
	selection
	source
	activation activateFlags
	// local deploys the machine deployctl runs on, without SSH.
	local bool
	steps stepFlags
	// dryRun reports what a deploy would do, changing nothing.
	dryRun bool
}

func newDeployCommand(g *globals) *cobra.Command {
	var opts deployOptions
	cmd := &cobra.Command{
		Use:   "deploy [SELECTORS…|--all]",
		Short: "Build, push and activate the selected hosts",
		Long: `Build the selected hosts' systems (one evaluation, one build), then for each
host, up to --parallel at once: connect over SSH, copy the closure (only
the paths the host lacks; see 'deployctl push --help'), then activate it
under the host's lock: set the system profile and run the new system's
switch-to-configuration in a job detached from the SSH session, and go back
to the system that ran before when that fails (see 'deployctl activate
--help'). Systems are built here unless --build-host, --build-on-target or the
hosts' deployment.buildHost / buildOnTarget say otherwise. A failing host
does not stop the others; a summary ends the run.

Around the activation, the hosts' keys go up (deployment.keys: before the
switch, and after it for post-activation ones) and their hooks run
(deployment.hooks); the rollout flags (--canary, --wave-size,
--max-failures) decide which hosts go when. --only and --skip run or leave
out steps (build, push, keys, activate, hooks); --dry-run changes nothing
and says what would be done; --local deploys this machine without SSH;
--copy-flake leaves the flake on each host.

With --manifest, the systems come from a build manifest and nothing is
evaluated. With --closure PATH HOST, one prebuilt system goes to one host
(an ssh_config alias or address) without a flake.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDeploy(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerBuildFlags(cmd, g)
	registerPushFlags(cmd, g)
	opts.source.register(cmd.Flags(), true)
	opts.activation.register(cmd)
	opts.steps.register(cmd)
	cmd.Flags().BoolVar(&opts.dryRun, "dry-run", false, "change nothing: say what would be built here, what each host lacks of its system (a read-only query), and what switch-to-configuration dry-activate says where the system is on the host already")
	cmd.Flags().BoolVar(&opts.local, "local", false, "deploy the machine deployctl runs on, without SSH (the host named, else the one named like this machine; it must set deployment.allowLocalDeployment = true): built here, activated here, with the same lock, checks and rollback")
	return cmd
}

func runDeploy(ctx context.Context, g *globals, opts deployOptions, args []string) error {
	if err := opts.activation.check(); err != nil {
		return err
	}
	if err := checkPushFlags(g); err != nil {
		return err
	}
	on, err := opts.steps.enabled()
	if err != nil {
		return err
	}
	if opts.dryRun {
		if opts.local || len(opts.steps.only)+len(opts.steps.skip) > 0 {
			return usageErrorf("--dry-run runs nothing: no --local, --only or --skip")
		}
		return runDryRun(ctx, g, opts, args)
	}
	if opts.local {
		if len(opts.steps.only)+len(opts.steps.skip) > 0 {
			return usageErrorf("--local runs every step: no --only or --skip")
		}
		return runLocal(ctx, g, opts, args)
	}
	if !on["build"] && !on["push"] && !on["keys"] && !on["activate"] {
		return usageErrorf("nothing to do: hooks run around the other steps, not alone")
	}
	if on["build"] && !on["push"] && !on["keys"] && !on["activate"] {
		// Nothing to do on the hosts: the build command's run.
		if opts.source.manifest != "" || opts.source.closure != "" {
			return usageErrorf("--only build builds the flake: not with --manifest or --closure")
		}
		g.noHooks = !on["hooks"]
		return runBuild(ctx, g, buildOptions{selection: opts.selection}, args)
	}
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	if !on["build"] && p.builds {
		if err := g.prebuilt(p, on["push"]); err != nil {
			return err
		}
	}
	g.noHooks = !on["hooks"]
	specs, err := activationSpecs(p.hosts)
	if err != nil {
		return err
	}
	var steps []hostStep
	if on["push"] {
		if steps, err = g.pushSteps(ctx, opts.source); err != nil {
			return err
		}
	}
	// Keys go up with the activation, or alone when it is left out.
	switch {
	case on["activate"]:
		opts.activation.skipKeys = !on["keys"]
		steps = append(steps, g.activateStep(opts.activation, specs))
	case on["keys"]:
		steps = append(steps, g.keysStep(specs))
	}
	return g.runHosts(ctx, "deploy", p, &opts.activation, steps...)
}

// activateFlags are the flags of the commands that activate.
type activateFlags struct {
	action           string
	allowFailedUnits bool
	noRollback       bool
	noMagicRollback  bool
	probeTimeout     time.Duration
	canary           int
	waveSize         string
	maxFailures      int
	// rollback marks the activations as rollbacks in the journal;
	// skipKeys uploads no keys (deploy --skip keys).
	rollback, skipKeys bool
}

func (f *activateFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.action, "action", "switch", "switch-to-configuration `ACTION`: switch, boot, test or dry-activate")
	cmd.Flags().BoolVar(&f.allowFailedUnits, "allow-failed-units", false, "accept a switch whose only failure is units that failed to start (switch-to-configuration's status 4)")
	f.registerRollout(cmd)
}

// registerRollout registers the flags that shape activations but not what
// they activate.
func (f *activateFlags) registerRollout(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.noRollback, "no-rollback", false, "leave a host whose switch or health checks failed as it is, instead of switching it back to the system it ran before")
	cmd.Flags().BoolVar(&f.noMagicRollback, "no-magic-rollback", false, "do not arm the hosts' dead-man's switch (which rolls a host back when no new SSH connection can check in after the switch)")
	cmd.Flags().DurationVar(&f.probeTimeout, "probe-timeout", 60*time.Second, "how long each host's health checks (deployment.healthChecks) may take to pass")
	cmd.Flags().IntVar(&f.canary, "canary", 0, "activate the first `N` selected hosts first: any failure among them halts the rollout before another host is touched")
	cmd.Flags().StringVar(&f.waveSize, "wave-size", "", "after the canaries, go through the hosts in waves of `N` hosts (or N% of the selected hosts), each finished before the next starts")
	cmd.Flags().IntVar(&f.maxFailures, "max-failures", rollout.NoLimit, "halt the rollout once more than `N` hosts have failed: no further host starts (-1: never halt)")
}

// rollout is the rollout over n hosts the flags ask for.
func (f *activateFlags) rollout(n, parallel int) rollout.Options {
	o := rollout.Options{Parallel: parallel, Canary: f.canary, MaxFailures: f.maxFailures}
	if pct, ok := strings.CutSuffix(f.waveSize, "%"); ok {
		p, _ := strconv.Atoi(pct)
		o.WaveSize = max(1, (n*p+99)/100)
	} else if f.waveSize != "" {
		o.WaveSize, _ = strconv.Atoi(f.waveSize)
	}
	return o
}

func (f *activateFlags) check() error {
	if !slices.Contains(activate.Actions, f.action) {
		return usageErrorf("--action %q: want switch, boot, test or dry-activate", f.action)
	}
	if f.probeTimeout <= 0 {
		return usageErrorf("--probe-timeout must be positive, got %s", f.probeTimeout)
	}
	if f.canary < 0 {
		return usageErrorf("--canary must be 0 or more, got %d", f.canary)
	}
	if f.maxFailures < rollout.NoLimit {
		return usageErrorf("--max-failures must be 0 or more, got %d", f.maxFailures)
	}
	if f.waveSize != "" {
		pct, isPct := strings.CutSuffix(f.waveSize, "%")
		n, err := strconv.Atoi(pct)
		if err != nil || n < 1 || isPct && n > 100 {
			return usageErrorf("--wave-size %q: want a number of hosts (5) or a percentage of them (25%%)", f.waveSize)
		}
	}
	return nil
}

// activationSpec is what a host's deployment options say about its
// activation.
type activationSpec struct {
	checks         activate.Checks
	confirmTimeout time.Duration
	keys           []keys.Key
}

// activationSpecs reads every host's deployment.healthChecks and
// deployment.keys (and takes its confirmTimeout), so that a bad one stops
// the run before any host is touched.
func activationSpecs(hosts []*inventory.Host) (map[string]activationSpec, error) {
	specs := map[string]activationSpec{}
	var errs []error
	for _, h := range hosts {
		checks, err := activate.ParseChecks(h.Extra["healthChecks"])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
		}
		ks, err := keys.Parse(h.Extra["keys"])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
		}
		specs[h.Name] = activationSpec{checks: checks, confirmTimeout: h.ConfirmTimeout, keys: ks}
	}
	if len(errs) > 0 {
		return nil, usageErrorf("%w", errors.Join(errs...))
	}
	return specs, nil
}
