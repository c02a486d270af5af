package cli

import (
	"context"
	"errors"
	"fmt"
)

const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitPartial     = 3
	exitInterrupted = 130
)

// usageError is bad input: flags, selectors, deployment options. Nothing
// was done on any host.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// hostsFailedError is a command over hosts where some failed; each failure
// has already been reported in the summary.
type hostsFailedError struct{ failed, total int }

func (e *hostsFailedError) Error() string {
	return fmt.Sprintf("%d of %d hosts failed", e.failed, e.total)
}

// isReported says whether err's message was already shown to the user.
func isReported(err error) bool {
	var hf *hostsFailedError
	return errors.As(err, &hf)
}

// exitCodes maps errors to exit codes: the first match wins.
var exitCodes = []struct {
	match func(error) bool
	code  int
}{
	{func(err error) bool { return errors.Is(err, context.Canceled) }, exitInterrupted},
	{func(err error) bool { var u usageError; return errors.As(err, &u) }, exitUsage},
	{func(err error) bool {
		var hf *hostsFailedError
		return errors.As(err, &hf) && hf.failed < hf.total
	}, exitPartial},
}

func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	if ctx.Err() != nil {
		return exitInterrupted
	}
	for _, e := range exitCodes {
		if e.match(err) {
			return e.code
		}
	}
	return exitFailure
}
