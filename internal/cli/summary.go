package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deployctl/deployctl/internal/rollout"
)

// stepOf splits a host's error into the step it failed in and the message.
func stepOf(err error) (step, msg string) {
	var se *rollout.StepError
	if errors.As(err, &se) {
		step = se.Step
	}
	switch {
	case errors.Is(err, context.Canceled):
		return step, "interrupted"
	case se != nil:
		return step, se.Err.Error()
	}
	return step, err.Error()
}

// printSummary writes one line per host: ok with its system, skipped by a
// halted rollout, or failed with the step and the error (further lines of
// the error indented below).
func printSummary(w io.Writer, command string, outcomes []hostOutcome) {
	ok, skipped := 0, 0
	for _, o := range outcomes {
		switch {
		case o.OK:
			ok++
		case o.Skipped:
			skipped++
		}
	}
	fmt.Fprintf(w, "\n%s: %d of %d hosts ok", command, ok, len(outcomes))
	if skipped > 0 {
		fmt.Fprintf(w, ", %d skipped", skipped)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var details []string
	for _, o := range outcomes {
		dur := ""
		if o.Duration > 0 {
			dur = o.Duration.Round(10 * time.Millisecond).String()
		}
		if o.OK {
			fmt.Fprintf(tw, "  %s\tok\t%s\t%s\n", o.Host, dur, o.Toplevel)
			continue
		}
		if o.Skipped {
			fmt.Fprintf(tw, "  %s\tskipped\t\t%s: untouched\n", o.Host, o.Error)
			continue
		}
		first, rest, _ := strings.Cut(strings.TrimSpace(o.Error), "\n")
		fmt.Fprintf(tw, "  %s\tFAILED\t%s\t%s: %s\n", o.Host, dur, o.Step, first)
		if rest != "" {
			details = append(details, fmt.Sprintf("%s (%s):\n    %s", o.Host, o.Step, strings.ReplaceAll(rest, "\n", "\n    ")))
		}
	}
	tw.Flush()
	for _, d := range details {
		fmt.Fprintf(w, "\n%s\n", d)
	}
}
