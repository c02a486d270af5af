package serve

import (
	"bufio"
	"bytes"
	"io"

	"github.com/nix-community/go-nix/pkg/nar"
)

// smallNAR is the size up to which LocalNAR serialises a path into memory
// at once rather than streaming it through a pipe.
const smallNAR = 256 << 10

// LocalNAR serialises a path of this machine's store (/nix/store) as a NAR.
func LocalNAR(info PathInfo) (io.ReadCloser, error) {
	if info.NarSize > 0 && info.NarSize <= smallNAR {
		// Small paths, the many of a closure: no goroutine, no pipe.
		// Room for all of it at once; unlike Grow, make need not clear
		// memory fresh from the system.
		buf := bytes.NewBuffer(make([]byte, 0, info.NarSize))
		if err := nar.DumpPath(buf, info.Path); err != nil {
			return nil, err
		}
		return NewMemoryNAR(buf.Bytes()), nil
	}
	pr, pw := io.Pipe()
	go func() {
		// go-nix writes in many small pieces: buffer them.
		bw := bufio.NewWriterSize(pw, 256<<10)
		err := nar.DumpPath(bw, info.Path)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// MemoryNAR is a NAR held in memory. Add writes it to the store straight
// from its bytes, without copying it through a buffer first; read as an
// io.Reader it is an ordinary one.
type MemoryNAR struct {
	data []byte
	off  int
	// onSent, when set, is told of each piece of it written to a store.
	onSent func(int64)
}

// NewMemoryNAR returns data as a NAR to send.
func NewMemoryNAR(data []byte) *MemoryNAR { return &MemoryNAR{data: data} }

// OnSent adds fn to what is told of each piece of m written to a store.
func (m *MemoryNAR) OnSent(fn func(int64)) {
	if prev := m.onSent; prev != nil {
		m.onSent = func(n int64) { prev(n); fn(n) }
		return
	}
	m.onSent = fn
}

func (m *MemoryNAR) Read(p []byte) (int, error) {
	if m.off >= len(m.data) {
		return 0, io.EOF
	}
	n := copy(p, m.data[m.off:])
	m.off += n
	if m.onSent != nil {
		m.onSent(int64(n))
	}
	return n, nil
}

// Close does nothing.
func (m *MemoryNAR) Close() error { return nil }

// memoryPiece is how much of a MemoryNAR is written at a time, so progress
// moves and the store's window refills as it goes.
const memoryPiece = 1 << 20

// writeTo writes what is left of m to w, piece by piece.
func (m *MemoryNAR) writeTo(w io.Writer) (int64, error) {
	var total int64
	for m.off < len(m.data) {
		piece := m.data[m.off:min(m.off+memoryPiece, len(m.data))]
		n, err := w.Write(piece)
		m.off += n
		total += int64(n)
		if m.onSent != nil && n > 0 {
			m.onSent(int64(n))
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
