// Package report renders what deployctl does for people: plain lines, one
// per event, prefixed with the host they concern.
package report

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/deployctl/deployctl/internal/lines"
)

// Handler is a slog.Handler writing one line per record:
//
//	[host] message key=value …
//
// "exec" records (a command deployctl runs) are written as "[host] + CMD",
// a line that can be pasted into a shell. Warnings and errors say so.
type Handler struct {
	out   *output
	level slog.Leveler
	attrs []slog.Attr
}

// output is the writer the handler and its line writers share, with the
// status line drawn below the records on a terminal.
type output struct {
	mu     sync.Mutex
	w      io.Writer
	status string
}

// writeLine writes one complete line, keeping the status line below it.
func (o *output) writeLine(line string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status != "" {
		line = clearLine + line + o.status
	}
	_, err := io.WriteString(o.w, line)
	return err
}

// clearLine returns a terminal's cursor to the start of its line and
// erases it.
const clearLine = "\r\x1b[K"

// NewHandler returns a Handler writing records at level or above to w.
func NewHandler(w io.Writer, level slog.Leveler) *Handler {
	return &Handler{out: &output{w: w}, level: level}
}

// Status returns a writer for a status line that stays below the records,
// as a progress bar draws it ("\r" then the line, no newline), and a
// function that erases it for good. For terminals only.
func (h *Handler) Status() (io.Writer, func()) {
	return statusWriter{h.out}, func() {
		h.out.mu.Lock()
		defer h.out.mu.Unlock()
		if h.out.status != "" {
			io.WriteString(h.out.w, clearLine)
			h.out.status = ""
		}
	}
}

type statusWriter struct{ o *output }

func (s statusWriter) Write(p []byte) (int, error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	line := string(p)
	if i := strings.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	s.o.status = line
	_, err := io.WriteString(s.o.w, clearLine+line)
	return len(p), err
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), attrs...)
	return &c
}

// WithGroup is not used by deployctl; groups are flattened.
func (h *Handler) WithGroup(string) slog.Handler { return h }

func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	host := ""
	var cmd string
	var rest []string
	add := func(a slog.Attr) bool {
		switch a.Key {
		case "host":
			host = a.Value.String()
		case "cmd":
			cmd = a.Value.String()
		default:
			v := a.Value.String()
			if v == "" || strings.ContainsAny(v, " \t\"") {
				v = fmt.Sprintf("%q", v)
			}
			rest = append(rest, a.Key+"="+v)
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	var b strings.Builder
	if host != "" {
		b.WriteString("[" + host + "] ")
	}
	switch {
	case r.Message == "exec" && cmd != "":
		b.WriteString("+ " + cmd)
	default:
		if r.Level >= slog.LevelError {
			b.WriteString("error: ")
		} else if r.Level >= slog.LevelWarn {
			b.WriteString("warning: ")
		}
		b.WriteString(r.Message)
		if cmd != "" {
			rest = append([]string{"cmd=" + fmt.Sprintf("%q", cmd)}, rest...)
		}
		for _, kv := range rest {
			b.WriteString(" " + kv)
		}
	}
	b.WriteString("\n")
	return h.out.writeLine(b.String())
}

// Lines returns a writer that writes each complete line written to it as
// "[host] line", between the handler's records, for streaming a remote
// command's output; Close writes out a last line that had no newline.
func (h *Handler) Lines(host string) io.WriteCloser {
	prefix := "[" + host + "] "
	return lines.NewWriter(func(line string) {
		h.out.writeLine(prefix + strings.TrimRight(line, "\r") + "\n")
	})
}
