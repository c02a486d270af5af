package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// notBuilt is a command whose phase does not exist yet. It says so and
// fails rather than pretending.
func notBuilt(use, short, why string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short + " (not built yet)",
		Long:  short + ".\n\nNot built yet: " + why,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return fmt.Errorf("%s is not built yet: %s", cmd.Name(), why)
		},
	}
}

func newRollbackCommand(*globals) *cobra.Command {
	return notBuilt("rollback [SELECTORS…]", "Put hosts back on the system that ran before the last deploy",
		"rollback needs the per-host deploy journal of the activate phase")
}

func newStatusCommand(*globals) *cobra.Command {
	return notBuilt("status [SELECTORS…]", "Show what each host runs and what deployctl last did there",
		"status needs the per-host deploy journal of the activate phase")
}
