package rollout

import (
	"context"
	"errors"
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
