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
)

// Handler is a slog.Handler writing one line per record:
//
//	[host] message key=value …
//
// "exec" records (a command deployctl runs) are written as "[host] + CMD",
// a line that can be pasted into a shell. Warnings and errors say so.
type Handler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Leveler
	attrs []slog.Attr
}

// NewHandler returns a Handler writing records at level or above to w.
func NewHandler(w io.Writer, level slog.Leveler) *Handler {
	return &Handler{mu: &sync.Mutex{}, w: w, level: level}
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
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// Lines returns a writer that writes each complete line written to it as
// "[host] line", between the handler's records, for streaming a remote
// command's output.
func (h *Handler) Lines(host string) io.WriteCloser {
	return &lineWriter{w: h.w, mu: h.mu, prefix: "[" + host + "] "}
}

// lineWriter may be written from several goroutines at once (a remote
// command's stdout and stderr are copied separately): bufMu guards buf, mu
// (the handler's) the output.
type lineWriter struct {
	w      io.Writer
	mu     *sync.Mutex
	prefix string
	bufMu  sync.Mutex
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.bufMu.Lock()
	defer l.bufMu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.emit(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineWriter) emit(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, l.prefix+strings.TrimRight(line, "\r")+"\n")
}

// Close writes out a last line that had no newline.
func (l *lineWriter) Close() error {
	l.bufMu.Lock()
	defer l.bufMu.Unlock()
	if len(l.buf) > 0 {
		l.emit(string(l.buf))
		l.buf = nil
	}
	return nil
}
