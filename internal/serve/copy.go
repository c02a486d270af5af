package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nix-community/go-nix/pkg/wire"
)

// NARSource opens the NAR of a store path. Callers read each NAR to its end
// (NarSize bytes) and close it before opening the next.
type NARSource func(info PathInfo) (io.ReadCloser, error)

// AddError is a path the store refused or that could not be sent.
type AddError struct {
	Path string
	Err  error
}

func (e *AddError) Error() string { return fmt.Sprintf("add %s: %v", e.Path, e.Err) }
func (e *AddError) Unwrap() error { return e.Err }

// SourceError is a NAR that could not be read from its source: the
// source's fault, not the store's.
type SourceError struct{ Err error }

func (e *SourceError) Error() string { return "read it: " + e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// Add adds infos to the store in the order given (references first; see
// Sort), reading each NAR from src. It sends path after path without
// waiting, while a reader collects the store's acknowledgements, so the
// store's work overlaps the transfer. added is called, when not nil, as
// each path is acknowledged. After an error the Conn is out of step: close
// its transport.
func (c *Conn) Add(ctx context.Context, infos []PathInfo, src NARSource, added func(PathInfo)) error {
	if len(infos) == 0 {
		return nil
	}
	acks := make(chan error, 1)
	go func() {
		for _, info := range infos {
			v, err := wire.ReadUint64(c.r)
			if err == nil && v != 1 {
				err = fmt.Errorf("the store answered %d, not 1", v)
			}
			if err != nil {
				acks <- &AddError{Path: info.Path, Err: c.broken("", err)}
				return
			}
			if added != nil {
				added(info)
			}
		}
		acks <- nil
	}()
	sendErr := c.send(ctx, infos, src)
	var se *storeWriteError
	if sendErr == nil || !errors.As(sendErr, &se) {
		if sendErr != nil {
			// This side failed (the context, or reading a NAR): the
			// store still waits for bytes, and its answer will not come.
			// The connection is out of step.
			c.failed.Store(true)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return sendErr
		}
		return <-acks
	}
	if ctx.Err() != nil {
		// Interrupted: the session was closed under the transfer.
		c.failed.Store(true)
		return ctx.Err()
	}
	// The store stopped reading: its answer (an error naming the path it
	// refused, with its reason) comes as the connection closes.
	select {
	case err := <-acks:
		if err != nil {
			return err
		}
	case <-time.After(10 * time.Second):
	}
	return sendErr
}

// storeWriteError is a write to the store that failed: the store is gone.
type storeWriteError struct{ err error }

func (e *storeWriteError) Error() string { return e.err.Error() }
func (e *storeWriteError) Unwrap() error { return e.err }

func (c *Conn) send(ctx context.Context, infos []PathInfo, src NARSource) error {
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return &AddError{Path: info.Path, Err: err}
		}
		if err := c.sendOne(info, src); err != nil {
			return &AddError{Path: info.Path, Err: err}
		}
	}
	return nil
}

func (c *Conn) sendOne(info PathInfo, src NARSource) error {
	if info.NarSize <= 0 {
		return errors.New("its NAR size is unknown")
	}
	hash, err := base16(info.NarHash)
	if err != nil {
		return err
	}
	nar, err := src(info)
	if err != nil {
		return &SourceError{err}
	}
	defer nar.Close()
	w := c.w
	err = wire.WriteUint64(w, cmdAddToStoreNar)
	for _, s := range []string{info.Path, info.Deriver, hash} {
		if err == nil {
			err = wire.WriteString(w, s)
		}
	}
	if err == nil {
		err = writeStrings(w, info.References)
	}
	for _, n := range []uint64{uint64(info.RegistrationTime), uint64(info.NarSize)} {
		if err == nil {
			err = wire.WriteUint64(w, n)
		}
	}
	if err == nil {
		// A copy is never "ultimate" (built by the receiving store
		// itself), whatever the source says: as nix copy does.
		err = wire.WriteBool(w, false)
	}
	if err == nil {
		err = writeStrings(w, info.Signatures)
	}
	if err == nil {
		err = wire.WriteString(w, info.CA)
	}
	if err != nil {
		return &storeWriteError{err}
	}
	var n int64
	if m, ok := nar.(*MemoryNAR); ok {
		if size := int64(len(m.data) - m.off); size != info.NarSize {
			return &SourceError{fmt.Errorf("its NAR is %d bytes, not the %d its metadata says", size, info.NarSize)}
		}
		// Straight from memory: a large write skips w's buffer.
		n, err = m.writeTo(w)
	} else {
		n, err = io.Copy(w, io.LimitReader(readErrs{nar}, info.NarSize))
	}
	var re *readError
	switch {
	case errors.As(err, &re):
		return &SourceError{re.err}
	case err != nil:
		return &storeWriteError{err}
	case n < info.NarSize:
		// The protocol is out of step now: the caller must drop the
		// connection.
		return &SourceError{fmt.Errorf("its NAR is %d bytes, not the %d its metadata says", n, info.NarSize)}
	}
	// Flush per path, so the store starts on it while the next is read.
	if err := w.Flush(); err != nil {
		return &storeWriteError{err}
	}
	return nil
}

// readErrs marks the errors of reading a NAR, to tell them from writing.
type readErrs struct{ r io.Reader }

type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

func (r readErrs) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// Dump streams the NARs of infos, in that order, from the store: all the
// requests go out at once, and each NAR is read as it arrives. The returned
// source must be asked for exactly infos, in order, and the Conn used for
// nothing else until the last NAR is read.
func (c *Conn) Dump(infos []PathInfo) NARSource {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		// A failed write shows in the reads too: the channel is gone.
		for _, info := range infos {
			if wire.WriteUint64(c.w, cmdDumpStorePath) != nil || wire.WriteString(c.w, info.Path) != nil {
				return
			}
		}
		_ = c.w.Flush()
	}()
	next := 0
	return func(info PathInfo) (io.ReadCloser, error) {
		if next >= len(infos) || infos[next].Path != info.Path {
			return nil, fmt.Errorf("dump: %s asked for out of order", info.Path)
		}
		next++
		n := &narReader{c: c, r: &io.LimitedReader{R: c.r, N: info.NarSize}}
		if next == len(infos) {
			// The Conn is the caller's again once the last NAR is read
			// and every request written.
			n.sent = sent
		}
		return n, nil
	}
}

// narReader is one NAR of a Dump. Close reads what is left of a NAR only
// while the connection is sound; one left half-read puts the connection
// out of step, and it is marked failed instead.
type narReader struct {
	c    *Conn
	r    *io.LimitedReader
	sent chan struct{}
}

func (n *narReader) Read(p []byte) (int, error) {
	if n.c.Failed() {
		return 0, errors.New("dump: the connection to the source store failed earlier")
	}
	k, err := n.r.Read(p)
	switch {
	case err == io.EOF && n.r.N > 0:
		// The source ended before the NAR did: the server stopped.
		err = n.c.broken("dump", io.ErrUnexpectedEOF)
	case err != nil && err != io.EOF:
		err = n.c.broken("dump", err)
	}
	return k, err
}

func (n *narReader) Close() error {
	if n.r.N > 0 {
		n.c.failed.Store(true)
		return nil
	}
	if n.sent != nil {
		<-n.sent
	}
	return nil
}

func pathsOf(infos []PathInfo) []string {
	paths := make([]string, len(infos))
	for i, info := range infos {
		paths[i] = info.Path
	}
	return paths
}

// missingOf is closure less valid, references first.
func missingOf(closure []PathInfo, valid []string) ([]PathInfo, error) {
	have := make(map[string]bool, len(valid))
	for _, p := range valid {
		have[p] = true
	}
	var missing []PathInfo
	for _, info := range closure {
		if !have[info.Path] {
			missing = append(missing, info)
		}
	}
	return Sort(missing)
}
