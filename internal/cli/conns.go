package cli

import (
	"context"
	"sync"

	"github.com/deployctl/deployctl/internal/remote"
)

// conns shares one SSH connection per machine among the phases and hosts of
// a run: a builder serves every host it builds for, and a host that builds
// on itself is reached once. A connection closes when its last user
// releases it.
type conns struct {
	mu     sync.Mutex
	m      map[string]*connEntry
	pinned map[string]bool
	builds map[string]*sync.Mutex
}

type connEntry struct {
	ready chan struct{}
	conn  *remote.Conn
	err   error
	refs  int
}

// connect returns the connection to the machine named key (reached as t),
// dialling it once however many callers ask at the same time. The caller
// releases it.
func (g *globals) connect(ctx context.Context, key string, t remote.Target) (*remote.Conn, error) {
	e, err := g.enter(ctx, key, t)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		g.release(key)
		return nil, ctx.Err()
	}
	if e.err != nil {
		g.release(key)
		return nil, e.err
	}
	return e.conn, nil
}

// dialAhead starts dialling the machine named key without waiting, and
// holds the connection until the caller releases it: a connect later finds
// it dialled or on its way.
func (g *globals) dialAhead(ctx context.Context, key string, t remote.Target) {
	_, _ = g.enter(ctx, key, t)
}

// enter takes a reference to key's entry, creating it and dialling in the
// background when there is none.
func (g *globals) enter(ctx context.Context, key string, t remote.Target) (*connEntry, error) {
	d, err := g.dialer()
	if err != nil {
		return nil, err
	}
	c := &g.conns
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*connEntry{}
	}
	e, ok := c.m[key]
	if !ok {
		e = &connEntry{ready: make(chan struct{})}
		c.m[key] = e
	}
	e.refs++
	c.mu.Unlock()
	if !ok {
		go func() {
			e.conn, e.err = d.Dial(ctx, t)
			if e.err == nil {
				ep := e.conn.Endpoint()
				g.log.Info("connected", "host", t.Name, "to", ep.Destination()+" ("+ep.Addr()+")")
			}
			close(e.ready)
		}()
	}
	return e, nil
}

// pin keeps the connection to the machine named key open until the run
// ends, however often it is released: a builder's serves its build, the
// check of its systems and every push from it.
func (g *globals) pin(key string) {
	c := &g.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned == nil {
		c.pinned = map[string]bool{}
	}
	c.pinned[key] = true
}

// release gives back a connection connect returned; the last release
// closes it, unless it is pinned (then closeAll does).
func (g *globals) release(key string) {
	c := &g.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return
	}
	if e.refs--; e.refs > 0 || c.pinned[key] && !failed(e) {
		return
	}
	delete(c.m, key)
	closeWhenDialled(e)
}

// failed reports whether e was dialled and failed (one still dialling has
// not).
func failed(e *connEntry) bool {
	select {
	case <-e.ready:
		return e.err != nil
	default:
		return false
	}
}

// buildTurn waits until no other build runs over the connection to the
// machine named key, and returns the function that ends this one's turn.
// A remote build holds a session open while it starts others on the same
// connection: two at once could take every session place and wait on each
// other (as the chunks of --eval-chunk would).
func (g *globals) buildTurn(key string) func() {
	c := &g.conns
	c.mu.Lock()
	if c.builds == nil {
		c.builds = map[string]*sync.Mutex{}
	}
	m, ok := c.builds[key]
	if !ok {
		m = &sync.Mutex{}
		c.builds[key] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// closeAll closes the connections still open when a run ends.
func (g *globals) closeAll() {
	c := &g.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		delete(c.m, k)
		closeWhenDialled(e)
	}
}

func closeWhenDialled(e *connEntry) {
	closeConn := func() {
		if e.conn != nil {
			e.conn.Close()
		}
	}
	select {
	case <-e.ready:
		closeConn()
	default:
		// Still dialling (its caller gave up): close it once dialled.
		go func() {
			<-e.ready
			closeConn()
		}()
	}
}
