// Package build realises the selected hosts' system toplevels with one Nix
// build for the whole selection.
package build

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

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
	Err      error
}

// Build realises every request in one `nix build --keep-going` call, so Nix
// schedules shared dependencies once. A failed build fails only the hosts
// whose toplevel is missing afterwards; the others succeed.
func Build(ctx context.Context, n *nix.CLI, reqs []Request) ([]Result, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	args := []string{"build", "--json", "--no-link", "--keep-going"}
	seen := map[string]bool{}
	for _, r := range reqs {
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
	out, buildErr := n.Nix(ctx, args...)
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
	results := make([]Result, len(reqs))
	for i, r := range reqs {
		results[i] = Result{Host: r.Host, DrvPath: r.DrvPath, Toplevel: built[r.DrvPath]}
		switch {
		case results[i].Toplevel != "":
		case buildErr != nil:
			results[i].Err = fmt.Errorf("nix build %s: %w", r.DrvPath, buildErr)
		default:
			results[i].Err = fmt.Errorf("nix build %s: reported no output", r.DrvPath)
		}
	}
	return results, nil
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
