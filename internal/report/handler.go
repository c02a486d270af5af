// Package report renders what deployctl does for people: plain lines, one
// per event, prefixed with the host they concern.
package report

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

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

// output is the writer the handler and its line writers share. On a
// terminal it keeps a status below the records: the board (a line per
// host at work) and the bar, redrawn in place as records go above them.
type output struct {
	mu    sync.Mutex
	w     io.Writer
	board []string
	bar   string
	// drawn is how many status lines are on the screen, the cursor at
	// the end of the last.
	drawn int
	// width and height are the terminal's (0: unknown): each status line
	// is cut to fit one row, and the status to fit the screen, or the
	// cursor arithmetic of erase would be wrong.
	width, height int
}

// writeLine writes one complete line, keeping the status below it.
func (o *output) writeLine(line string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err := io.WriteString(o.w, o.erase()+line+o.draw())
	return err
}

// redraw draws the status again, changed.
func (o *output) redraw() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	erase := o.erase()
	if erase == "" {
		erase = clearLine
	}
	_, err := io.WriteString(o.w, erase+o.draw())
	return err
}

// erase is what takes the status off the screen, the cursor left where
// its first line began.
func (o *output) erase() string {
	switch o.drawn {
	case 0:
		return ""
	case 1:
		return clearLine
	}
	return fmt.Sprintf("\x1b[%dA", o.drawn-1) + "\r\x1b[J"
}

// draw is the status's lines, the last without a newline: the board's
// first lines that fit above the bar, each cut to the width.
func (o *output) draw() string {
	lines := slices.Clone(o.board)
	if o.height > 1 {
		room := o.height - 1 // a row for the records to scroll through
		if o.bar != "" {
			room--
		}
		lines = lines[:min(len(lines), max(room, 0))]
	}
	if o.bar != "" {
		lines = append(lines, o.bar)
	}
	for i, l := range lines {
		lines[i] = cut(l, o.width)
	}
	o.drawn = len(lines)
	return strings.Join(lines, "\n")
}

// cut shortens line to fewer than width columns (0: as it is).
func cut(line string, width int) string {
	if width <= 0 || utf8.RuneCountInString(line) < width {
		return line
	}
	r := []rune(line)
	return string(r[:max(width-2, 0)]) + "…"
}

// SetSize tells the handler the terminal's width and height, for its
// status lines.
func (h *Handler) SetSize(width, height int) {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.width, h.out.height = width, height
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
		had := h.out.bar != ""
		h.out.bar = ""
		h.out.mu.Unlock()
		if had {
			h.out.redraw()
		}
	}
}

type statusWriter struct{ o *output }

func (s statusWriter) Write(p []byte) (int, error) {
	line := string(p)
	if i := strings.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	s.o.mu.Lock()
	s.o.bar = line
	s.o.mu.Unlock()
	return len(p), s.o.redraw()
}

// SetBoard draws lines (nil: none) above the bar, in place of the ones
// drawn before. For terminals only: each line must fit the terminal's
// width.
func (h *Handler) SetBoard(lines []string) {
	h.out.mu.Lock()
	h.out.board = lines
	h.out.mu.Unlock()
	h.out.redraw()
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
