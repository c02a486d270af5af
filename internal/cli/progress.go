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
func (g *globals) progress(what string) (func(done, expected int), func()) {
	if !g.terminal() {
		return nil, func() {}
	}
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
				progressbar.OptionSetPredictTime(false))
		case int64(expected) != bar.GetMax64():
			bar.ChangeMax(expected)
		}
		bar.Set(done)
	}
	return update, clear
}
