package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/keys"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/serve"
	"github.com/deployctl/deployctl/push"
)

func newRemoteHelperCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remote-helper",
		Short: "Print deployctl-remote, which lets one sudo rule allow all deployctl runs as root",
		Long: `Print deployctl-remote: a POSIX sh program holding every step deployctl runs
as root on a host (the store write, the lock, the switch and rollback jobs,
the journal, key upload, GC roots), each chosen by name with its arguments
checked, and none taking code to run; it sets its own PATH.

Installed on a host as ` + remote.HelperPath + ` (root's, mode 0555), it
lets a deploy user who is not root have one sudo rule:

    deploy ALL=(root) NOPASSWD: ` + remote.HelperPath + `

deployctl looks for it on each connection as such a user, and uses it when
it speaks the same protocol; elsewhere it sends each step's script through
"sudo sh -c" (or the one command a step is). The NixOS module installs it with deployment.deployUser.
Anyone who may run it can make any closure the running system: the user
is root's equal, and the rule keeps its sudo use to deployctl's steps,
which the sudo log then shows by name.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := io.WriteString(g.inv.Stdout, RemoteHelper())
			return err
		},
	}
}

// RemoteHelper is the program deployctl-remote: every step deployctl runs as
// root on a host.
func RemoteHelper() string { return remote.Helper(remoteSteps()) }

// remoteSteps are the steps of every phase.
func remoteSteps() []*remote.Step {
	var steps []*remote.Step
	steps = append(steps, build.Steps()...)
	steps = append(steps, push.Steps()...)
	steps = append(steps, serve.Step)
	steps = append(steps, activate.Steps()...)
	steps = append(steps, keys.Steps()...)
	return steps
}
