package cli

import (
	"context"

	"github.com/spf13/cobra"
)

type uploadKeysOptions struct{ selection }

func newUploadKeysCommand(g *globals) *cobra.Command {
	var opts uploadKeysOptions
	cmd := &cobra.Command{
		Use:   "upload-keys [SELECTORS…|--all]",
		Short: "Upload the selected hosts' keys (deployment.keys) without deploying",
		Long: `Upload every key of deployment.keys (Colmena's shape: text, keyFile or
keyCommand; destDir, name, user, group, permissions) to each selected host,
whatever its uploadAt. Each key is read here into memory (a keyCommand's
output, a keyFile's content) and streamed over the host's SSH session into
a file that only root can read until it has its owner and then its mode,
renamed into place: it is never in a command line, a Nix store or a file on
this machine. A key whose owner does not exist on the host is an error.
deploy and activate upload keys too: pre-activation ones before the switch,
post-activation ones after it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUploadKeys(cmd.Context(), g, opts, args)
		},
	}
	opts.register(cmd, true)
	return cmd
}

func runUploadKeys(ctx context.Context, g *globals, opts uploadKeysOptions, args []string) error {
	p, specs, err := g.hostsWithSpecs(ctx, args, opts.selection)
	if err != nil {
		return err
	}
	step := g.keysStep(specs)
	return g.runHosts(ctx, "upload-keys", p, nil, step)
}
