package cli

import (
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// terminal reports whether human output goes to a terminal that can redraw
// a line (not TERM=dumb).
func (g *globals) terminal() bool {
	f, ok := g.inv.Stderr.(*os.File)
	if !ok || g.getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress returns a callback that draws a bar of done out of expected
// below the output, and a function that erases it; on anything but a
// terminal the callback is nil (each host's events are lines already).
func (g *globals) progress(what string, bytes bool) (func(done, expected int), func()) {
	if !g.terminal() {
		return nil, func() {}
	}
	g.handler.SetSize(g.termSize())
	w, clear := g.handler.Status()
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	update := func(done, expected int) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case expected <= 0:
			return
		case bar == nil:
			bar = progressbar.NewOptions(expected,
				progressbar.OptionSetWriter(w),
				progressbar.OptionSetDescription(what),
				progressbar.OptionShowCount(),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetElapsedTime(true),
				progressbar.OptionShowBytes(bytes),
				progressbar.OptionSetPredictTime(false))
		case int64(expected) != bar.GetMax64():
			bar.ChangeMax(expected)
		}
		bar.Set(done)
	}
	return update, clear
}

// byteBar is an overall bar of bytes sent by concurrent pushes, whose
// total grows as each host learns what it lacks. Its zero value is ready;
// it draws only on a terminal.
type byteBar struct {
	g        *globals
	once     sync.Once
	update   func(done, expected int)
	finish   func()
	mu       sync.Mutex
	done     int64
	expected int64
}

func (b *byteBar) init() {
	b.once.Do(func() { b.update, b.finish = b.g.progress("pushing", true) })
}

func (b *byteBar) expect(n int64) { b.add(0, n) }
func (b *byteBar) sent(n int64)   { b.add(n, 0) }

func (b *byteBar) add(done, expected int64) {
	b.init()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += done
	b.expected += expected
	if b.update != nil {
		b.update(int(b.done), int(b.expected))
	}
}

// close erases the bar, if it was drawn.
func (b *byteBar) close() {
	if b.finish != nil {
		b.finish()
	}
}

// countBar is an overall bar over several builds running at once (the
// chunks of --eval-chunk): each reports its own done and expected, and the
// bar shows their sums. Its zero value is ready; it draws only on a
// terminal.
type countBar struct {
	g      *globals
	once   sync.Once
	update func(done, expected int)
	finish func()
	mu     sync.Mutex
	parts  [][2]int
}

// part returns the progress callback of one more build, or nil when no bar
// is drawn.
func (b *countBar) part() func(done, expected int) {
	b.once.Do(func() { b.update, b.finish = b.g.progress("building", false) })
	if b.update == nil {
		return nil
	}
	b.mu.Lock()
	i := len(b.parts)
	b.parts = append(b.parts, [2]int{})
	b.mu.Unlock()
	return func(done, expected int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.parts[i] = [2]int{done, expected}
		var sum [2]int
		for _, p := range b.parts {
			sum[0] += p[0]
			sum[1] += p[1]
		}
		b.update(sum[0], sum[1])
	}
}

// close erases the bar, if it was drawn.
func (b *countBar) close() {
	if b.finish != nil {
		b.finish()
	}
}
