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
// With color, the results are green, yellow and red (the codes all of
// one length, so the columns stay aligned).
func printSummary(w io.Writer, command string, outcomes []hostOutcome, color bool) {
	paint := func(code, s string) string {
		if !color {
			return s
		}
		return "\x1b[" + code + "m" + s + "\x1b[0m"
	}
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
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Host, paint("32", "ok"), dur, o.Toplevel)
			continue
		}
		if o.Skipped {
			fmt.Fprintf(tw, "  %s\t%s\t\t%s: untouched\n", o.Host, paint("33", "skipped"), o.Error)
			continue
		}
		first, rest, _ := strings.Cut(strings.TrimSpace(o.Error), "\n")
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s: %s\n", o.Host, paint("31", "FAILED"), dur, o.Step, first)
		if rest != "" {
			details = append(details, fmt.Sprintf("%s (%s):\n    %s", o.Host, o.Step, strings.ReplaceAll(rest, "\n", "\n    ")))
		}
	}
	tw.Flush()
	for _, d := range details {
		fmt.Fprintf(w, "\n%s\n", d)
	}
}
