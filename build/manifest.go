package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/deployctl/deployctl/internal/nix"
)

// ManifestVersion is the version of the manifest format this code writes
// and reads.
const ManifestVersion = 1

// Manifest records what a build produced: for each host, its system
// closure and where it lives, and the deployment options push and
// activate need, so that they can run later, elsewhere, without evaluating.
type Manifest struct {
	Version   int                      `json:"version"`
	Deployctl string                   `json:"deployctl"`
	Created   time.Time                `json:"created"`
	Flake     FlakeInfo                `json:"flake"`
	Hosts     map[string]*ManifestHost `json:"hosts"`
	// Builders are the machines, other than the hosts themselves, that
	// hold systems (a host's builtOn names one), and how to reach them.
	Builders map[string]Builder `json:"builders,omitempty"`
}

// Builder is how to reach a build machine over SSH; empty fields leave it
// to the SSH configuration.
type Builder struct {
	Host       string   `json:"host"`
	Port       int      `json:"port,omitempty"`
	User       string   `json:"user,omitempty"`
	SSHOptions []string `json:"sshOptions,omitempty"`
	// Escalation is the privilege escalation command used when User is
	// not root.
	Escalation []string `json:"privilegeEscalationCommand,omitempty"`
}

// FlakeInfo is the flake a manifest was built from.
type FlakeInfo struct {
	// Ref is the reference as the user gave it (after a plain directory
	// became path:DIR).
	Ref string `json:"ref"`
	// URL is the locked reference; Revision the git revision, if any.
	URL      string `json:"url,omitempty"`
	Revision string `json:"revision,omitempty"`
}

// ManifestHost is one host's entry.
type ManifestHost struct {
	Toplevel string `json:"toplevel,omitempty"`
	DrvPath  string `json:"drvPath,omitempty"`
	// BuiltOn is "local", "target", or the builder's name.
	BuiltOn      string `json:"builtOn,omitempty"`
	ClosurePaths int    `json:"closurePaths,omitempty"`
	NarSize      int64  `json:"narSize,omitempty"`
	// Deployment is the host's config.deployment as evaluated.
	Deployment json.RawMessage `json:"deployment"`
	// Step and Error say why a host has no toplevel.
	Step  string `json:"step,omitempty"`
	Error string `json:"error,omitempty"`
}

// Names returns the manifest's host names in order.
func (m *Manifest) Names() []string {
	names := make([]string, 0, len(m.Hosts))
	for n := range m.Hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// WriteManifest writes m to path atomically (a temporary file renamed into
// place), so a reader never sees half a manifest.
func WriteManifest(path string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".manifest-*")
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// ReadManifest reads and checks a manifest.
func ReadManifest(r io.Reader) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(r)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("read manifest: version %d, but this deployctl reads version %d", m.Version, ManifestVersion)
	}
	if len(m.Hosts) == 0 {
		return nil, errors.New("read manifest: it lists no hosts")
	}
	for name, h := range m.Hosts {
		if h == nil {
			return nil, fmt.Errorf("read manifest: host %s: empty entry", name)
		}
		if h.Error == "" && !strings.HasPrefix(h.Toplevel, "/") {
			return nil, fmt.Errorf("read manifest: host %s: no toplevel and no error", name)
		}
	}
	return &m, nil
}

// ResolveFlake asks Nix for the locked URL and revision of ref, without
// evaluating it.
func ResolveFlake(ctx context.Context, n *nix.CLI, ref string) (FlakeInfo, error) {
	out, err := n.Nix(ctx, "flake", "metadata", "--json", ref)
	if err != nil {
		return FlakeInfo{}, fmt.Errorf("flake metadata %s: %w", ref, err)
	}
	var md struct {
		URL      string `json:"url"`
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		return FlakeInfo{}, fmt.Errorf("flake metadata %s: %w", ref, err)
	}
	return FlakeInfo{Ref: ref, URL: md.URL, Revision: md.Revision}, nil
}

// ClosureStats is the size of one closure.
type ClosureStats struct {
	Paths   int
	NarSize int64
}

// Closures measures the closure of each toplevel with one `nix path-info
// --recursive` call for all of them.
func Closures(ctx context.Context, n *nix.CLI, toplevels []string) (map[string]ClosureStats, error) {
	if len(toplevels) == 0 {
		return nil, nil
	}
	infos, err := n.PathInfos(ctx, false, toplevels...)
	if err != nil {
		return nil, err
	}
	stats := map[string]ClosureStats{}
	for _, top := range toplevels {
		closure, err := nix.Closure(infos, top)
		if err != nil {
			return nil, fmt.Errorf("nix path-info: %w", err)
		}
		var st ClosureStats
		for _, info := range closure {
			st.Paths++
			st.NarSize += info.NarSize
		}
		stats[top] = st
	}
	return stats, nil
}

// HoldRoots makes every one of paths a garbage-collector root through links
// in dir (named hold, hold-2, …), with one nix-store call. Removing dir
// releases them.
func HoldRoots(ctx context.Context, n *nix.CLI, dir string, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	paths = slices.Compact(slices.Sorted(slices.Values(paths)))
	args := append([]string{"--realise", "--add-root", filepath.Join(dir, "hold"), "--indirect"}, paths...)
	if _, err := n.Run(ctx, nil, "nix-store", args...); err != nil {
		return fmt.Errorf("gc roots: %w", err)
	}
	return nil
}

// AddRoots makes each host's toplevel a garbage-collector root through a
// link dir/result-HOST (as nix-build's result), so that it survives until
// pushed. Removing a link releases its root.
func AddRoots(ctx context.Context, n *nix.CLI, dir string, toplevels map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gc roots: %w", err)
	}
	hosts := make([]string, 0, len(toplevels))
	for h := range toplevels {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		link := filepath.Join(dir, "result-"+h)
		if _, err := n.Run(ctx, nil, "nix-store", "--realise", "--add-root", link, "--indirect", toplevels[h]); err != nil {
			return fmt.Errorf("gc root for %s: %w", h, err)
		}
	}
	return nil
}
