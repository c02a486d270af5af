package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestEachLimitsParallelismAndKeepsGoing(t *testing.T) {
	var running, peak atomic.Int32
	hosts := []string{"a", "b", "c", "d", "e"}
	res := Each(context.Background(), hosts, 2, func(ctx context.Context, h string) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
		if h == "b" {
			return Step("push", errors.New("boom"))
		}
		return nil
	})
	if peak.Load() != 2 {
		t.Errorf("peak parallelism %d, want 2", peak.Load())
	}
	for i, r := range res {
		if r.Host != hosts[i] {
			t.Errorf("result %d is %s, want %s", i, r.Host, hosts[i])
		}
		if (r.Err != nil) != (r.Host == "b") {
			t.Errorf("%s: err %v", r.Host, r.Err)
		}
	}
	var se *StepError
	if !errors.As(res[1].Err, &se) || se.Step != "push" || res[1].Err.Error() != "push: boom" {
		t.Errorf("b's error = %v, want a push StepError", res[1].Err)
	}
}

func TestEachCancelledSkipsUnstarted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	res := Each(ctx, []string{"a", "b", "c"}, 1, func(ctx context.Context, h string) error {
		cancel()
		return nil
	})
	if res[0].Err != nil || !errors.Is(res[2].Err, context.Canceled) {
		t.Errorf("results after cancel: %+v", res)
	}
}

func TestWaves(t *testing.T) {
	hosts := []string{"a", "b", "c", "d", "e", "f"}
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{}, "[[a b c d e f]]"},
		{Options{Canary: 1}, "[[a] [b c d e f]]"},
		{Options{Canary: 1, WaveSize: 2}, "[[a] [b c] [d e] [f]]"},
		{Options{WaveSize: 4}, "[[a b c d] [e f]]"},
		{Options{Canary: 9}, "[[a b c d e f]]"},
	} {
		if got := fmt.Sprint(Waves(hosts, c.opts)); got != c.want {
			t.Errorf("%+v: %s, want %s", c.opts, got, c.want)
		}
	}
}

// TestRunHalts: a failed canary stops every other host from starting; in
// waves, more failures than allowed stop the next waves, and the hosts
// never started are skipped with the reason.
func TestRunHalts(t *testing.T) {
	hosts := []string{"a", "b", "c", "d", "e"}
	var started sync.Map
	fail := func(bad ...string) func(ctx context.Context, h string) error {
		started.Clear()
		return func(ctx context.Context, h string) error {
			started.Store(h, true)
			if slices.Contains(bad, h) {
				return errors.New("unhealthy")
			}
			return nil
		}
	}
	outcome := func(res []Result) string {
		var b strings.Builder
		for _, r := range res {
			var se *SkippedError
			_, ran := started.Load(r.Host)
			switch {
			case errors.As(r.Err, &se) && !ran:
				b.WriteString("s")
			case r.Err != nil && ran:
				b.WriteString("F")
			case r.Err == nil && ran:
				b.WriteString(".")
			default:
				b.WriteString("?")
			}
		}
		return b.String()
	}
	ctx := context.Background()
	for _, c := range []struct {
		opts Options
		bad  []string
		want string
	}{
		{Options{Parallel: 3, Canary: 1, MaxFailures: NoLimit}, []string{"a"}, "Fssss"},
		{Options{Parallel: 3, Canary: 1, MaxFailures: 0}, []string{"a"}, "Fssss"},
		{Options{Parallel: 3, Canary: 1, MaxFailures: NoLimit}, []string{"b", "c"}, ".FF.."},
		{Options{Parallel: 1, Canary: 1, WaveSize: 2, MaxFailures: 1}, []string{"b", "c"}, ".FFss"},
		{Options{Parallel: 1, Canary: 1, WaveSize: 2, MaxFailures: 1}, []string{"b"}, ".F..."},
		{Options{Parallel: 1, MaxFailures: 0}, []string{"c"}, "..Fss"},
	} {
		res := Run(ctx, hosts, c.opts, fail(c.bad...))
		if got := outcome(res); got != c.want {
			t.Errorf("%+v with %v failing: %s, want %s", c.opts, c.bad, got, c.want)
		}
	}
	res := Run(ctx, hosts, Options{Parallel: 1, Canary: 1, WaveSize: 2, MaxFailures: 1}, fail("b", "c"))
	if got := res[3].Err.Error(); got != "skipped: the rollout halted: 2 failed, more than the 1 allowed" {
		t.Errorf("the skipped host's reason: %q", got)
	}
	res = Run(ctx, hosts, Options{Parallel: 1, Canary: 1, MaxFailures: NoLimit}, fail("a"))
	if got := res[1].Err.Error(); got != "skipped: the rollout halted: a canary failed" {
		t.Errorf("the skipped host's reason: %q", got)
	}
}
