// Package lines turns a stream of bytes into whole lines.
package lines

import (
	"bytes"
	"sync"
)

// Writer calls its function with each complete line written to it, without
// the newline; Close gives it a last line that had none. It may be written
// from several goroutines at once (a command's stdout and stderr are
// copied separately).
type Writer struct {
	emit func(line string)
	mu   sync.Mutex
	buf  []byte
}

// NewWriter returns a Writer that calls emit once per line.
func NewWriter(emit func(line string)) *Writer {
	return &Writer{emit: emit}
}

func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// Close emits a last line that had no newline.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
	return nil
}
