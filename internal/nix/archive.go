package nix

import (
	"context"
	"encoding/json"
	"fmt"
)

// FlakeSource is a flake's source in the store and its inputs', as
// `nix flake archive` copies them there.
type FlakeSource struct {
	// Path is the flake's own source.
	Path string
	// Inputs are its inputs' sources, recursively, each once.
	Inputs []string
}

// archived is `nix flake archive --json`'s output: a tree of inputs.
type archived struct {
	Path   string              `json:"path"`
	Inputs map[string]archived `json:"inputs"`
}

// FlakeArchive copies the flake ref and every input it locks into the
// local store and returns their paths.
func (c *CLI) FlakeArchive(ctx context.Context, ref string) (FlakeSource, error) {
	out, err := c.Nix(ctx, "flake", "archive", "--json", ref)
	if err != nil {
		return FlakeSource{}, err
	}
	var a archived
	if err := json.Unmarshal(out, &a); err != nil || a.Path == "" {
		return FlakeSource{}, fmt.Errorf("nix flake archive --json %s: unexpected output %q", ref, out)
	}
	src := FlakeSource{Path: a.Path}
	seen := map[string]bool{a.Path: true}
	var walk func(map[string]archived)
	walk = func(inputs map[string]archived) {
		for _, in := range inputs {
			if in.Path != "" && !seen[in.Path] {
				seen[in.Path] = true
				src.Inputs = append(src.Inputs, in.Path)
			}
			walk(in.Inputs)
		}
	}
	walk(a.Inputs)
	return src, nil
}
