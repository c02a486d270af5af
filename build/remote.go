package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/serve"
)

// GCRootDir holds the garbage-collector roots deployctl registers on the
// machines it builds on.
const GCRootDir = remote.GCRootDir

// BuildRoot is the GC root on a remote builder that keeps host's built
// system until it is built again.
func BuildRoot(host string) string {
	return GCRootDir + "/build-" + strings.NewReplacer("/", "_", "\x00", "_").Replace(host)
}

// RealiseCmd is the command that builds host's system drv on conn's
// machine and keeps it there as the GC root BuildRoot(host). A login user
// who cannot become root (a trusted user, building through the daemon)
// keeps the root in its own directory, remote.UserRootDir.
func RealiseCmd(conn *remote.Conn, drv, host string, realiseArgs ...string) remote.Cmd {
	if conn.Unprivileged() {
		return remote.UserRoot(drv, path.Base(BuildRoot(host)), realiseArgs...)
	}
	return realiseStep.Cmd(append([]string{drv, BuildRoot(host)}, realiseArgs...)...)
}

// realiseStep builds $1, a derivation, keeping its output as the GC root
// $2, with --max-jobs $4 when $3 says so.
var realiseStep = &remote.Step{
	Name: "build",
	Body: remote.GCRootFn + `case $1 in /nix/store/*.drv) ;; *) echo "not a derivation: $1" >&2; exit 64 ;; esac
gc_root "$2"
case $#/${3-} in
  2/) exec nix-store --realise "$1" --add-root "$2" ;;
  4/--max-jobs) exec nix-store --realise "$1" --add-root "$2" --max-jobs "$4" ;;
esac
echo "build: unexpected arguments: $*" >&2; exit 64`,
	Direct: func(args []string) []string {
		return append([]string{"nix-store", "--realise", args[0], "--add-root", args[1]}, args[2:]...)
	},
}

// dryRunStep lists what building the derivations $@ would build and fetch.
var dryRunStep = &remote.Step{
	Name: "build-dry-run",
	Body: `for d in "$@"; do case $d in /nix/store/*.drv) ;; *) echo "not a derivation: $d" >&2; exit 64 ;; esac; done
exec nix-store --realise --dry-run "$@"`,
	Direct: func(args []string) []string { return append([]string{"nix-store", "--realise", "--dry-run"}, args...) },
}

// Steps are the remote build's steps, for deployctl-remote.
func Steps() []*remote.Step { return []*remote.Step{realiseStep, dryRunStep} }

// RemoteOptions tune a remote build.
type RemoteOptions struct {
	// Log, when not nil, gives the writer for a host's build log (closed
	// after the build).
	Log func(host string) io.WriteCloser
	// MaxJobs is Nix's --max-jobs on the builder; 0 leaves its own.
	MaxJobs int
	// OnPending, when set, is told for each host how many derivations the
	// builder must build for it (from its own dry run) before it starts.
	OnPending func(host string, n int)
}

// Remote builds reqs on the machine conn reaches: it copies the
// derivations' closure there (only what it lacks), realises each toplevel
// with a GC root (BuildRoot; for a login user who cannot become root, its
// base name in remote.UserRootDir), and leaves the systems there, for a push
// from that machine. The hosts' builds run at once, so the builder's Nix
// builds shared dependencies once.
func Remote(ctx context.Context, n *nix.CLI, conn *remote.Conn, reqs []Request, opts RemoteOptions) []Result {
	results := make([]Result, len(reqs))
	for i, r := range reqs {
		results[i] = Result{Host: r.Host, DrvPath: r.DrvPath}
	}
	fail := func(err error) []Result {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	drvs := make([]string, len(reqs))
	for i, r := range reqs {
		drvs[i] = r.DrvPath
	}
	// The session stays open through the builds: its lock keeps the
	// derivations on the builder until they are built.
	s, infos, err := copyDerivations(ctx, n, conn, drvs)
	if err != nil {
		return fail(fmt.Errorf("copy the derivations to %s: %w", conn.Endpoint().Destination(), err))
	}
	defer s.Close()
	if opts.OnPending != nil {
		// Only information: when the builder cannot say, nothing is said.
		var stderr bytes.Buffer
		dry := dryRunStep.Cmd(drvs...)
		dry.Stdout, dry.Stderr = io.Discard, &stderr
		if conn.Run(ctx, dry) == nil {
			if pending, err := countPending(infos, reqs, parseWillBuild(stderr.String())); err == nil {
				for _, r := range reqs {
					opts.OnPending(r.Host, pending[r.Host])
				}
			}
		}
	}
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var jobs []string
			if opts.MaxJobs > 0 {
				jobs = []string{"--max-jobs", strconv.Itoa(opts.MaxJobs)}
			}
			cmd := RealiseCmd(conn, r.DrvPath, r.Host, jobs...)
			cmd.Stdout = io.Discard
			if opts.Log != nil {
				w := opts.Log(r.Host)
				defer w.Close()
				cmd.Stderr = w
			}
			if err := conn.Run(ctx, cmd); err != nil {
				var ee *remote.ExitError
				if errors.As(err, &ee) {
					// The first line says what failed; Nix's own words follow.
					err = fmt.Errorf("exit status %d; its output ends:\n%s", ee.Status, strings.TrimSpace(ee.Stderr))
				}
				results[i].Err = fmt.Errorf("nix-store --realise %s on %s: %w", r.DrvPath, conn.Endpoint().Destination(), err)
				return
			}
			paths, err := serve.List(ctx, conn, r.OutPath)
			var infos []nix.PathInfo
			if err == nil {
				infos, err = s.Infos(paths)
			}
			if err != nil {
				results[i].Err = fmt.Errorf("built on %s, but: %w", conn.Endpoint().Destination(), err)
				return
			}
			st := &ClosureStats{}
			for _, info := range infos {
				st.Paths++
				st.NarSize += info.NarSize
			}
			results[i].Toplevel, results[i].Closure = r.OutPath, st
		}()
	}
	wg.Wait()
	return results
}

// copyDerivations copies the closure of drvs to the machine, sending only
// what it lacks, and returns the session, whose lock keeps them there, and
// the closure's metadata.
func copyDerivations(ctx context.Context, n *nix.CLI, conn *remote.Conn, drvs []string) (*serve.Session, map[string]nix.PathInfo, error) {
	infos, err := n.PathInfos(ctx, true, drvs...)
	if err != nil {
		return nil, nil, err
	}
	closure, err := nix.Closure(infos, drvs...)
	if err != nil {
		return nil, nil, err
	}
	s, missing, err := serve.OpenMissing(ctx, conn, closure, true, false)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Add(ctx, missing, serve.LocalNAR, nil); err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, infos, nil
}
