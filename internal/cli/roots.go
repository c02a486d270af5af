package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/deployctl/deployctl/build"
)

// localTops returns the systems of closures that are in the local store.
func localTops(closures map[string]built) []string {
	var tops []string
	for _, b := range closures {
		if b.Err == nil && b.Toplevel != "" && b.At.local() {
			tops = append(tops, b.Toplevel)
		}
	}
	return tops
}

// holdRoots registers the local systems as GC roots until the run ends
// (nothing of them stays on this machine after), with one Nix call.
func (g *globals) holdRoots(ctx context.Context, closures map[string]built) error {
	return g.holdLocal(ctx, localTops(closures))
}

// holdLocal makes paths GC roots until the run ends, or fails, naming
// them, when any is missing from the local store. A path held already is
// not held again.
func (g *globals) holdLocal(ctx context.Context, paths []string) error {
	var todo []string
	for _, p := range paths {
		if !g.held[p] {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	dir, err := g.rootDir("hold")
	if err != nil {
		return err
	}
	if err := build.HoldRoots(ctx, g.nix(), dir, todo); err != nil {
		// Say which paths are missing, if that is what went wrong.
		if cerr := g.checkLocal(ctx, todo); cerr != nil {
			return cerr
		}
		return err
	}
	if g.held == nil {
		g.held = map[string]bool{}
	}
	for _, p := range todo {
		g.held[p] = true
	}
	return nil
}

// rootDir is a new directory for GC roots that last as long as the run.
func (g *globals) rootDir(name string) (string, error) {
	g.rootsMu.Lock()
	defer g.rootsMu.Unlock()
	if g.roots == "" {
		dir, err := os.MkdirTemp(g.getenv("TMPDIR"), "deployctl-roots-")
		if err != nil {
			return "", fmt.Errorf("gc roots: %w", err)
		}
		g.roots = dir
	}
	dir, err := os.MkdirTemp(g.roots, name+"-")
	if err != nil {
		return "", fmt.Errorf("gc roots: %w", err)
	}
	return dir, nil
}
