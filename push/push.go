// Package push copies a host's system closure to its target.
package push

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/serve"
	"github.com/deployctl/deployctl/internal/shell"
)

// Protocol is the store protocol `nix copy` speaks to a target.
type Protocol string

const (
	// SSHNG is ssh-ng://: the daemon protocol, with `nix-daemon --stdio`
	// on the target.
	SSHNG Protocol = "ssh-ng"
	// SSH is ssh://: the older `nix-store --serve --write` protocol.
	SSH Protocol = "ssh"
)

// NixCopy copies the closure of toplevel to the target on conn with
// `nix copy --to PROTOCOL://user@host`, which sends only the paths the
// target lacks. OpenSSH gets the same settings as deployctl's own
// connection (config file, port, options) through NIX_SSHOPTS, and a
// target user who is not root reaches the store through the privilege
// escalation command (the store's remote-program). The closure becomes the
// target's GC root Root as Native makes it.
func NixCopy(ctx context.Context, n *nix.CLI, conn *remote.Conn, sshConfigFile string, proto Protocol, toplevel string, opts Options) error {
	env, argv, err := NixCopyCommand(conn, sshConfigFile, proto, toplevel, opts.Substitute, conn.UsesHelper(ctx))
	if err != nil {
		return err
	}
	// A user who cannot become root registers its root once the copy is
	// complete (Nix takes a root to valid paths only), after nix copy's
	// session ended: a garbage collection in between would take what was
	// sent, and the next push would send it again. (The native push
	// registers it while its session holds the paths.)
	root := newRoot(ctx, conn, toplevel, Root)
	defer root.abandon()
	if _, err = n.Run(ctx, env, argv[0], argv[1:]...); err != nil {
		return withAdvice(fmt.Errorf("nix copy: %w", err))
	}
	return root.commit(func() {})
}

// NixCopyCommand is the nix copy command (and the variables it needs)
// that copies toplevel's closure to conn's target as NixCopy does, for
// NixCopy and for a person to run; helper says the target's store is
// reached through its deployctl-remote (Conn.UsesHelper).
func NixCopyCommand(conn *remote.Conn, sshConfigFile string, proto Protocol, toplevel string, substitute, helper bool) (env, argv []string, err error) {
	sshOpts, err := NixSSHOpts(conn.Endpoint(), sshConfigFile)
	if err != nil {
		return nil, nil, err
	}
	args := []string{"copy", "--no-check-sigs", "--to", StoreURL(conn, proto, helper)}
	if substitute {
		args = append(args, "--substitute-on-destination")
	}
	return []string{"NIX_SSHOPTS=" + sshOpts}, nix.NixArgs(append(args, "--", toplevel)...), nil
}

// StoreURL is the Nix store URL of conn's target for proto. When the store
// must be reached through privilege escalation, the URL carries the
// escalated remote-program (percent-encoded: Nix reads %20, not +): the
// host's deployctl-remote when helper says root steps go through it.
func StoreURL(conn *remote.Conn, proto Protocol, helper bool) string {
	u := string(proto) + "://" + conn.Endpoint().Destination()
	program := []string{"nix-daemon"}
	switch {
	case helper && proto == SSH:
		program = []string{remote.HelperPath, serve.Step.Name}
	case helper:
		program = []string{remote.HelperPath, daemonStep.Name}
	case proto == SSH:
		program = []string{"nix-store"}
	}
	if argv := conn.AsRoot(program...); len(argv) > len(program) {
		u += "?remote-program=" + strings.ReplaceAll(url.QueryEscape(shell.Join(argv)), "+", "%20")
	}
	return u
}

// daemonStep runs nix-daemon --stdio, the remote-program of Nix's ssh-ng://
// store, for nix copy through deployctl-remote.
var daemonStep = &remote.Step{
	Name: "daemon",
	Body: `[ "$*" = --stdio ] || { echo "daemon: unexpected arguments: $*" >&2; exit 64; }
exec nix-daemon --stdio`,
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
