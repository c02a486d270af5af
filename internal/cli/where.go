package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/remote"
)

// registerBuildFlags adds the flags of a command that may build.
func registerBuildFlags(cmd *cobra.Command, g *globals) {
	f := cmd.Flags()
	f.IntVar(&g.maxJobs, "max-jobs", 0, "build at most `N` derivations at once (default: Nix's own max-jobs setting)")
	f.BoolVar(&g.buildOnTarget, "build-on-target", false, "build each host's system on the host itself (overrides deployment.buildOnTarget and buildHost)")
	f.IntVar(&g.evalChunk, "eval-chunk", 0, "evaluate the systems `N` hosts at a time, one nix process each, so memory stays bounded; a chunk builds while the next evaluates (default: all in one evaluation)")
	f.StringVar(&g.buildHost, "build-host", "", "build every system on `HOST`, a host of the flake or an SSH destination, and push from there (overrides deployment.buildHost and buildOnTarget)")
}

// checkBuildFlags refuses build flags that contradict each other.
func (g *globals) checkBuildFlags() error {
	switch {
	case g.maxJobs < 0:
		return usageErrorf("--max-jobs must not be negative, got %d", g.maxJobs)
	case g.evalChunk < 0:
		return usageErrorf("--eval-chunk must not be negative, got %d", g.evalChunk)
	case g.buildHost != "" && g.buildOnTarget:
		return usageErrorf("give --build-host or --build-on-target, not both")
	case strings.HasPrefix(g.buildHost, "-") || strings.ContainsAny(g.buildHost, " \t\n"):
		return usageErrorf("--build-host %q is not a host name", g.buildHost)
	}
	return nil
}

// placement is where a host's system is built, and stays until pushed.
type placement struct {
	// on is "local", "target", or the builder's name.
	on string
	// key names the machine's connection in the run's pool; target
	// reaches it. Both are empty for "local".
	key    string
	target remote.Target
}

func (p placement) local() bool { return p.on == "local" }

// hostKey is a fleet host's connection key in the pool.
func hostKey(name string) string { return "host " + name }

// builderKey is the connection key of a builder that is no host of the
// flake.
func builderKey(name string) string { return "builder " + name }

// place decides where h is built: the flags first, then its deployment
// options. fleet is every host of the flake, for a buildHost that names one.
func (g *globals) place(h *inventory.Host, fleet []*inventory.Host) (placement, error) {
	name, onTarget := g.buildHost, g.buildOnTarget
	if name == "" && !onTarget {
		name, onTarget = h.BuildHost, h.BuildOnTarget
	}
	if name == h.Name {
		name, onTarget = "", true
	}
	if name == "local" || name == "target" {
		return placement{}, fmt.Errorf("build host %q: the name is reserved (a manifest's builtOn says local or target); give the machine's address or an ssh_config alias", name)
	}
	if name != "" {
		i := slices.IndexFunc(fleet, func(f *inventory.Host) bool { return f.Name == name })
		if i < 0 {
			return placement{on: name, key: builderKey(name), target: builderTarget(name)}, nil
		}
		if b := fleet[i]; !b.Deployable() {
			return placement{}, fmt.Errorf("build host %s is build-only (deployment.targetHost = null): it cannot be reached", name)
		}
		return placement{on: name, key: hostKey(name), target: targetOf(fleet[i])}, nil
	}
	if onTarget {
		if !h.Deployable() {
			return placement{}, fmt.Errorf("it builds on its target, but it is build-only (deployment.targetHost = null)")
		}
		return placement{on: "target", key: hostKey(h.Name), target: targetOf(h)}, nil
	}
	return placement{on: "local"}, nil
}

// placeAll places every host, and checks that every machine they build on
// resolves: a usage error names each host that cannot be placed.
func (g *globals) placeAll(hosts, fleet []*inventory.Host) (map[string]placement, error) {
	at := map[string]placement{}
	var errs []error
	for _, h := range hosts {
		p, err := g.place(h, fleet)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
			continue
		}
		at[h.Name] = p
	}
	if len(errs) > 0 {
		return nil, usageError{errors.Join(errs...)}
	}
	resolved := map[string]bool{}
	for _, p := range at {
		if p.local() || resolved[p.key] {
			continue
		}
		resolved[p.key] = true
		d, err := g.dialer()
		if err != nil {
			return nil, err
		}
		if _, err := d.Resolve(p.target); err != nil {
			return nil, usageErrorf("build host %s: %w", p.target.Name, err)
		}
	}
	return at, nil
}

// builderTarget reaches a builder given as an SSH destination, [user@]host:
// with no user, the SSH configuration's, else the local user (as ssh does).
func builderTarget(dest string) remote.Target {
	t := remote.Target{Name: dest, Host: dest, Escalation: slices.Clone(inventory.DefaultPrivilegeEscalation)}
	if i := strings.LastIndexByte(dest, '@'); i >= 0 {
		t.User, t.Host = dest[:i], dest[i+1:]
	}
	return t
}

// manifestBuilder records how to reach a builder, for a later push.
func manifestBuilder(t remote.Target) build.Builder {
	return build.Builder{Host: t.Host, Port: t.Port, User: t.User, SSHOptions: t.Options, Escalation: t.Escalation}
}

// builderOf reaches a builder a manifest recorded.
func builderOf(name string, b build.Builder) remote.Target {
	return remote.Target{Name: name, Host: b.Host, Port: b.Port, User: b.User, Options: b.SSHOptions, Escalation: b.Escalation}
}
