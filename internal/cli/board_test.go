package cli

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/events"
)

// TestBoardLines: a line per host at work, in the order they started,
// with the step, its time, and a push's bytes and rate; a host leaves
// when its step ends; more than boardMax hosts (fewer on a short
// terminal) are
// counted on one line; closing takes the board off.
func TestBoardLines(t *testing.T) {
	var mu sync.Mutex
	var drawn [][]string
	set := func(lines []string) {
		mu.Lock()
		defer mu.Unlock()
		drawn = append(drawn, lines)
	}
	last := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return drawn[len(drawn)-1]
	}
	b := newBoard(set, 40, time.Hour)
	now := time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	b.event(events.Event{Type: events.Step, Host: "web-1", Step: "push", State: events.Started})
	b.event(events.Event{Type: events.Step, Host: "db", Step: "activate", State: events.Started})
	b.event(events.Event{Type: events.Progress, Host: "web-1", Step: "push", State: "sending", Paths: 3, PathsTotal: 40, Bytes: 40 << 20})
	b.sent("web-1", 10<<20)
	now = now.Add(2 * time.Second)
	b.draw()
	want := []string{
		"  web-1  push      2s  10.0 MiB of 40.0 MiB, 5.0 MiB/s",
		"  db     activate  2s",
	}
	if got := last(); !slices.Equal(got, want) {
		t.Errorf("board:\n%q\nwant\n%q", got, want)
	}
	b.event(events.Event{Type: events.Step, Host: "web-1", Step: "push", State: events.Done})
	if got := last(); !slices.Equal(got, []string{"  db  activate  2s"}) {
		t.Errorf("after web-1's push: %q", got)
	}
	b.event(events.Event{Type: events.Step, Host: "db-2", Step: "build", State: events.Started})
	for i := range 15 {
		b.event(events.Event{Type: events.Step, Host: "h" + string(rune('a'+i)), Step: "build", State: events.Started})
	}
	got := last()
	if len(got) != boardMax+1 || !strings.Contains(got[boardMax], "… and 7 more hosts at work") {
		t.Errorf("17 hosts at work: %d lines, the last %q", len(got), got[len(got)-1])
	}
	// A short terminal: fewer lines, the count still there.
	short := newBoard(func([]string) {}, 8, time.Hour)
	for i := range 6 {
		short.event(events.Event{Type: events.Step, Host: "s" + string(rune('a'+i)), Step: "push", State: events.Started})
	}
	if got := short.lines(); len(got) != 5 || !strings.Contains(got[4], "… and 2 more hosts at work") {
		t.Errorf("6 hosts on 8 rows: %q", got)
	}
	short.close()
	b.close()
	b.close()
	if got := last(); got != nil {
		t.Errorf("after close the board is %q", got)
	}
	b.event(events.Event{Type: events.Step, Host: "late", Step: "push", State: events.Started})
	if got := last(); got != nil {
		t.Errorf("a closed board drew again: %q", got)
	}
	var nilBoard *board
	nilBoard.sent("x", 1)
	nilBoard.close()
}
