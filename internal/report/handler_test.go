package report

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestHandlerLines(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, slog.LevelDebug)
	log := slog.New(h)
	log.Debug("exec", "host", "web-1", "cmd", "nix-env --set /nix/store/x")
	log.Info("pushed", "host", "web-1", "paths", 3)
	log.Warn("recorded new host key", "host", "db", "key", "ssh-ed25519 SHA256:abc")
	log.Error("failed", "err", "boom")
	w := h.Lines("web-2")
	w.Write([]byte("activating the\r\nconfiguration...\npartial"))
	w.Close()
	want := `[web-1] + nix-env --set /nix/store/x
[web-1] pushed paths=3
[db] warning: recorded new host key key="ssh-ed25519 SHA256:abc"
error: failed err=boom
[web-2] activating the
[web-2] configuration...
[web-2] partial
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	slog.New(NewHandler(&buf, slog.LevelInfo)).Debug("exec", "cmd", "x")
	if buf.Len() != 0 {
		t.Errorf("debug record written at info level: %q", buf.String())
	}
}

// TestStatusStaysBelow: on a terminal, a record erases the status line,
// is written, and the status line is drawn again below it; once cleared,
// records are plain again.
func TestStatusStaysBelow(t *testing.T) {
	var out strings.Builder
	h := NewHandler(&out, slog.LevelInfo)
	log := slog.New(h)
	status, clear := h.Status()
	io.WriteString(status, "\rbuilding 1/2")
	log.Info("built", "host", "alpha")
	w := h.Lines("beta")
	io.WriteString(w, "a log line\n")
	clear()
	log.Info("done")
	want := "\r\x1b[Kbuilding 1/2" +
		"\r\x1b[K[alpha] built\nbuilding 1/2" +
		"\r\x1b[K[beta] a log line\nbuilding 1/2" +
		"\r\x1b[K" +
		"done\n"
	if out.String() != want {
		t.Errorf("output %q\nwant   %q", out.String(), want)
	}
}

// TestBoardStaysBelow: the board's lines and the bar are drawn below the
// records; a record takes all of them off (up to the board's first line,
// then clear to the end of the screen), goes above, and they come back.
func TestBoardStaysBelow(t *testing.T) {
	var out strings.Builder
	h := NewHandler(&out, slog.LevelInfo)
	log := slog.New(h)
	h.SetBoard([]string{"  alpha  push", "  beta   build"})
	status, clear := h.Status()
	io.WriteString(status, "\rpushing 1/2")
	log.Info("pushed", "host", "alpha")
	h.SetBoard([]string{"  beta   build"})
	clear()
	h.SetBoard(nil)
	log.Info("done")
	want := "\r\x1b[K  alpha  push\n  beta   build" +
		"\x1b[1A\r\x1b[J  alpha  push\n  beta   build\npushing 1/2" +
		"\x1b[2A\r\x1b[J[alpha] pushed\n  alpha  push\n  beta   build\npushing 1/2" +
		"\x1b[2A\r\x1b[J  beta   build\npushing 1/2" +
		"\x1b[1A\r\x1b[J  beta   build" +
		"\r\x1b[K" +
		"done\n"
	if out.String() != want {
		t.Errorf("output %q\nwant   %q", out.String(), want)
	}
}

// TestStatusFitsTheTerminal: each status line is cut to the width, and
// board lines that would not fit the height above the bar are left out
// (a wrapped or scrolled status would throw the redrawing off).
func TestStatusFitsTheTerminal(t *testing.T) {
	var out strings.Builder
	h := NewHandler(&out, slog.LevelInfo)
	h.SetSize(10, 4)
	status, _ := h.Status()
	io.WriteString(status, "\rpushing 50% |#####     |")
	out.Reset()
	h.SetBoard([]string{"  a-long-name  push", "  b  push", "  c  push", "  d  push"})
	want := "\r\x1b[K  a-long…\n  b  push\npushing …"
	if out.String() != want {
		t.Errorf("output %q\nwant   %q", out.String(), want)
	}
}
