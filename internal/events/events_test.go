package events

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// TestStreamWritesOneObjectPerLine: events from many goroutines come out
// as whole lines, each a JSON object with the version; a nil stream drops
// them.
func TestStreamWritesOneObjectPerLine(t *testing.T) {
	var buf bytes.Buffer
	s := NewStream(&buf)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Emit(Event{Type: Step, Host: "h", Step: "push", State: Started})
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 50 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["v"] != 1.0 || e["type"] != "step" || e["time"] == "" {
			t.Errorf("line %q: %v", l, err)
		}
		if _, ok := e["bytes"]; ok {
			t.Errorf("an empty field is written: %s", l)
		}
	}
	var none *Stream
	none.Emit(Event{Type: Summary})
}
