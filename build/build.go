// Package build realises the selected hosts' system toplevels with one Nix
// build for the whole selection.
package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/deployctl/deployctl/internal/nix"
)

// Request is one host's toplevel to build.
type Request struct {
	Host    string
	DrvPath string
	// OutPath is the toplevel's output path, known from evaluation.
	OutPath string
}

// Result is one host's built toplevel, or why it is missing.
type Result struct {
	Host     string
	DrvPath  string
	Toplevel string
	// Closure is the closure's size, when the build measured it (a remote
	// build does, as its system stays there).
	Closure *ClosureStats
	Err     error
}

// Options tune a build.
type Options struct {
	// OnLog receives each build log line as it comes, with the host whose
	// toplevel is being built ("" for a dependency) and the derivation.
	OnLog func(host, drv, line string)
	// MaxJobs is Nix's --max-jobs; 0 leaves Nix's own setting.
	MaxJobs int
	// OnProgress, when set, receives Nix's count of derivations built and
	// expected (for the whole build) as it changes.
	OnProgress func(done, expected int)
	// RootDir, when set, makes the build itself register the toplevels as
	// GC roots (links RootDir/result, result-1, …), so no garbage
	// collection can take them between the build and the caller's own
	// roots. Nix adds them only when every build succeeded; after a
	// partial failure the caller's roots are the only ones.
	RootDir string
}

// Build realises every request in one `nix build --keep-going` call, so Nix
// schedules shared dependencies once. A failed build fails only the hosts
// whose toplevel is missing afterwards, each with its own error: the
// toplevel's build log, or the dependency that failed.
func Build(ctx context.Context, n *nix.CLI, reqs []Request, opts Options) ([]Result, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	args := []string{"build", "--json", "--keep-going"}
	if opts.RootDir != "" {
		args = append(args, "--out-link", filepath.Join(opts.RootDir, "result"))
	} else {
		args = append(args, "--no-link")
	}
	if opts.MaxJobs > 0 {
		args = append(args, "--max-jobs", strconv.Itoa(opts.MaxJobs))
	}
	seen := map[string]bool{}
	hostOf := map[string]string{}
	for _, r := range reqs {
		hostOf[r.DrvPath] = r.Host
		if seen[r.DrvPath] {
			continue
		}
		seen[r.DrvPath] = true
		inst, err := n.OutputOf(ctx, r.DrvPath, "out")
		if err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		args = append(args, inst)
	}
	blog := nix.NewBuildLog()
	if opts.OnLog != nil {
		blog.OnLine = func(drv, line string) { opts.OnLog(hostOf[drv], drv, line) }
	}
	if opts.OnProgress != nil {
		blog.OnProgress = func(done, expected, _, _ int) { opts.OnProgress(done, expected) }
	}
	out, buildErr := n.NixLogged(ctx, blog, args...)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	built := map[string]string{} // drv → out
	if buildErr == nil {
		var res []struct {
			DrvPath string            `json:"drvPath"`
			Outputs map[string]string `json:"outputs"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			return nil, fmt.Errorf("build: reading nix build --json output: %w", err)
		}
		for _, r := range res {
			built[r.DrvPath] = r.Outputs["out"]
		}
	} else {
		// Some may have built: ask the store which outputs exist.
		outs := make([]string, len(reqs))
		for i, r := range reqs {
			outs[i] = r.OutPath
		}
		missing, err := Missing(ctx, n, outs)
		if err != nil {
			return nil, fmt.Errorf("build: %w (and checking which outputs exist: %v)", buildErr, err)
		}
		for _, r := range reqs {
			if !slices.Contains(missing, r.OutPath) {
				built[r.DrvPath] = r.OutPath
			}
		}
	}
	fails := &failures{n: n, log: blog}
	results := make([]Result, len(reqs))
	for i, r := range reqs {
		results[i] = Result{Host: r.Host, DrvPath: r.DrvPath, Toplevel: built[r.DrvPath]}
		switch {
		case results[i].Toplevel != "":
		case buildErr != nil:
			results[i].Err = fails.hostError(ctx, r.DrvPath, buildErr)
		default:
			results[i].Err = fmt.Errorf("nix build %s: reported no output", r.DrvPath)
		}
	}
	return results, nil
}

// Pending returns, for each request's host, how many derivations of its
// closure the local store must still build, from Nix's own dry run (one
// nix-store --dry-run and one nix path-info for all requests).
func Pending(ctx context.Context, n *nix.CLI, reqs []Request) (map[string]int, error) {
	if len(reqs) == 0 {
		return map[string]int{}, nil
	}
	drvs := make([]string, len(reqs))
	for i, r := range reqs {
		drvs[i] = r.DrvPath
	}
	_, stderr, err := n.Output(ctx, nil, "nix-store", append([]string{"--realise", "--dry-run"}, drvs...)...)
	if err != nil {
		return nil, err
	}
	infos, err := n.PathInfos(ctx, true, drvs...)
	if err != nil {
		return nil, err
	}
	return countPending(infos, reqs, parseWillBuild(string(stderr)))
}

// countPending counts, for each request's host, the derivations of its
// closure (within infos) that are in willBuild.
func countPending(infos map[string]nix.PathInfo, reqs []Request, willBuild map[string]bool) (map[string]int, error) {
	out := map[string]int{}
	for _, r := range reqs {
		closure, err := nix.Closure(infos, r.DrvPath)
		if err != nil {
			return nil, err
		}
		out[r.Host] = 0
		for _, info := range closure {
			if willBuild[info.Path] {
				out[r.Host]++
			}
		}
	}
	return out, nil
}

// parseWillBuild reads the derivations Nix's dry run lists under "this
// derivation will be built:" or "these N derivations will be built:".
func parseWillBuild(text string) map[string]bool {
	out := map[string]bool{}
	in := false
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasSuffix(line, "will be built:"):
			in = true
		case in && strings.HasPrefix(line, "  /") && strings.HasSuffix(strings.TrimSpace(line), ".drv"):
			out[strings.TrimSpace(line)] = true
		default:
			in = false
		}
	}
	return out
}

// failures explains failed builds from Nix's structured log.
type failures struct {
	n   *nix.CLI
	log *nix.BuildLog

	once  sync.Once
	named map[string]bool // builders Nix said failed
	mu    sync.Mutex
	built map[string]bool // memo: started derivations with all outputs present
}

// hostError explains why drv (a toplevel, missing after the build) did not
// build: its own builder failed, with the end of its log, or dependencies
// did, each with the end of its log.
func (f *failures) hostError(ctx context.Context, drv string, buildErr error) error {
	f.once.Do(func() { f.named, f.built = f.log.FailedBuilders(), map[string]bool{} })
	if f.named[drv] || f.log.Started(drv) {
		return errors.New(f.builderError(drv))
	}
	// It never started: dependencies failed. Those Nix named, and, as Nix
	// 2.8's `nix build` leaves some unnamed, those it started whose
	// outputs are missing.
	out, err := f.n.Run(ctx, nil, "nix-store", "--query", "--requisites", drv)
	if err == nil {
		var parts []string
		for _, dep := range strings.Fields(string(out)) {
			if dep != drv && (f.named[dep] || f.log.Started(dep) && !f.depBuilt(ctx, dep)) {
				parts = append(parts, f.builderError(dep))
			}
		}
		if len(parts) > 0 {
			return fmt.Errorf("a dependency of %s failed to build:\n%s", drv, strings.Join(parts, "\n"))
		}
	}
	return fmt.Errorf("nix build %s: %w", drv, buildErr)
}

func (f *failures) builderError(drv string) string {
	msg := strings.Join(f.log.BuilderErrors(drv), "\n")
	if msg == "" {
		msg = fmt.Sprintf("builder for '%s' failed", drv)
	}
	return msg + logTail(f.log.Lines(drv))
}

// depBuilt reports whether every output of dep is in the store, once per
// derivation however many hosts share it.
func (f *failures) depBuilt(ctx context.Context, dep string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.built[dep]; ok {
		return b
	}
	b := false
	if out, err := f.n.Run(ctx, nil, "nix-store", "--query", "--outputs", dep); err == nil {
		missing, err := Missing(ctx, f.n, strings.Fields(string(out)))
		b = err == nil && len(missing) == 0
	}
	f.built[dep] = b
	return b
}

func logTail(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return fmt.Sprintf("\nlast %d log lines:\n> %s", len(lines), strings.Join(lines, "\n> "))
}

// Missing returns those of paths that the local store does not hold, with
// one nix-store call.
func Missing(ctx context.Context, n *nix.CLI, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	out, err := n.Run(ctx, nil, "nix-store", append([]string{"--check-validity", "--print-invalid"}, paths...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}
