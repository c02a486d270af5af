// Package rollout runs per-host work across a fleet under a parallelism
// limit, one host's failure never stopping the others.
package rollout

import (
	"context"
	"errors"
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

// Each runs fn for every host, at most parallel at once, and returns the
// results in the order of hosts. Hosts not started when ctx ends fail with
// ctx's error.
func Each(ctx context.Context, hosts []string, parallel int, fn func(ctx context.Context, host string) error) []Result {
	if parallel < 1 {
		parallel = 1
	}
	sem := semaphore.NewWeighted(int64(parallel))
	results := make([]Result, len(hosts))
	done := make(chan struct{}, len(hosts))
	for i, h := range hosts {
		results[i].Host = h
		if err := sem.Acquire(ctx, 1); err != nil {
			results[i].Err = err
			done <- struct{}{}
			continue
		}
		go func(i int, h string) {
			defer sem.Release(1)
			start := time.Now()
			results[i].Err = fn(ctx, h)
			results[i].Duration = time.Since(start)
			done <- struct{}{}
		}(i, h)
	}
	for range hosts {
		<-done
	}
	return results
}
