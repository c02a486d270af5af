package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/remote"
)

// deploySteps are the steps of deploy that --only and --skip name.
var deploySteps = []string{"build", "push", "keys", "activate", "hooks"}

// stepFlags are --only and --skip.
type stepFlags struct{ only, skip []string }

func (s *stepFlags) register(cmd *cobra.Command) {
	names := strings.Join(deploySteps, ", ")
	cmd.Flags().StringSliceVar(&s.only, "only", nil, "run only these `STEPS` of the deploy ("+names+")")
	cmd.Flags().StringSliceVar(&s.skip, "skip", nil, "leave out these `STEPS` of the deploy ("+names+")")
}

// enabled is the set of steps to run, or a usage error.
func (s *stepFlags) enabled() (map[string]bool, error) {
	if len(s.only) > 0 && len(s.skip) > 0 {
		return nil, usageErrorf("give --only or --skip, not both")
	}
	on := map[string]bool{}
	for _, st := range deploySteps {
		on[st] = len(s.only) == 0
	}
	for _, list := range [][]string{s.only, s.skip} {
		for _, st := range list {
			if !slices.Contains(deploySteps, st) {
				return nil, usageErrorf("no step %q: the steps are %s", st, strings.Join(deploySteps, ", "))
			}
			on[st] = len(s.only) > 0
		}
	}
	return on, nil
}

// prebuilt replaces a plan's build with the systems as evaluated
// (--skip build), each where it would have been built. When pushed from
// this machine they must be in its store, and the run stops naming any
// that is not; on a target or builder, the push or the realise there
// says so.
func (g *globals) prebuilt(p *plan, pushing bool) error {
	at, err := g.placeAll(p.hosts, p.fleet)
	if err != nil {
		return err
	}
	p.builds = false
	p.closures = func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
		out := map[string]built{}
		var paths []string
		for _, h := range hosts {
			b := built{Toplevel: h.OutPath, At: at[h.Name]}
			switch {
			case h.EvalError != "" || h.OutPath == "":
				b.Err = fmt.Errorf("its system was not evaluated (--skip build needs it evaluated: no --eval-chunk): %s", h.EvalError)
			case !pushing:
				b.At = placement{on: "target"} // nothing to hold here
			case b.At.local():
				paths = append(paths, h.OutPath)
			}
			out[h.Name] = b
		}
		if err := g.checkLocal(ctx, paths); err != nil {
			return nil, fmt.Errorf("--skip build: %w", err)
		}
		return out, nil
	}
	return nil
}

// keysStep uploads every key of each host (deploy --only keys, and
// upload-keys).
func (g *globals) keysStep(specs map[string]activationSpec) hostStep {
	return hostStep{name: "keys", root: true, run: func(ctx context.Context, conn *remote.Conn, h *inventory.Host, _ built) error {
		if len(specs[h.Name].keys) == 0 {
			g.log.Info("no keys", "host", h.Name)
			return nil
		}
		kcs, err := readKeys(ctx, specs[h.Name].keys, "", g.inv.Env)
		if err != nil {
			return err
		}
		defer wipe(kcs)
		_, err = g.putKeys(ctx, conn, h, kcs, "")
		return err
	}}
}
