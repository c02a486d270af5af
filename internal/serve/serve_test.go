package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// testEnv lets nix run without a binary cache (unreachable here).
func testEnv() []string {
	return append(os.Environ(), "NIX_CONFIG=substituters =\nexperimental-features = nix-command flakes")
}

// buildClosure builds two paths, top referring to dep, and returns the
// closure's metadata from `nix path-info`.
func buildClosure(t *testing.T) (top string, infos []PathInfo) {
	t.Helper()
	nixtest.Require(t, "nix", "nix-store", "nix-instantiate")
	nonce := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	expr := fmt.Sprintf(`let
  mk = name: script: derivation { inherit name; system = %q; builder = "/bin/sh"; args = [ "-c" script ]; nonce = %q; PATH = "/usr/bin:/bin"; };
  dep = mk "serve-dep" "mkdir -p $out/sub; echo dep > $out/sub/file; echo '#!/bin/sh' > $out/run; chmod +x $out/run; ln -s run $out/link";
in mk "serve-top" "echo ${dep} > $out"`, nixtest.System(), nonce)
	run := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Env = testEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	drv := run("nix-instantiate", "--expr", expr)
	top = run("nix-store", "--realise", drv)
	out := run("nix", "--extra-experimental-features", "nix-command", "path-info", "--json", "--recursive", top)
	byPath, err := nix.ParsePathInfo([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(byPath) != 2 {
		t.Fatalf("closure of %s has %d paths, want 2", top, len(byPath))
	}
	for _, p := range byPath {
		infos = append(infos, p)
	}
	return top, infos
}

// serveStore starts `nix-store --serve --write` on a new store of its own
// (a chroot store under a temporary directory) and handshakes with it.
func serveStore(t *testing.T, ctx context.Context) (*Conn, string) {
	t.Helper()
	root := t.TempDir()
	c, err := Handshake(startServe(t, ctx, root))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c, root
}

// startServe starts `nix-store --serve --write` on the store under root.
func startServe(t *testing.T, ctx context.Context, root string) Transport {
	t.Helper()
	cmd := exec.CommandContext(ctx, "nix-store", "--store", root, "--serve", "--write")
	cmd.Env = testEnv()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
	})
	why := func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
		case <-time.After(2 * time.Second):
			return nil
		}
	}
	return Transport{In: in, Out: out, Why: why}
}

// TestHandshakeQuery: the handshake and the first query go together, and
// the answer is the store's.
func TestHandshakeQuery(t *testing.T) {
	ctx := context.Background()
	_, infos := buildClosure(t)
	sorted, err := Sort(infos)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	c, valid, err := HandshakeQuery(startServe(t, ctx, root), paths(sorted), true, false)
	if err != nil || len(valid) != 0 || c.Version() < minVersion {
		t.Fatalf("a new store: valid %v, err %v", valid, err)
	}
	if err := c.Add(ctx, sorted, LocalNAR, nil); err != nil {
		t.Fatal(err)
	}
	_, valid, err = HandshakeQuery(startServe(t, ctx, root), paths(sorted), false, false)
	if err != nil || len(valid) != len(sorted) {
		t.Fatalf("after adding: valid %v, err %v", valid, err)
	}
}

func paths(infos []PathInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Path)
	}
	return out
}

func TestAddThenReadBack(t *testing.T) {
	ctx := context.Background()
	top, infos := buildClosure(t)
	sorted, err := Sort(infos)
	if err != nil {
		t.Fatal(err)
	}
	if sorted[1].Path != top {
		t.Fatalf("Sort put %s last, want the top path %s", sorted[1].Path, top)
	}
	dst, root := serveStore(t, ctx)
	if v := dst.Version(); v < minVersion {
		t.Fatalf("version %#x", v)
	}
	valid, err := dst.QueryValidPaths(paths(sorted), true, false)
	if err != nil || len(valid) != 0 {
		t.Fatalf("a new store holds %v (err %v), want nothing", valid, err)
	}
	var acked []string
	if err := dst.Add(ctx, sorted, LocalNAR, func(p PathInfo) { acked = append(acked, p.Path) }); err != nil {
		t.Fatalf("add: %v", err)
	}
	if strings.Join(acked, " ") != strings.Join(paths(sorted), " ") {
		t.Fatalf("acknowledged %v, want %v", acked, paths(sorted))
	}
	valid, err = dst.QueryValidPaths(paths(sorted), false, false)
	if err != nil || len(valid) != 2 {
		t.Fatalf("after add the store holds %v (err %v), want both paths", valid, err)
	}
	// The store has the files themselves, and the same metadata.
	if b, err := os.ReadFile(filepath.Join(root, top)); err != nil || !strings.Contains(string(b), sorted[0].Path) {
		t.Fatalf("%s in the new store: %q, %v", top, b, err)
	}
	got, err := dst.QueryPathInfos(paths(sorted))
	if err != nil || len(got) != 2 {
		t.Fatalf("path infos: %v, %v", got, err)
	}
	// The store answers in its own order; the copy on needs references first.
	if got, err = Sort(got); err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		want := sorted[i]
		if g.Path != want.Path || g.NarSize != want.NarSize || mustBase16(t, g.NarHash) != mustBase16(t, want.NarHash) {
			t.Errorf("path info %+v, want %+v", g, want)
		}
	}

	// Stream it on from that store to a third one, as from a builder to a
	// target, and check the NARs match this machine's byte for byte.
	next, _ := serveStore(t, ctx)
	var viaBuilder, local bytes.Buffer
	dump := dst.Dump(got)
	tee := func(info PathInfo) (io.ReadCloser, error) {
		r, err := dump(info)
		if err != nil {
			return nil, err
		}
		l, _ := LocalNAR(info)
		defer l.Close()
		io.Copy(&local, l)
		return struct {
			io.Reader
			io.Closer
		}{io.TeeReader(r, &viaBuilder), r}, nil
	}
	if err := next.Add(ctx, got, tee, nil); err != nil {
		t.Fatalf("add from a dump: %v", err)
	}
	if !bytes.Equal(viaBuilder.Bytes(), local.Bytes()) || local.Len() == 0 {
		t.Fatalf("dumped NARs (%d bytes) differ from this machine's (%d bytes)", viaBuilder.Len(), local.Len())
	}
	if valid, err := next.QueryValidPaths(paths(got), false, false); err != nil || len(valid) != 2 {
		t.Fatalf("the third store holds %v (err %v)", valid, err)
	}
	// The first store still answers after the dump.
	if valid, err := dst.QueryValidPaths([]string{top}, false, false); err != nil || len(valid) != 1 {
		t.Fatalf("after dumping: %v, %v", valid, err)
	}
}

func mustBase16(t *testing.T, h string) string {
	t.Helper()
	s, err := base16(h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAddRefusedNamesPathAndReason(t *testing.T) {
	ctx := context.Background()
	_, infos := buildClosure(t)
	sorted, err := Sort(infos)
	if err != nil {
		t.Fatal(err)
	}
	// A wrong hash on the first path: the store must refuse it, and the
	// error must name that path and carry the store's own words.
	bad := append([]PathInfo(nil), sorted...)
	bad[0].NarHash = "sha256:" + strings.Repeat("0", 52)
	dst, _ := serveStore(t, ctx)
	err = dst.Add(ctx, bad, LocalNAR, nil)
	var ae *AddError
	if !errors.As(err, &ae) || ae.Path != sorted[0].Path {
		t.Fatalf("err = %v, want an AddError for %s", err, sorted[0].Path)
	}
	if !strings.Contains(err.Error(), "hash mismatch") {
		t.Fatalf("err = %v, want the store's reason (hash mismatch)", err)
	}
}

func TestSort(t *testing.T) {
	in := []PathInfo{
		{Path: "/nix/store/c", References: []string{"/nix/store/b", "/nix/store/c", "/nix/store/elsewhere"}},
		{Path: "/nix/store/a"},
		{Path: "/nix/store/b", References: []string{"/nix/store/a"}},
	}
	out, err := Sort(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(paths(out), " "); got != "/nix/store/a /nix/store/b /nix/store/c" {
		t.Fatalf("Sort = %s", got)
	}
	in[1].References = []string{"/nix/store/c"}
	if _, err := Sort(in); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("a cycle gave %v", err)
	}
}

func TestHandshakeRefusesNonServer(t *testing.T) {
	var in bytes.Buffer
	_, err := Handshake(Transport{In: &in, Out: strings.NewReader("Welcome to my server!\n\x00\x00\x00\x00\x00\x00\x00\x00")})
	if err == nil || !strings.Contains(err.Error(), "not a nix-store --serve server") {
		t.Fatalf("err = %v", err)
	}
}

// TestAddFromMemory: a NAR held in memory goes to the store straight from
// its bytes, each of them counted as sent; one whose size is not its
// metadata's is refused as the source's fault before a byte goes.
func TestAddFromMemory(t *testing.T) {
	ctx := context.Background()
	_, infos := buildClosure(t)
	sorted, err := Sort(infos)
	if err != nil {
		t.Fatal(err)
	}
	var sent, want int64
	src := func(info PathInfo) (io.ReadCloser, error) {
		r, err := LocalNAR(info)
		if err != nil {
			return nil, err
		}
		m, ok := r.(*MemoryNAR)
		if !ok {
			t.Fatalf("LocalNAR of a small path gave a %T, not a *MemoryNAR", r)
		}
		m.OnSent(func(n int64) { sent += n })
		want += info.NarSize
		return m, nil
	}
	dst, _ := serveStore(t, ctx)
	if err := dst.Add(ctx, sorted, src, nil); err != nil {
		t.Fatalf("add: %v", err)
	}
	if sent != want || want == 0 {
		t.Errorf("counted %d bytes sent, want %d", sent, want)
	}
	if valid, err := dst.QueryValidPaths(paths(sorted), false, false); err != nil || len(valid) != 2 {
		t.Fatalf("the store holds %v (err %v), want both paths", valid, err)
	}

	short := func(info PathInfo) (io.ReadCloser, error) {
		return NewMemoryNAR(make([]byte, info.NarSize-1)), nil
	}
	other, _ := serveStore(t, ctx)
	err = other.Add(ctx, sorted[:1], short, nil)
	var se *SourceError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "not the") {
		t.Fatalf("a NAR a byte short: %v, want a SourceError about its size", err)
	}
}
