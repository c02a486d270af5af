package build

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestBuildKeepsGoing builds five derivations in one call: two fail on
// their own, one fails because its dependency does, two build. Each failed
// one carries its own error, never another's.
func TestBuildKeepsGoing(t *testing.T) {
	nixtest.Require(t, "nix", "nix-store")
	dir := t.TempDir()
	// The unique salt makes fresh derivations, so the test really builds.
	expr := `salt: let mk = name: script: deps: derivation { inherit name deps salt; system = "` + nixtest.System() + `"; builder = "/bin/sh"; args = [ "-c" script ]; };
	  dep = mk "dep" "echo the dependency fails on purpose >&2; exit 1" [ ];
	in {
	  a = mk "a" "echo a > $out" [ ];
	  b = mk "b" "echo b fails on purpose >&2; exit 1" [ ];
	  c = mk "c" "echo c > $out" [ ];
	  d = mk "d" "echo d breaks differently >&2; exit 2" [ ];
	  e = mk "e" "echo e > $out" [ dep ];
	}`
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	var reqs []Request
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		args := []string{"eval", "--raw", "--file", filepath.Join(dir, "default.nix"), "--apply", "f: let d = (f \"" + dir + "\")." + name + "; in d.drvPath + \" \" + d.outPath"}
		out, err := n.Nix(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		drv, outPath, _ := strings.Cut(string(out), " ")
		reqs = append(reqs, Request{Host: name, DrvPath: drv, OutPath: outPath})
	}
	var mu sync.Mutex
	logged := map[string][]string{}
	res, err := Build(ctx, n, reqs, Options{OnLog: func(host, drv, line string) {
		mu.Lock()
		defer mu.Unlock()
		logged[host] = append(logged[host], line)
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"b": "b fails on purpose", "d": "d breaks differently", "e": "the dependency fails on purpose"}
	for i, r := range res {
		if r.Host != reqs[i].Host {
			t.Fatalf("result %d is for %s, want %s", i, r.Host, reqs[i].Host)
		}
		msg, fails := want[r.Host]
		switch {
		case !fails:
			if r.Err != nil || r.Toplevel != reqs[i].OutPath {
				t.Errorf("%s: toplevel %q err %v", r.Host, r.Toplevel, r.Err)
			} else if _, err := os.Stat(r.Toplevel); err != nil {
				t.Errorf("%s: built output missing: %v", r.Host, err)
			}
		case r.Err == nil:
			t.Errorf("%s: no error", r.Host)
		default:
			if !strings.Contains(r.Err.Error(), msg) {
				t.Errorf("%s: error %q, want it to contain %q", r.Host, r.Err, msg)
			}
			for other, otherMsg := range want {
				if other != r.Host && strings.Contains(r.Err.Error(), otherMsg) {
					t.Errorf("%s's error carries %s's log: %q", r.Host, other, r.Err)
				}
			}
		}
	}
	if got := strings.Join(logged["b"], "|"); got != "b fails on purpose" {
		t.Errorf("log lines given for host b: %q", got)
	}
	if got := strings.Join(logged[""], "|"); !strings.Contains(got, "the dependency fails on purpose") {
		t.Errorf("the dependency's log lines were not given as such: %q", got)
	}
}

// TestHostErrorWithCurrentNixMessages feeds the structured log as current
// Nix (2.13+) and Lix write it when several builds fail: each builder's
// failure, "dependencies of derivation … failed", and a closing "build of
// …, … failed" naming every failed installable. Each host's error must
// still be its own.
func TestHostErrorWithCurrentNixMessages(t *testing.T) {
	nixtest.Require(t, "nix", "nix-store")
	dir := t.TempDir()
	expr := `salt: let mk = name: deps: derivation { inherit name deps salt; system = "` + nixtest.System() + `"; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; };
	  dep = mk "dep" [ ];
	in { inherit dep; a = mk "a" [ ]; e = mk "e" [ dep ]; }`
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	drv := map[string]string{}
	for _, name := range []string{"dep", "a", "e"} {
		out, err := n.Nix(context.Background(), "eval", "--raw", "--file", filepath.Join(dir, "default.nix"), "--apply", "f: (f \""+dir+"\")."+name+".drvPath")
		if err != nil {
			t.Fatal(err)
		}
		drv[name] = string(out)
	}
	blog := nix.NewBuildLog()
	for _, l := range []string{
		`{"action":"start","id":1,"type":105,"fields":["` + drv["dep"] + `","",1,1]}`,
		`{"action":"result","id":1,"type":101,"fields":["the dependency fails"]}`,
		`{"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m builder for '` + drv["dep"] + `' failed with exit code 1"}`,
		`{"action":"start","id":2,"type":105,"fields":["` + drv["a"] + `","",1,1]}`,
		`{"action":"result","id":2,"type":101,"fields":["a fails"]}`,
		`{"action":"msg","level":0,"msg":"error: builder for '` + drv["a"] + `' failed with exit code 1"}`,
		`{"action":"msg","level":0,"msg":"error: 1 dependencies of derivation '` + drv["e"] + `' failed to build"}`,
		`{"action":"msg","level":0,"msg":"error: build of '` + drv["a"] + `^out', '` + drv["e"] + `^out' failed"}`,
	} {
		blog.Add("@nix " + l)
	}
	f := &failures{n: n, log: blog}
	errA := f.hostError(context.Background(), drv["a"], errors.New("nix build failed")).Error()
	errE := f.hostError(context.Background(), drv["e"], errors.New("nix build failed")).Error()
	if !strings.Contains(errA, "a fails") || strings.Contains(errA, "dependency fails") || strings.Contains(errA, drv["e"]) {
		t.Errorf("a's error:\n%s", errA)
	}
	if !strings.Contains(errE, "a dependency of "+drv["e"]) || !strings.Contains(errE, "the dependency fails") || strings.Contains(errE, "a fails") {
		t.Errorf("e's error:\n%s", errE)
	}
}

// TestBuildRootsOutputs: with RootDir, the build itself leaves every
// toplevel a GC root (no window between the build and the caller's roots).
func TestBuildRootsOutputs(t *testing.T) {
	nixtest.Require(t, "nix", "nix-store")
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	salt := t.TempDir()
	var reqs []Request
	for _, name := range []string{"one", "two"} {
		expr := `derivation { name = "` + name + `"; salt = "` + salt + `"; system = "` + nixtest.System() + `"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }`
		out, err := n.Nix(ctx, "eval", "--raw", "--impure", "--expr", "let d = "+expr+"; in d.drvPath + \" \" + d.outPath")
		if err != nil {
			t.Fatal(err)
		}
		drv, outPath, _ := strings.Cut(string(out), " ")
		reqs = append(reqs, Request{Host: name, DrvPath: drv, OutPath: outPath})
	}
	pending, err := Pending(ctx, n, reqs)
	if err != nil || pending["one"] != 1 || pending["two"] != 1 {
		t.Fatalf("before the build, Pending = %v, %v; want one derivation each", pending, err)
	}
	roots := t.TempDir()
	var progress [][2]int
	res, err := Build(ctx, n, reqs, Options{RootDir: roots, OnProgress: func(done, expected int) { progress = append(progress, [2]int{done, expected}) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Host, r.Err)
		}
		out, err := n.Run(ctx, nil, "nix-store", "--query", "--roots", r.Toplevel)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), roots+"/result") {
			t.Errorf("%s: %s is not rooted under %s; its roots:\n%s", r.Host, r.Toplevel, roots, out)
		}
	}
	if len(progress) == 0 || progress[len(progress)-1] != [2]int{2, 2} {
		t.Errorf("progress reported %v, want it to end at 2 of 2", progress)
	}
	if pending, err := Pending(ctx, n, reqs); err != nil || pending["one"] != 0 || pending["two"] != 0 {
		t.Errorf("after the build, Pending = %v, %v; want nothing", pending, err)
	}
}

func TestParseWillBuild(t *testing.T) {
	for _, text := range []string{
		// Nix 2.8
		"these 2 derivations will be built:\n  /nix/store/a-x.drv\n  /nix/store/b-y.drv\n",
		// current Nix and Lix, with paths to fetch after
		"these 2 derivations will be built:\n  /nix/store/a-x.drv\n  /nix/store/b-y.drv\nthese 2 paths will be fetched (0.10 MiB download, 0.50 MiB unpacked):\n  /nix/store/c-z\n  /nix/store/d-w.drv\n",
	} {
		got := parseWillBuild(text)
		if len(got) != 2 || !got["/nix/store/a-x.drv"] || !got["/nix/store/b-y.drv"] {
			t.Errorf("parseWillBuild(%q) = %v", text, got)
		}
	}
	if got := parseWillBuild("this derivation will be built:\n  /nix/store/a-x.drv\n"); !got["/nix/store/a-x.drv"] {
		t.Errorf("one derivation: %v", got)
	}
}
