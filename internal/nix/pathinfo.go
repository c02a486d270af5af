package nix

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// PathInfo is what `nix path-info --json` says of one store path.
type PathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
	Deriver    string   `json:"deriver"`
	Signatures []string `json:"signatures"`
	CA         string   `json:"ca"`
	// RegistrationTime is kept so a copy registers the path as the source
	// store has it. (Whether the source built the path itself, "ultimate",
	// is not: a copy never is.)
	RegistrationTime int64 `json:"registrationTime"`
}

// ParsePathInfo reads `nix path-info --json` output in either shape: the
// array of objects with a "path" field (Nix up to 2.18, Lix), or the
// object keyed by path (Nix 2.19 and later, where an invalid path maps to
// null). Invalid paths are left out.
func ParsePathInfo(out []byte) (map[string]PathInfo, error) {
	infos := map[string]PathInfo{}
	var list []*PathInfo
	if err := json.Unmarshal(out, &list); err == nil {
		for _, p := range list {
			if p != nil && p.Path != "" && p.NarSize > 0 {
				infos[p.Path] = *p
			}
		}
		return infos, nil
	}
	var byPath map[string]*PathInfo
	if err := json.Unmarshal(out, &byPath); err != nil {
		return nil, fmt.Errorf("reading nix path-info --json output: %w", err)
	}
	for path, p := range byPath {
		if p != nil {
			p.Path = path
			infos[path] = *p
		}
	}
	return infos, nil
}

// PathInfos is one `nix path-info --json --recursive` over paths: the
// metadata of their whole closure. With derivation set, paths are store
// derivations and the closure is theirs (Nix 2.8 would build a bare .drv).
func (c *CLI) PathInfos(ctx context.Context, derivation bool, paths ...string) (map[string]PathInfo, error) {
	if len(paths) == 0 {
		return map[string]PathInfo{}, nil
	}
	args := []string{"path-info", "--json", "--recursive"}
	if derivation {
		args = append(args, "--derivation")
	}
	out, err := c.Nix(ctx, append(args, paths...)...)
	if err != nil {
		return nil, fmt.Errorf("nix path-info: %w", err)
	}
	return ParsePathInfo(out)
}

// Closure returns the closure of roots within infos, each path once, or an
// error naming a path infos lacks.
func Closure(infos map[string]PathInfo, roots ...string) ([]PathInfo, error) {
	seen := map[string]bool{}
	var out []PathInfo
	stack := append([]string(nil), roots...)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		info, ok := infos[p]
		if !ok {
			return nil, fmt.Errorf("no path information on %s, in the closure of %s", p, strings.Join(roots, " "))
		}
		out = append(out, info)
		stack = append(stack, info.References...)
	}
	return out, nil
}
