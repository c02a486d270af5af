package activate

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/remote"
)

// TestParseChecksMorphDefaults: morph's shape is read with its defaults,
// and what cannot run is rejected naming the check.
func TestParseChecksMorphDefaults(t *testing.T) {
	c, err := ParseChecks(json.RawMessage(`{"cmd":[{"description":"up","cmd":["true"]}],"http":[{"port":8080,"host":null,"headers":{"Host":"x"}}],"tcp":[{"port":22,"period":0.5}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cmd[0].Period != 2 || c.Cmd[0].Timeout != 5 || c.HTTP[0].Scheme != "http" || c.HTTP[0].Path != "/" || c.TCP[0].Period != 0.5 || c.TCP[0].Timeout != 5 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c, err := ParseChecks(nil); err != nil || !c.Empty() {
		t.Errorf("no checks: %+v, %v", c, err)
	}
	for raw, want := range map[string]string{
		`{"cmd":[{"cmd":[]}]}`:                 "deployment.healthChecks.cmd[0]: cmd is empty",
		`{"http":[{"port":0}]}`:                "deployment.healthChecks.http[0]: port 0 is not a TCP port",
		`{"http":[{"port":1,"scheme":"ftp"}]}`: `scheme "ftp" is not http or https`,
		`{"tcp":[{"port":22,"timeout":-1}]}`:   "deployment.healthChecks.tcp[0]: period and timeout must be positive",
		`{"udp":[]}`:                           `unknown field "udp"`,
	} {
		if _, err := ParseChecks(json.RawMessage(raw)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", raw, err, want)
		}
	}
}

// failingTarget is a host on which every command exits 1.
type failingTarget struct{ runs atomic.Int32 }

func (f *failingTarget) Run(ctx context.Context, cmd remote.Cmd) error {
	f.runs.Add(1)
	return &remote.ExitError{Status: 1}
}

func (f *failingTarget) Start(ctx context.Context, cmd remote.Cmd) (*remote.Process, error) {
	panic("not used")
}

// TestProbeRetriesUntilDeadline: each check is retried every period until
// it passes or the deadline ends it; results keep the checks' order and
// say why the last try failed.
func TestProbeRetriesUntilDeadline(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) < 3 || r.Header.Get("X-Probe") != "yes" {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	fast := Timing{Period: 0.05, Timeout: 1}
	checks := Checks{
		Cmd:  []CmdCheck{{Description: "never", Cmd: []string{"false"}, Timing: fast}},
		HTTP: []HTTPCheck{{Scheme: "http", Port: p, Path: "/health", Headers: map[string]string{"X-Probe": "yes"}, Timing: fast}},
		TCP:  []TCPCheck{{Description: "closed", Port: closedPort, Timing: fast}},
	}
	target := &failingTarget{}
	start := time.Now()
	res := Probe(context.Background(), target, checks, host, 700*time.Millisecond, nil)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the probes took %s past their 700ms deadline", took)
	}
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	if res[0].OK || res[0].Check != `cmd check "never"` || res[0].Attempts < 3 || int(target.runs.Load()) != res[0].Attempts || !strings.Contains(res[0].Error, "exit status 1") {
		t.Errorf("cmd check: %+v (%d runs)", res[0], target.runs.Load())
	}
	if !res[1].OK || res[1].Attempts != 3 || res[1].Check != "http check http://"+net.JoinHostPort(host, port)+"/health" {
		t.Errorf("http check: %+v", res[1])
	}
	if res[2].OK || !strings.Contains(res[2].Error, "refused") {
		t.Errorf("tcp check: %+v", res[2])
	}
}
