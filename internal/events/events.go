// Package events is the stream of what a run does to each host, as
// newline-delimited JSON (--json): its schema is docs/events.md.
package events

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Version is the events' schema version.
const Version = 1

// Types of event.
const (
	// Step is a host's step starting, done, failed or skipped.
	Step = "step"
	// Progress is how much a step has to do, or has done.
	Progress = "progress"
	// Summary is the run's outcome, always the last event.
	Summary = "summary"
)

// States of a step.
const (
	Started = "started"
	Done    = "done"
	Failed  = "failed"
	Skipped = "skipped"
)

// Event is one line of the stream.
type Event struct {
	V    int       `json:"v"`
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	Host string    `json:"host,omitempty"`
	Step string    `json:"step,omitempty"`
	// State is a Step event's.
	State string `json:"state,omitempty"`
	// Paths of PathsTotal, Bytes: a Progress event's (and a done push's).
	Paths      int   `json:"paths,omitempty"`
	PathsTotal int   `json:"pathsTotal,omitempty"`
	Bytes      int64 `json:"bytes,omitempty"`
	// DurationMs is a finished step's.
	DurationMs int64  `json:"durationMs,omitempty"`
	Toplevel   string `json:"toplevel,omitempty"`
	Error      string `json:"error,omitempty"`
	// Command and Hosts are the Summary's.
	Command string `json:"command,omitempty"`
	Hosts   any    `json:"hosts,omitempty"`
}

// Stream writes events, one JSON object per line, and hands them to its
// listeners; a nil Stream drops them. It is safe for concurrent use.
type Stream struct {
	mu        sync.Mutex
	enc       *json.Encoder
	listeners []func(Event)
	now       func() time.Time
	n         int
}

// NewStream writes events to w (nil: to its listeners only).
func NewStream(w io.Writer) *Stream {
	s := &Stream{now: time.Now}
	if w != nil {
		s.enc = json.NewEncoder(w)
	}
	return s
}

// Listen hands f every event from now on, in order, one at a time.
func (s *Stream) Listen(f func(Event)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, f)
}

// Emit writes e, with its version and time set.
func (s *Stream) Emit(e Event) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e.V = Version
	if e.Time.IsZero() {
		e.Time = s.now().UTC()
	}
	s.n++
	if s.enc != nil {
		_ = s.enc.Encode(e)
	}
	for _, f := range s.listeners {
		f(e)
	}
}

// Started says whether any event was written.
func (s *Stream) Started() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n > 0
}
