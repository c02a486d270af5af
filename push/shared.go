package push

import (
	"bytes"
	"container/list"
	"io"
	"sync"

	"github.com/nix-community/go-nix/pkg/nar"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/serve"
)

// Shared serialises each local store path once for all the hosts of a run
// that push it: the NAR is kept in memory, within a budget, for the hosts
// that need it next, and dropped once the last of them has taken it (or
// said it will not). A host reads its copy at its own pace, so a slow host
// never holds the others back; when the budget is spent, the least
// recently used NARs are dropped, and a host that needs one again has it
// serialised again. A path only one host still needs, and a NAR larger
// than a quarter of the budget, is never kept: it is streamed from disk.
// Memory is the budget plus the NARs being serialised at the moment.
type Shared struct {
	budget int64
	// dump serialises a path; serve.LocalNAR's serialiser unless a test
	// sets another.
	dump func(w io.Writer, path string) error

	mu      sync.Mutex
	uses    map[string]int // how many hosts may still ask for each path
	entries map[string]*sharedNAR
	lru     *list.List // of *sharedNAR, most recently used first
	used    int64
	stats   SharedStats
}

// SharedStats counts what a Shared did.
type SharedStats struct {
	Serialised int   // NARs serialised into memory
	Reused     int   // times a NAR in memory was given to another host
	Bytes      int64 // bytes serialised into memory
}

type sharedNAR struct {
	path  string
	ready chan struct{}
	data  []byte
	err   error
	elem  *list.Element
}

// NewShared returns a Shared keeping at most budget bytes of NARs.
func NewShared(budget int64) *Shared {
	return &Shared{budget: budget, dump: nar.DumpPath, uses: map[string]int{}, entries: map[string]*sharedNAR{}, lru: list.New()}
}

// Expect says that one more host will ask for each of paths. Only a path
// expected more than once is kept in memory.
func (s *Shared) Expect(paths []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range paths {
		s.uses[p]++
	}
}

// Stats returns what s did so far.
func (s *Shared) Stats() SharedStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// NAR is a serve.NARSource for paths of the local store.
func (s *Shared) NAR(info nix.PathInfo) (io.ReadCloser, error) {
	s.mu.Lock()
	e, ok := s.entries[info.Path]
	others := s.uses[info.Path] - 1 // hosts that may ask after this one
	s.forget(info.Path)             // (e stays this host's if dropped)
	if !ok && (info.NarSize > s.budget/4 || others < 1) {
		s.mu.Unlock()
		return serve.LocalNAR(info)
	}
	if ok {
		s.stats.Reused++
		if e.elem != nil {
			s.lru.MoveToFront(e.elem)
		}
		s.mu.Unlock()
		<-e.ready
	} else {
		e = &sharedNAR{path: info.Path, ready: make(chan struct{})}
		s.entries[info.Path] = e
		s.mu.Unlock()
		// Room for all of it at once; unlike Grow, make need not clear
		// memory fresh from the system.
		buf := bytes.NewBuffer(make([]byte, 0, info.NarSize))
		e.err = s.dump(buf, info.Path)
		e.data = buf.Bytes()
		close(e.ready)
		s.keep(e)
	}
	if e.err != nil {
		return nil, e.err
	}
	return serve.NewMemoryNAR(e.data), nil
}

// keep accounts for a serialised NAR, dropping the least recently used
// ones (never e) while the budget is exceeded. A failed one is forgotten,
// so the next host tries again.
func (s *Shared) keep(e *sharedNAR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.err != nil {
		delete(s.entries, e.path)
		return
	}
	s.stats.Serialised++
	s.stats.Bytes += int64(len(e.data))
	if s.entries[e.path] != e {
		return // dropped while serialised: every host that wanted it has it
	}
	if s.uses[e.path] == 0 {
		delete(s.entries, e.path)
		return
	}
	e.elem = s.lru.PushFront(e)
	s.used += int64(len(e.data))
	for s.used > s.budget {
		last := s.lru.Back()
		if last == nil || last == e.elem {
			break
		}
		s.drop(last.Value.(*sharedNAR))
	}
}

// Skip says that a host will not ask for paths after all (its target has
// them, or its push stopped).
func (s *Shared) Skip(paths []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range paths {
		s.forget(p)
	}
}

// forget counts one host less for path, dropping its NAR when none is left.
func (s *Shared) forget(path string) {
	if s.uses[path]--; s.uses[path] > 0 {
		return
	}
	delete(s.uses, path)
	if e, ok := s.entries[path]; ok {
		s.drop(e)
	}
}

func (s *Shared) drop(e *sharedNAR) {
	if s.entries[e.path] == e {
		delete(s.entries, e.path)
	}
	if e.elem != nil {
		s.lru.Remove(e.elem)
		e.elem = nil
		s.used -= int64(len(e.data))
	}
}
