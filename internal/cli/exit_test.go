package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestExitCodeTable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{usageErrorf("bad"), 2},
		{fmt.Errorf("wrapped: %w", usageErrorf("bad")), 2},
		{&hostsFailedError{failed: 1, total: 3}, 3},
		{&hostsFailedError{failed: 3, total: 3}, 1},
		{context.Canceled, 130},
	} {
		if got := exitCode(ctx, tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := exitCode(cancelled, errors.New("nix: killed")); got != 130 {
		t.Errorf("an error after interruption gave %d, want 130", got)
	}
}

func TestMainExitCodes(t *testing.T) {
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), Invocation{Args: args, Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Env: []string{"HOME=/nonexistent"}})
		return code, errb.String()
	}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, 0},
		{[]string{"deploy"}, 2},
		{[]string{"build"}, 2},
		{[]string{"nope"}, 2},
		{[]string{"list", "--bogus"}, 2},
		{[]string{"-p", "0", "list"}, 2},
		{[]string{"deploy", "--all", "--action", "x"}, 2},
		{[]string{"push"}, 2},
		{[]string{"activate", "--manifest", "/nonexistent", "--all"}, 2},
		{[]string{"rollback"}, 2},
		{[]string{"--flake", "./nowhere", "list"}, 2},
		{[]string{"deploy", "--all", "web-1"}, 2},
		{[]string{"deploy", "--", "-oProxyCommand=x"}, 2},
		{[]string{"deploy", "--closure", "/nix/store/x", "a", "b"}, 2},
		{[]string{"rollback", "--help"}, 0},
		{[]string{"status"}, 2},
	} {
		if got, stderr := run(tc.args...); got != tc.want {
			t.Errorf("deployctl %v exited %d, want %d\n%s", tc.args, got, tc.want, stderr)
		}
	}
	var jout, jerr bytes.Buffer
	code := Main(context.Background(), Invocation{Args: []string{"--json", "deploy"}, Stdout: &jout, Stderr: &jerr})
	if code != 2 || !strings.Contains(jout.String(), `"error":"no hosts selected`) || !strings.Contains(jout.String(), `"exitCode":2`) {
		t.Errorf("--json usage error: exit %d, stdout %q", code, jout.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	if code := Main(ctx, Invocation{Args: []string{"--flake", "/nonexistent", "list"}, Stdout: &out, Stderr: &errb}); code != 130 {
		t.Errorf("interrupted run exited %d, want 130: %s", code, errb.String())
	}
}
