// Package push copies a host's system closure to its target.
package push

import (
	"context"
	"fmt"
	"strings"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
)

// NixCopy copies the closure of toplevel to the target with
// `nix copy --to ssh://user@host`, which sends only the paths the target
// lacks. OpenSSH gets the same settings as deployctl's own connection
// (config file, port, options) through NIX_SSHOPTS.
func NixCopy(ctx context.Context, n *nix.CLI, ep *remote.Endpoint, sshConfigFile, toplevel string, opts Options) error {
	sshOpts, err := NixSSHOpts(ep, sshConfigFile)
	if err != nil {
		return err
	}
	env := []string{"NIX_SSHOPTS=" + sshOpts}
	args := []string{"copy", "--no-check-sigs", "--to", "ssh://" + ep.Destination()}
	if opts.Substitute {
		args = append(args, "--substitute-on-destination")
	}
	args = nix.NixArgs(append(args, "--", toplevel)...)[1:]
	if _, err = n.Run(ctx, env, "nix", args...); err != nil {
		return fmt.Errorf("nix copy: %w", err)
	}
	return nil
}

// NixSSHOpts is the NIX_SSHOPTS value that makes OpenSSH connect as
// deployctl does, or an error when an argument cannot be carried in it.
// Callers check it before a run starts, so no host is left half-done.
func NixSSHOpts(ep *remote.Endpoint, sshConfigFile string) (string, error) {
	opts := ep.OpenSSHArgs(sshConfigFile)
	for _, o := range opts {
		if strings.ContainsAny(o, " \t\n") {
			return "", fmt.Errorf("nix copy cannot pass the ssh argument %q: Nix splits NIX_SSHOPTS on white space", o)
		}
	}
	return strings.Join(opts, " "), nil
}
