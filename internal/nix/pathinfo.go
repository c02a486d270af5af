package nix

import (
	"encoding/json"
	"fmt"
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
	// RegistrationTime and Ultimate are kept so a copy registers the path
	// as the source store has it.
	RegistrationTime int64 `json:"registrationTime"`
	Ultimate         bool  `json:"ultimate"`
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
