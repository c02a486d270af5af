// Package rollout runs per-host work across a fleet: under a parallelism
// limit, in canary and waves when asked, halting when too many fail.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// StepError is a host's failure in a named step (connect, push, activate…).
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Step wraps err (when not nil) as a failure of step.
func Step(step string, err error) error {
	if err == nil {
		return nil
	}
	var se *StepError
	if errors.As(err, &se) {
		return err
	}
	return &StepError{Step: step, Err: err}
}

// Result is one host's outcome.
type Result struct {
	Host     string
	Err      error
	Duration time.Duration
}

// SkippedError is a host the rollout never started because it halted.
type SkippedError struct{ Reason string }

func (e *SkippedError) Error() string { return "skipped: " + e.Reason }

// Options shape a rollout.
type Options struct {
	// Parallel is how many hosts run at once.
	Parallel int
	// Canary hosts (the first ones) run first, and must all succeed
	// before any other host starts.
	Canary int
	// WaveSize splits the hosts after the canaries into waves run one
	// after the other; 0 runs them as one wave.
	WaveSize int
	// MaxFailures halts the rollout once more hosts than this have
	// failed: no further host starts (those running finish). NoLimit
	// never halts.
	MaxFailures int
}

// NoLimit is MaxFailures for a rollout that never halts.
const NoLimit = -1

// Waves splits hosts as opts say: the canaries, then waves of WaveSize.
func Waves(hosts []string, opts Options) [][]string {
	var waves [][]string
	rest := hosts
	if c := min(opts.Canary, len(rest)); c > 0 {
		waves, rest = append(waves, rest[:c]), rest[c:]
	}
	size := opts.WaveSize
	if size <= 0 {
		size = len(rest)
	}
	for len(rest) > 0 {
		n := min(size, len(rest))
		waves, rest = append(waves, rest[:n]), rest[n:]
	}
	return waves
}

// Each runs fn for every host, at most parallel at once, one host's
// failure never stopping the others, and returns the results in the order
// of hosts. Hosts not started when ctx ends fail with ctx's error.
func Each(ctx context.Context, hosts []string, parallel int, fn func(ctx context.Context, host string) error) []Result {
	return Run(ctx, hosts, Options{Parallel: parallel, MaxFailures: NoLimit}, fn)
}

// Run runs fn for every host in waves (Waves), each wave at most
// opts.Parallel at once and finished before the next starts, and returns
// the results in the order of hosts. A failed canary, or more failures
// than opts.MaxFailures, halts the rollout: hosts not started then fail
// with a *SkippedError. Hosts not started when ctx ends fail with ctx's
// error.
func Run(ctx context.Context, hosts []string, opts Options, fn func(ctx context.Context, host string) error) []Result {
	parallel := max(opts.Parallel, 1)
	results := make([]Result, len(hosts))
	index := map[string]int{}
	for i, h := range hosts {
		results[i].Host = h
		index[h] = i
	}
	var mu sync.Mutex
	failed := 0
	var halt string // why the rollout halted; "" while it runs
	for w, wave := range Waves(hosts, opts) {
		sem := semaphore.NewWeighted(int64(parallel))
		var wg sync.WaitGroup
		for _, h := range wave {
			i := index[h]
			if err := sem.Acquire(ctx, 1); err != nil {
				results[i].Err = err
				continue
			}
			mu.Lock()
			reason := halt
			mu.Unlock()
			if reason != "" {
				sem.Release(1)
				results[i].Err = &SkippedError{Reason: reason}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer sem.Release(1)
				start := time.Now()
				err := fn(ctx, h)
				mu.Lock()
				defer mu.Unlock()
				results[i].Err, results[i].Duration = err, time.Since(start)
				if err == nil || ctx.Err() != nil {
					return
				}
				failed++
				switch {
				case halt != "":
				case w == 0 && opts.Canary > 0:
					halt = "the rollout halted: a canary failed"
				case opts.MaxFailures != NoLimit && failed > opts.MaxFailures:
					halt = fmt.Sprintf("the rollout halted: %d failed, more than the %d allowed", failed, opts.MaxFailures)
				}
			}()
		}
		wg.Wait()
	}
	return results
}
