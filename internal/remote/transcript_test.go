package remote

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTranscriptRecordsCommandsInFull: each command's line, all its
// output (a last line without a newline too) and its exit status, every
// line under the command's number, also when commands run at once.
func TestTranscriptRecordsCommandsInFull(t *testing.T) {
	var out syncBuffer
	ctx := WithTranscript(context.Background(), NewTranscript(&out))
	l := &Local{}
	var stdout strings.Builder
	if err := l.Run(ctx, Cmd{Argv: []string{"sh", "-c", "echo one; echo two >&2; printf three"}, Stdout: &stdout}); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "one\nthree" {
		t.Errorf("the caller's stdout got %q", stdout.String())
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			err := l.Run(ctx, Cmd{Argv: []string{"sh", "-c", "for i in 1 2 3; do echo line $i; done; exit 3"}})
			if ee, ok := err.(*ExitError); !ok || ee.Status != 3 {
				t.Errorf("err = %v, want exit status 3", err)
			}
		})
	}
	wg.Wait()
	text := out.String()
	for _, re := range []string{
		`(?m)^\[1\] \d\d:\d\d:\d\d\.\d{3} \$ sh -c 'echo one; echo two >&2; printf three'$`,
		`(?m)^\[1\] out\| one$`,
		`(?m)^\[1\] err\| two$`,
		`(?m)^\[1\] out\| three$`,
		`(?m)^\[1\] exit status 0 after \d+\.\d\ds$`,
		`(?m)^\[5\] exit status 3 after`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("no line matching %s in:\n%s", re, text)
		}
	}
	for n := 2; n <= 5; n++ {
		for i := 1; i <= 3; i++ {
			want := "[" + string(rune('0'+n)) + "] out| line " + string(rune('0'+i)) + "\n"
			if !strings.Contains(text, want) {
				t.Errorf("no %q in:\n%s", want, text)
			}
		}
	}
	// A script's lines stay under its number.
	if err := l.Run(ctx, Cmd{Argv: []string{"sh", "-c", "true\necho done"}}); err != nil {
		t.Fatal(err)
	}
	if text := out.String(); !strings.Contains(text, "[6] cmd| echo done'\n[6] out| done\n") {
		t.Errorf("a script's second line is not under its number:\n%s", text)
	}
	// Without a transcript nothing is recorded and nothing breaks.
	if err := l.Run(context.Background(), Cmd{Argv: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTranscriptEndsAndCloses: the end line is one line under the
// command's number whatever the error (wrapped, several lines); the
// writer is closed once the last command under way has ended, with its
// end line, and nothing is written after.
func TestTranscriptEndsAndCloses(t *testing.T) {
	var out closingBuffer
	tr := NewTranscript(&out)
	tr.now = func() time.Time { return time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC) }
	a := tr.begin("a")
	b := tr.begin("b")
	a.end(fmt.Errorf("sudo wants a password: %w", &ExitError{Status: 1, Stderr: "sudo: a password is required\nmore"}))
	tr.Close()
	if out.closed {
		t.Fatal("closed while a command was under way")
	}
	fmt.Fprint(b.stderr(nil), "late\n")
	b.end(errors.New("start x: first\nsecond"))
	if !out.closed {
		t.Fatal("not closed after the last command ended")
	}
	c := tr.begin("c")
	c.end(nil)
	want := "[1] exit status 1 after 0.00s\n" +
		"[2] err| late\n" +
		"[2] failed: start x: first\n[2] why| second after 0.00s\n"
	if got := out.String(); !strings.HasSuffix(got, want) || strings.Contains(got, "[3]") {
		t.Errorf("transcript:\n%s\nwant it to end with:\n%s", got, want)
	}
}

type closingBuffer struct {
	strings.Builder
	closed bool
}

func (c *closingBuffer) Close() error { c.closed = true; return nil }
