package push

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/deployctl/deployctl/internal/nix"
)

// countingShared is a Shared whose serialiser writes the path's name
// padded to size bytes, and counts its calls.
func countingShared(budget int64, size int) (*Shared, *atomic.Int64) {
	s := NewShared(budget)
	var calls atomic.Int64
	s.dump = func(w io.Writer, path string) error {
		calls.Add(1)
		_, err := fmt.Fprintf(w, "%-*s", size, path)
		return err
	}
	return s, &calls
}

func readAll(t *testing.T, s *Shared, path string, size int64) string {
	t.Helper()
	r, err := s.NAR(nix.PathInfo{Path: path, NarSize: size})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSharedSerialisesOnceForManyHosts: eight hosts asking for the same
// path at once get the same bytes from one serialisation.
func TestSharedSerialisesOnceForManyHosts(t *testing.T) {
	s, calls := countingShared(1<<20, 1000)
	for range 8 {
		s.Expect([]string{"/nix/store/aaaa-x"})
	}
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() { got[i] = readAll(t, s, "/nix/store/aaaa-x", 1000) })
	}
	wg.Wait()
	for i, g := range got {
		if len(g) != 1000 || g != got[0] {
			t.Fatalf("host %d got %d bytes, different from host 0's", i, len(g))
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("serialised %d times for 8 hosts, want once", n)
	}
	if st := s.Stats(); st.Serialised != 1 || st.Reused != 7 {
		t.Errorf("stats %+v, want 1 serialised, 7 reused", st)
	}
	if s.used != 0 || len(s.entries) != 0 {
		t.Errorf("after the last expected host, %d bytes are still kept", s.used)
	}
}

// TestSharedStreamsWhatOneHostNeeds: a path only one host needs is never
// held in memory.
func TestSharedStreamsWhatOneHostNeeds(t *testing.T) {
	s, calls := countingShared(1<<20, 10)
	dir := t.TempDir()
	p := filepath.Join(dir, "only-mine")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Expect([]string{p})
	if b := readAll(t, s, p, 10); len(b) == 0 {
		t.Fatal("no NAR")
	}
	if calls.Load() != 0 || s.used != 0 {
		t.Errorf("a path one host needs went through memory")
	}
}

// TestSharedStaysWithinBudget: past the budget the least recently used
// NARs are dropped (and serialised again when asked for); a NAR larger
// than a quarter of the budget is never kept.
func TestSharedStaysWithinBudget(t *testing.T) {
	s, calls := countingShared(100, 20)
	for range 3 {
		var all []string
		for i := range 6 {
			all = append(all, fmt.Sprintf("/nix/store/p%d", i))
		}
		s.Expect(all)
	}
	for i := range 6 {
		readAll(t, s, fmt.Sprintf("/nix/store/p%d", i), 20)
	}
	if s.used > 100 {
		t.Fatalf("keeps %d bytes, over the budget of 100", s.used)
	}
	readAll(t, s, "/nix/store/p5", 20) // kept
	readAll(t, s, "/nix/store/p0", 20) // dropped: serialised again
	if n := calls.Load(); n != 7 {
		t.Errorf("serialised %d times, want 7 (p0 twice)", n)
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Expect([]string{big})
	s.Expect([]string{big})
	before := calls.Load()
	if b := readAll(t, s, big, 30); len(b) == 0 {
		t.Fatal("no NAR for a large path")
	}
	if calls.Load() != before || s.entries[big] != nil {
		t.Errorf("a NAR over a quarter of the budget went through memory")
	}
}

// TestSharedCountsDown: a NAR serialised again after it was dropped is
// still let go after its last host; a host that says it will not ask
// counts as one host less.
func TestSharedCountsDown(t *testing.T) {
	s, calls := countingShared(60, 15)
	all := []string{"/nix/store/p", "/nix/store/q", "/nix/store/r", "/nix/store/s", "/nix/store/t"}
	for range 3 {
		s.Expect(all)
	}
	for _, p := range []string{"/nix/store/p", "/nix/store/q", "/nix/store/r", "/nix/store/s", "/nix/store/q", "/nix/store/t"} {
		readAll(t, s, p, 15) // t takes p's room
	}
	if s.entries["/nix/store/p"] != nil {
		t.Fatalf("p was not dropped for room")
	}
	readAll(t, s, "/nix/store/p", 15) // serialised again
	readAll(t, s, "/nix/store/p", 15) // its last host
	if s.entries["/nix/store/p"] != nil {
		t.Errorf("p is kept after its last host took it")
	}
	if n := calls.Load(); n != 6 {
		t.Errorf("serialised %d times, want 6 (p twice)", n)
	}
	// s: one host took it; the two left say they will not ask.
	s.Skip([]string{"/nix/store/s"})
	if s.entries["/nix/store/s"] == nil {
		t.Errorf("s was let go while a host may still ask for it")
	}
	s.Skip([]string{"/nix/store/s"})
	if s.entries["/nix/store/s"] != nil || s.used != 30 {
		t.Errorf("s is kept after no host may ask for it (%d bytes kept)", s.used)
	}
}
