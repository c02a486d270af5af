package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/serve"
)

// Source is a store a closure is pushed from.
type Source interface {
	// Open returns the metadata of toplevel's closure and a way to read
	// its NARs.
	Open(ctx context.Context, toplevel string) (Closure, error)
	// String names the source in messages.
	String() string
}

// Closure is a closure ready to be read from a source.
type Closure struct {
	Infos []nix.PathInfo
	// NARs streams the NARs of the given paths (a subset of Infos, in
	// dependency order), in that order.
	NARs  func(infos []nix.PathInfo) serve.NARSource
	Close func()
	// Skip, when set, is told of the paths this push will not read after
	// all (the target has them, or the push stopped).
	Skip func(paths []string)
}

// LocalStore is this machine's store.
type LocalStore struct {
	Nix *nix.CLI
	// Shared, when set, serialises each path once for all the hosts of
	// the run.
	Shared *Shared
	// Infos, when it holds the toplevel, is its closure's metadata, read
	// beforehand for all hosts at once.
	Infos map[string]nix.PathInfo
}

func (LocalStore) String() string { return "the local store" }

// Open reads the closure's metadata (with one nix path-info, unless Infos
// has it); NARs are serialised from /nix/store.
func (l LocalStore) Open(ctx context.Context, toplevel string) (Closure, error) {
	infos := l.Infos
	if _, ok := infos[toplevel]; !ok {
		var err error
		if infos, err = l.Nix.PathInfos(ctx, false, toplevel); err != nil {
			return Closure{}, err
		}
	}
	closure, err := nix.Closure(infos, toplevel)
	if err != nil {
		return Closure{}, err
	}
	c := Closure{Infos: closure, NARs: func([]nix.PathInfo) serve.NARSource { return serve.LocalNAR }, Close: func() {}}
	if l.Shared != nil {
		c.NARs = func([]nix.PathInfo) serve.NARSource { return l.Shared.NAR }
		c.Skip = l.Shared.Skip
	}
	return c, nil
}

// Builder is the store of a remote machine that built the closure: its
// NARs are streamed from there to the target through this process's
// memory, never into the local store.
type Builder struct {
	Name string
	Conn *remote.Conn
}

func (b Builder) String() string { return "builder " + b.Name }

// Open lists the closure on the builder, then opens a nix-store --serve
// session there that locks it against garbage collection, reads its
// metadata, and streams the NARs.
func (b Builder) Open(ctx context.Context, toplevel string) (Closure, error) {
	paths, err := serve.List(ctx, b.Conn, toplevel)
	if err != nil {
		return Closure{}, fmt.Errorf("%s: %w", b, err)
	}
	// Locking the closure needs a writable session; it is the first query.
	s, valid, err := serve.OpenQuery(ctx, b.Conn, true, paths, true, false)
	if err != nil {
		return Closure{}, fmt.Errorf("%s: %w", b, err)
	}
	var infos []nix.PathInfo
	if len(valid) != len(paths) {
		err = fmt.Errorf("it holds only %d of the %d paths of the closure (garbage-collected?)", len(valid), len(paths))
	} else {
		infos, err = s.Infos(paths)
	}
	if err != nil {
		s.Close()
		return Closure{}, fmt.Errorf("%s: %w", b, err)
	}
	return Closure{Infos: infos, NARs: s.Dump, Close: func() { s.Close() }}, nil
}

// Stats is what a push did.
type Stats struct {
	Paths int   // paths in the closure
	Sent  int   // paths the target lacked, sent
	Bytes int64 // NAR bytes sent
}

// Target is the machine pushed to; *remote.Conn is one.
type Target interface {
	serve.Starter
	Run(ctx context.Context, cmd remote.Cmd) error
	// Unprivileged says whether root commands run as the login user
	// (who is not root and has no escalation command).
	Unprivileged() bool
}

// Options tune a push.
type Options struct {
	// Substitute lets the target first fetch what it can from its own
	// binary caches; only the rest is sent.
	Substitute bool
	// OnSending, when set, is told what the target lacks, before it is
	// sent; OnSent of each piece of NAR sent, in bytes.
	OnSending func(paths, of int, bytes int64)
	OnSent    func(bytes int64)
	// Sign, when set, signs each path sent.
	Sign *Signer
	// Root is the GC root (a symlink under /nix/var/nix/gcroots) that
	// keeps what was pushed; "" is Root, the system's. A login user who
	// cannot become root keeps its base name in remote.UserRootDir instead.
	Root string
}

// Native pushes toplevel's closure from src to the target over a
// `nix-store --serve --write` session on conn: one query for what the
// target lacks (locking what it has against garbage collection for the
// session), then the missing paths, references first, pipelined. Meanwhile
// the system becomes the target's GC root Root.
func Native(ctx context.Context, conn Target, src Source, toplevel string, opts Options) (Stats, error) {
	c, err := src.Open(ctx, toplevel)
	if err != nil {
		return Stats{}, err
	}
	defer c.Close()
	st := Stats{Paths: len(c.Infos)}
	// A root goes in first, at the same time as the session opens, so no
	// garbage collection can take the closure between the session's lock
	// and the root (a root to a path not there yet holds nothing). It
	// becomes Root only once the push succeeded.
	if opts.Root == "" {
		opts.Root = Root
	}
	root := newRoot(ctx, conn, toplevel, opts.Root)
	defer root.abandon()
	dst, missing, err := serve.OpenMissing(ctx, conn, c.Infos, true, opts.Substitute)
	if err != nil {
		return st, err
	}
	defer dst.Close()
	// What the push will not read: what the target has, and, should it
	// stop, what it had not read yet.
	requested := map[string]bool{}
	if c.Skip != nil {
		for _, info := range missing {
			requested[info.Path] = false
		}
		var have []string
		for _, info := range c.Infos {
			if _, ok := requested[info.Path]; !ok {
				have = append(have, info.Path)
			}
		}
		c.Skip(have)
		defer func() {
			var unread []string
			for p, read := range requested {
				if !read {
					unread = append(unread, p)
				}
			}
			c.Skip(unread)
		}()
	}
	for _, info := range missing {
		st.Bytes += info.NarSize
	}
	if opts.OnSending != nil {
		opts.OnSending(len(missing), st.Paths, st.Bytes)
	}
	if opts.Sign != nil {
		for i := range missing {
			if missing[i], err = opts.Sign.Sign(missing[i]); err != nil {
				return st, err
			}
		}
	}
	nars := c.NARs(missing)
	if c.Skip != nil {
		inner := nars
		nars = func(info nix.PathInfo) (io.ReadCloser, error) {
			requested[info.Path] = true
			return inner(info)
		}
	}
	if opts.OnSent != nil {
		nars = counted(nars, opts.OnSent)
	}
	var sent atomic.Int64
	err = dst.Add(ctx, missing, nars, func(nix.PathInfo) { sent.Add(1) })
	st.Sent = int(sent.Load())
	var se *serve.SourceError
	switch {
	case errors.As(err, &se):
		return st, fmt.Errorf("from %s: %w", src, err)
	case err != nil:
		return st, withAdvice(err)
	}
	if err := root.commit(func() { dst.Close() }); err != nil {
		return st, err
	}
	return st, nil
}

// counted reports the bytes read from each NAR of src to onRead.
func counted(src serve.NARSource, onRead func(int64)) serve.NARSource {
	return func(info nix.PathInfo) (io.ReadCloser, error) {
		r, err := src(info)
		if err != nil {
			return nil, err
		}
		if m, ok := r.(*serve.MemoryNAR); ok {
			// Counted as it is written, keeping it what it is.
			m.OnSent(onRead)
			return m, nil
		}
		return countingReader{r, onRead}, nil
	}
}

type countingReader struct {
	io.ReadCloser
	onRead func(int64)
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.onRead(int64(n))
	}
	return n, err
}
