package cli

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/deployctl/deployctl/internal/events"
)

// board is, on a terminal, one live line per host at work, drawn below the
// output and redrawn in place: the host, its step, for a push how much of
// what it lacks has gone and at what rate, and how long the step has run.
// A host's line goes when its step ends (the output has a permanent line
// for that). It follows the run's events, and a push's bytes as they go.
type board struct {
	set func(lines []string)
	// most is how many hosts' lines it shows, at most boardMax and fewer
	// on a short terminal (the bar and a row of output need room too).
	most int
	now  func() time.Time

	mu    sync.Mutex
	hosts map[string]*boardHost
	order []string // the hosts on the board, in the order they came
	stop  chan struct{}
	done  chan struct{}
	// closed is set once the board is off the screen for good.
	closed bool
	// drawn is when the board was last drawn.
	drawn time.Time
}

// boardHost is one host's line.
type boardHost struct {
	step  string
	since time.Time
	// total and sent are a push's bytes to send and sent so far, since
	// sending.
	total, sent int64
	sending     time.Time
}

// boardMax is how many hosts' lines the board shows at most; more are
// counted on one line.
const boardMax = 10

// newBoard returns a board drawing through set on a terminal of height
// rows (the output cuts each line to the width), redrawn every period so
// that times and rates move.
func newBoard(set func([]string), height int, period time.Duration) *board {
	most := min(boardMax, max(height-4, 1))
	b := &board{set: set, most: most, now: time.Now, hosts: map[string]*boardHost{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.draw()
			}
		}
	}()
	return b
}

// event follows the run's events.
func (b *board) event(e events.Event) {
	if e.Host == "" {
		return
	}
	b.mu.Lock()
	switch {
	case e.Type == events.Step && e.State == events.Started:
		if b.hosts[e.Host] == nil {
			b.order = append(b.order, e.Host)
		}
		b.hosts[e.Host] = &boardHost{step: e.Step, since: b.now()}
	case e.Type == events.Step:
		delete(b.hosts, e.Host)
		b.order = slices.DeleteFunc(b.order, func(h string) bool { return h == e.Host })
	case e.Type == events.Progress && e.State == "sending":
		if h := b.hosts[e.Host]; h != nil {
			h.total, h.sending = e.Bytes, b.now()
		}
	default:
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.draw()
}

// sent counts n more bytes pushed to host. A nil board ignores it.
func (b *board) sent(host string, n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.hosts[host]; h != nil {
		h.sent += n
	}
	if now := b.now(); now.Sub(b.drawn) >= 100*time.Millisecond && !b.closed {
		b.set(b.lines())
	}
}

// draw draws the board as it is now.
func (b *board) draw() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.set(b.lines())
	}
}

// lines is the board's text, as it is drawn now; b.mu is held.
func (b *board) lines() []string {
	b.drawn = b.now()
	if len(b.order) == 0 {
		return nil
	}
	nameWidth, stepWidth := 0, 0
	for _, name := range b.order {
		nameWidth = max(nameWidth, utf8.RuneCountInString(name))
		stepWidth = max(stepWidth, len(b.hosts[name].step))
	}
	now := b.now()
	var out []string
	for i, name := range b.order {
		if i == b.most && len(b.order) > b.most+1 {
			out = append(out, fmt.Sprintf("  … and %d more hosts at work", len(b.order)-b.most))
			break
		}
		h := b.hosts[name]
		took := now.Sub(h.since)
		line := fmt.Sprintf("  %-*s  %-*s  %s", nameWidth, name, stepWidth, h.step, took.Truncate(time.Second))
		if h.total > 0 {
			line += fmt.Sprintf("  %s of %s", humanBytes(h.sent), humanBytes(h.total))
			line += rate(h.sent, now.Sub(h.sending))
		}
		out = append(out, line)
	}
	return out
}

// close stops the board and takes it off the screen. A nil board does
// nothing; closing twice is allowed.
func (b *board) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.stop)
	b.set(nil)
	b.mu.Unlock()
	<-b.done
}

// startBoard puts a board on the terminal for the run, following its
// events (a stream with no JSON output is made for it when --json is
// not given). Off a terminal it returns nil.
func (g *globals) startBoard() *board {
	if !g.terminal() {
		return nil
	}
	if g.events == nil {
		g.events = events.NewStream(nil)
	}
	width, height := g.termSize()
	g.handler.SetSize(width, height)
	b := newBoard(g.handler.SetBoard, height, 500*time.Millisecond)
	g.events.Listen(b.event)
	return b
}

// termSize is the width and height of the terminal human output goes
// to, 80×24 when it cannot be told.
func (g *globals) termSize() (width, height int) {
	if f, ok := g.inv.Stderr.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 && ws.Row > 0 {
			return int(ws.Col), int(ws.Row)
		}
	}
	return 80, 24
}
