package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/deployctl/deployctl/internal/lines"
)

// Transcript records commands in full, for later reading (--log-dir):
// each command's line, every line of its output, and how it ended. Lines
// of commands that run at once are told apart by the command's number,
// which begins every line:
//
//	[3] 14:02:11.084 $ ssh root@web-1 'nix-store --realise /nix/store/…'
//	[3] out| /nix/store/…
//	[3] err| warning: …
//	[3] exit status 0 after 0.21s
//
// A protocol's standard output (nix-store --serve) is not text and is left
// out. It is safe for concurrent use.
type Transcript struct {
	mu  sync.Mutex
	w   io.Writer
	n   int
	now func() time.Time
	// open counts the commands begun and not ended; once closing, the
	// last to end closes w (when it is an io.Closer), and closed drops
	// what comes later.
	open            int
	closing, closed bool
}

// NewTranscript writes a transcript to w.
func NewTranscript(w io.Writer) *Transcript {
	return &Transcript{w: w, now: time.Now}
}

// Close closes the transcript's writer once every command recorded has
// ended (a command given up on, such as a protocol session closed on a
// failure, may end a moment after its step): their last lines are kept.
func (t *Transcript) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closing = true
	return t.closeIfDone()
}

// closeIfDone closes w when closing and no command is open; t.mu is held.
func (t *Transcript) closeIfDone() error {
	if !t.closing || t.open > 0 || t.closed {
		return nil
	}
	t.closed = true
	if c, ok := t.w.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// write writes text unless the transcript is closed; t.mu is held.
func (t *Transcript) write(text string) {
	if !t.closed {
		io.WriteString(t.w, text)
	}
}

type transcriptKey struct{}

// WithTranscript returns ctx under which Conn's and Local's commands are
// recorded in t.
func WithTranscript(ctx context.Context, t *Transcript) context.Context {
	return context.WithValue(ctx, transcriptKey{}, t)
}

func transcriptOf(ctx context.Context) *Transcript {
	t, _ := ctx.Value(transcriptKey{}).(*Transcript)
	return t
}

// record is one command's part of a transcript.
type record struct {
	t     *Transcript
	n     int
	start time.Time
	out   *lines.Writer
	err   *lines.Writer
}

// begin records line starting. A nil Transcript records nothing: its
// record's writers are nil and its end does nothing.
func (t *Transcript) begin(line string) *record {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	t.n++
	t.open++
	r := &record{t: t, n: t.n, start: t.now()}
	t.write(fmt.Sprintf("[%d] %s $ %s\n", r.n, r.start.Format("15:04:05.000"), r.continued(line, "cmd")))
	t.mu.Unlock()
	r.out = t.lines(fmt.Sprintf("[%d] out| ", r.n))
	r.err = t.lines(fmt.Sprintf("[%d] err| ", r.n))
	return r
}

// stdout and stderr add the transcript to a command's writer w (which may
// be nil).
func (r *record) stdout(w io.Writer) io.Writer {
	if r == nil {
		return w
	}
	return tee(w, r.out)
}

func (r *record) stderr(w io.Writer) io.Writer {
	if r == nil {
		return w
	}
	return tee(w, r.err)
}

func tee(w io.Writer, l *lines.Writer) io.Writer {
	if w == nil {
		return l
	}
	return io.MultiWriter(w, l)
}

// end records how the command ended (err as Run returns it).
func (r *record) end(err error) {
	if r == nil {
		return
	}
	r.out.Close()
	r.err.Close()
	var ee *ExitError
	how := "exit status 0"
	switch {
	case errors.As(err, &ee):
		how = fmt.Sprintf("exit status %d", ee.Status)
	case errors.Is(err, ErrOutcomeUnknown):
		how = "no exit status (the connection dropped, or a signal killed it)"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		how = "given up on (" + err.Error() + ")"
	case err != nil:
		how = "failed: " + r.continued(err.Error(), "why")
	}
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.t.write(fmt.Sprintf("[%d] %s after %.2fs\n", r.n, how, r.t.now().Sub(r.start).Seconds()))
	r.t.open--
	r.t.closeIfDone()
}

// continued is text whose further lines go on under the record's number
// and the label.
func (r *record) continued(text, label string) string {
	return strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", fmt.Sprintf("\n[%d] %s| ", r.n, label))
}

// lines writes each complete line written to it to the transcript,
// prefixed; a partial line waits for the rest, or for Close.
func (t *Transcript) lines(prefix string) *lines.Writer {
	return lines.NewWriter(func(line string) {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.write(prefix + line + "\n")
	})
}
