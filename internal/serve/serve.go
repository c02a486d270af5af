// Package serve is a client of Nix's `nix-store --serve` protocol: it asks a
// store which paths it holds, reads their metadata and NARs, and adds paths.
package serve

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/nix-community/go-nix/pkg/wire"

	"github.com/deployctl/deployctl/internal/nix"
)

const (
	magicClient = 0x390c9deb
	magicServer = 0x5452eecb
	// clientVersion is 2.7, the version Lix keeps and Nix 2.8 to 2.2x speak.
	clientVersion = 2<<8 | 7
	// minVersion is the oldest server deployctl talks to: 2.5 brought
	// AddToStoreNar.
	minVersion = 2<<8 | 5

	cmdQueryValidPaths = 1
	cmdQueryPathInfos  = 2
	cmdDumpStorePath   = 3
	cmdAddToStoreNar   = 9

	// maxString bounds a string read from the server (store paths, hashes,
	// signatures, content addresses).
	maxString = 64 << 10
	// maxSet bounds a set read from the server.
	maxSet = 1 << 20
)

// PathInfo is what a store knows of one of its paths. NarHash may be in
// any form Nix prints (sha256:… in base32 or base16, or SRI).
type PathInfo = nix.PathInfo

// Transport is a running `nix-store --serve` process.
type Transport struct {
	In  io.Writer // its standard input
	Out io.Reader // its standard output
	// Why is called when the process stops answering; it waits briefly for
	// the process to end and returns its error (exit status and standard
	// error), or nil when that is not known.
	Why func() error
}

// Conn is a handshaken connection to a store. Its queries may be called
// from several goroutines (they take turns); Add and Dump need it alone.
type Conn struct {
	mu      sync.Mutex
	r       *bufio.Reader
	w       *bufio.Writer
	why     func() error
	version uint64
	failed  atomic.Bool
}

// Version is the protocol version both sides speak (major<<8 | minor).
func (c *Conn) Version() uint64 { return c.version }

// Handshake starts the protocol over t.
func Handshake(t Transport) (*Conn, error) {
	c := newConn(t)
	if err := c.sendHello(); err != nil {
		return nil, err
	}
	if err := c.flush("handshake"); err != nil {
		return nil, err
	}
	if err := c.readHello(); err != nil {
		return nil, err
	}
	return c, nil
}

// HandshakeQuery is Handshake then QueryValidPaths, sent together so that
// both take one round trip (the query's bytes are the same whatever
// version the server speaks).
func HandshakeQuery(t Transport, paths []string, lock, substitute bool) (*Conn, []string, error) {
	c := newConn(t)
	if err := c.sendHello(); err != nil {
		return nil, nil, err
	}
	if err := c.sendQueryValid(paths, lock, substitute); err != nil {
		return nil, nil, err
	}
	if err := c.flush("handshake"); err != nil {
		return nil, nil, err
	}
	if err := c.readHello(); err != nil {
		return nil, nil, err
	}
	valid, err := readStrings(c.r)
	if err != nil {
		return nil, nil, c.broken("query valid paths", err)
	}
	return c, valid, nil
}

func newConn(t Transport) *Conn {
	return &Conn{r: bufio.NewReaderSize(t.Out, 64<<10), w: bufio.NewWriterSize(t.In, 256<<10), why: t.Why}
}

func (c *Conn) sendHello() error {
	err := wire.WriteUint64(c.w, magicClient)
	if err == nil {
		err = wire.WriteUint64(c.w, clientVersion)
	}
	if err != nil {
		return c.broken("handshake", err)
	}
	return nil
}

func (c *Conn) flush(step string) error {
	if err := c.w.Flush(); err != nil {
		return c.broken(step, err)
	}
	return nil
}

func (c *Conn) readHello() error {
	magic, err := wire.ReadUint64(c.r)
	if err != nil {
		return c.broken("handshake", err)
	}
	if magic != magicServer {
		return fmt.Errorf("handshake: not a nix-store --serve server (magic %#x); does the login shell print something?", magic)
	}
	v, err := wire.ReadUint64(c.r)
	if err != nil {
		return c.broken("handshake", err)
	}
	if v>>8 != 2 || v < minVersion {
		return fmt.Errorf("handshake: the server speaks protocol %d.%d; deployctl needs 2.5 or later (Nix 2.4 or later)", v>>8, v&0xff)
	}
	c.version = min(v, clientVersion)
	return nil
}

// broken wraps err, from reading or writing in step, with why the server
// went away when that can be learned, and marks the connection failed.
func (c *Conn) broken(step string, err error) error {
	c.failed.Store(true)
	if c.why != nil {
		if why := c.why(); why != nil {
			err = fmt.Errorf("nix-store --serve: %w", why)
		}
	}
	if step == "" {
		return err
	}
	return fmt.Errorf("%s: %w", step, err)
}

// Failed reports whether the connection broke or fell out of step: it is
// good for nothing but closing.
func (c *Conn) Failed() bool { return c.failed.Load() }

func writeStrings(w io.Writer, ss []string) error {
	if err := wire.WriteUint64(w, uint64(len(ss))); err != nil {
		return err
	}
	for _, s := range ss {
		if err := wire.WriteString(w, s); err != nil {
			return err
		}
	}
	return nil
}

func readStrings(r io.Reader) ([]string, error) {
	n, err := wire.ReadUint64(r)
	if err != nil {
		return nil, err
	}
	if n > maxSet {
		return nil, fmt.Errorf("a set of %d strings is more than deployctl accepts", n)
	}
	out := make([]string, 0, n)
	for range n {
		s, err := wire.ReadString(r, maxString)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// QueryValidPaths returns which of paths the store holds. lock keeps them
// from garbage collection while the connection lasts; substitute lets the
// store first fetch what it can from its own substituters.
func (c *Conn) QueryValidPaths(paths []string, lock, substitute bool) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sendQueryValid(paths, lock, substitute); err != nil {
		return nil, err
	}
	if err := c.flush("query valid paths"); err != nil {
		return nil, err
	}
	valid, err := readStrings(c.r)
	if err != nil {
		return nil, c.broken("query valid paths", err)
	}
	return valid, nil
}

func (c *Conn) sendQueryValid(paths []string, lock, substitute bool) error {
	err := wire.WriteUint64(c.w, cmdQueryValidPaths)
	if err == nil {
		err = wire.WriteBool(c.w, lock)
	}
	if err == nil {
		err = wire.WriteBool(c.w, substitute)
	}
	if err == nil {
		err = writeStrings(c.w, paths)
	}
	if err != nil {
		return c.broken("query valid paths", err)
	}
	return nil
}

// QueryPathInfos returns what the store knows of those of paths it holds.
func (c *Conn) QueryPathInfos(paths []string) ([]PathInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := wire.WriteUint64(c.w, cmdQueryPathInfos)
	if err == nil {
		err = writeStrings(c.w, paths)
	}
	if err == nil {
		err = c.w.Flush()
	}
	if err != nil {
		return nil, c.broken("query path infos", err)
	}
	var out []PathInfo
	for {
		info, err := c.readPathInfo()
		if err != nil {
			return nil, c.broken("query path infos", err)
		}
		if info == nil {
			return out, nil
		}
		out = append(out, *info)
	}
}

func (c *Conn) readPathInfo() (*PathInfo, error) {
	path, err := wire.ReadString(c.r, maxString)
	if err != nil || path == "" {
		return nil, err
	}
	info := &PathInfo{Path: path}
	if info.Deriver, err = wire.ReadString(c.r, maxString); err != nil {
		return nil, err
	}
	if info.References, err = readStrings(c.r); err != nil {
		return nil, err
	}
	if _, err = wire.ReadUint64(c.r); err != nil { // download size
		return nil, err
	}
	size, err := wire.ReadUint64(c.r)
	if err != nil {
		return nil, err
	}
	info.NarSize = int64(size)
	if info.NarHash, err = wire.ReadString(c.r, maxString); err != nil {
		return nil, err
	}
	if info.CA, err = wire.ReadString(c.r, maxString); err != nil {
		return nil, err
	}
	if info.Signatures, err = readStrings(c.r); err != nil {
		return nil, err
	}
	return info, nil
}

// base16 is a NAR hash as AddToStoreNar sends it: sha256 in base16, no
// prefix, which every Nix parses.
func base16(narHash string) (string, error) {
	algo := nixhash.SHA256
	h, err := nixhash.ParseAny(narHash, &algo)
	if err != nil {
		return "", fmt.Errorf("nar hash %q: %w", narHash, err)
	}
	if h.Algo() != nixhash.SHA256 {
		return "", fmt.Errorf("nar hash %q: not sha256", narHash)
	}
	return h.Format(nixhash.Base16, false), nil
}

// Sort orders infos references first, as a store must receive them. A
// path's references outside infos are taken to be present already.
func Sort(infos []PathInfo) ([]PathInfo, error) {
	byPath := make(map[string]int, len(infos))
	for i, in := range infos {
		byPath[in.Path] = i
	}
	// Visit in path order so the result does not depend on the input's.
	order := make([]int, len(infos))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return infos[order[a]].Path < infos[order[b]].Path })
	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(infos))
	out := make([]PathInfo, 0, len(infos))
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("store paths refer to each other in a cycle through %s", infos[i].Path)
		}
		state[i] = visiting
		refs := append([]string(nil), infos[i].References...)
		sort.Strings(refs)
		for _, r := range refs {
			if j, ok := byPath[r]; ok && r != infos[i].Path {
				if err := visit(j); err != nil {
					return err
				}
			}
		}
		state[i] = done
		out = append(out, infos[i])
		return nil
	}
	for _, i := range order {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return out, nil
}
