package activate

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/shell"
)

// Checks are a host's health checks, deployment.healthChecks in morph's
// shape: commands run on the host, HTTP requests and TCP connections made
// from the deploying machine.
type Checks struct {
	Cmd  []CmdCheck  `json:"cmd"`
	HTTP []HTTPCheck `json:"http"`
	TCP  []TCPCheck  `json:"tcp"`
}

// Empty reports whether there is nothing to check.
func (c Checks) Empty() bool { return len(c.Cmd)+len(c.HTTP)+len(c.TCP) == 0 }

// Timing is how often a check is tried and how long one try may take, in
// seconds.
type Timing struct {
	Period  float64 `json:"period"`
	Timeout float64 `json:"timeout"`
}

// CmdCheck is a command run on the host as the SSH user; exit status 0 is
// healthy.
type CmdCheck struct {
	Description string   `json:"description"`
	Cmd         []string `json:"cmd"`
	Timing
}

// HTTPCheck is a request from the deploying machine; any 2xx status is
// healthy.
type HTTPCheck struct {
	Description string `json:"description"`
	Scheme      string `json:"scheme"`
	// Host is nil for the target host.
	Host        *string           `json:"host"`
	Port        int               `json:"port"`
	Path        string            `json:"path"`
	Headers     map[string]string `json:"headers"`
	InsecureSSL bool              `json:"insecureSSL"`
	Timing
}

// TCPCheck is a connection from the deploying machine; one accepted is
// healthy.
type TCPCheck struct {
	Description string  `json:"description"`
	Host        *string `json:"host"`
	Port        int     `json:"port"`
	Timing
}

// ParseChecks reads deployment.healthChecks as Nix gave it (nil or null:
// none), applies morph's defaults (period 2 s, timeout 5 s, scheme http,
// path /) and rejects what cannot run.
func ParseChecks(raw json.RawMessage) (Checks, error) {
	var c Checks
	if len(raw) == 0 || string(raw) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("deployment.healthChecks: %w", err)
	}
	var errs []error
	timing := func(where string, t *Timing) {
		if t.Period == 0 {
			t.Period = 2
		}
		if t.Timeout == 0 {
			t.Timeout = 5
		}
		if t.Period < 0 || t.Timeout < 0 {
			errs = append(errs, fmt.Errorf("%s: period and timeout must be positive", where))
		}
	}
	port := func(where string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: port %d is not a TCP port", where, p))
		}
	}
	for i := range c.Cmd {
		where := fmt.Sprintf("deployment.healthChecks.cmd[%d]", i)
		if len(c.Cmd[i].Cmd) == 0 {
			errs = append(errs, fmt.Errorf("%s: cmd is empty", where))
		}
		timing(where, &c.Cmd[i].Timing)
	}
	for i := range c.HTTP {
		h := &c.HTTP[i]
		where := fmt.Sprintf("deployment.healthChecks.http[%d]", i)
		if h.Scheme == "" {
			h.Scheme = "http"
		}
		if h.Scheme != "http" && h.Scheme != "https" {
			errs = append(errs, fmt.Errorf("%s: scheme %q is not http or https", where, h.Scheme))
		}
		if h.Path == "" {
			h.Path = "/"
		}
		if !strings.HasPrefix(h.Path, "/") {
			errs = append(errs, fmt.Errorf("%s: path %q does not start with /", where, h.Path))
		}
		port(where, h.Port)
		timing(where, &h.Timing)
	}
	for i := range c.TCP {
		where := fmt.Sprintf("deployment.healthChecks.tcp[%d]", i)
		port(where, c.TCP[i].Port)
		timing(where, &c.TCP[i].Timing)
	}
	return c, errors.Join(errs...)
}

// ProbeResult is one check's outcome.
type ProbeResult struct {
	Check    string        `json:"check"`
	OK       bool          `json:"ok"`
	Attempts int           `json:"attempts"`
	Took     time.Duration `json:"-"`
	// Error is the last failed attempt's.
	Error string `json:"error,omitempty"`
}

// MarshalJSON gives Took in words ("1.2s").
func (r ProbeResult) MarshalJSON() ([]byte, error) {
	type plain ProbeResult
	return json.Marshal(struct {
		plain
		Took string `json:"took"`
	}{plain(r), r.Took.Round(time.Millisecond).String()})
}

func (r ProbeResult) String() string {
	if r.OK {
		return fmt.Sprintf("%s: healthy (%s)", r.Check, plural(r.Attempts, "attempt"))
	}
	return fmt.Sprintf("%s: %s (%s)", r.Check, r.Error, plural(r.Attempts, "attempt"))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// probe is one check ready to try.
type probe struct {
	name string
	Timing
	try func(ctx context.Context) error
}

// probes turns checks into tries: commands on t, requests to host (the
// target's address) unless a check names its own.
// checkName is how a check is named in messages.
func checkName(kind, desc, what string) string {
	if desc != "" {
		return fmt.Sprintf("%s check %q", kind, desc)
	}
	return kind + " check " + what
}

// hostOr is a check's host: its own, else the target's.
func hostOr(h *string, host string) string {
	if h != nil && *h != "" {
		return *h
	}
	return host
}

// CheckLine is a check as a shell line a person can run: true when
// healthy.
type CheckLine struct {
	Name   string
	Line   string
	Period time.Duration
}

// Lines are the checks as shell lines, as Probe makes them: a cmd check
// through onHost (the ssh line that runs argv on the host as the SSH
// user), http ones with curl, tcp ones with bash's /dev/tcp, each try
// limited to the check's timeout.
func (c Checks) Lines(host string, onHost func(argv []string) string) []CheckLine {
	var out []CheckLine
	secs := func(t Timing) string { return strconv.FormatFloat(t.Timeout, 'f', -1, 64) }
	period := func(t Timing) time.Duration { return time.Duration(t.Period * float64(time.Second)) }
	for _, cc := range c.Cmd {
		line := shell.Join([]string{"timeout", secs(cc.Timing)}) + " " + onHost(cc.Cmd)
		out = append(out, CheckLine{checkName("cmd", cc.Description, strings.Join(cc.Cmd, " ")), line, period(cc.Timing)})
	}
	for _, hc := range c.HTTP {
		url := hc.Scheme + "://" + net.JoinHostPort(hostOr(hc.Host, host), strconv.Itoa(hc.Port)) + hc.Path
		curl := []string{"curl", "--silent", "--noproxy", "*", "--output", "/dev/null", "--write-out", "%{http_code}", "--max-time", secs(hc.Timing)}
		if hc.InsecureSSL {
			curl = append(curl, "--insecure")
		}
		for _, k := range slices.Sorted(maps.Keys(hc.Headers)) {
			curl = append(curl, "--header", k+": "+hc.Headers[k])
		}
		curl = append(curl, "--", url)
		// Any 2xx status is healthy, as Probe says.
		line := shell.Join([]string{"sh", "-c", shell.Join(curl) + " | grep -q '^2'"})
		out = append(out, CheckLine{checkName("http", hc.Description, url), line, period(hc.Timing)})
	}
	for _, tc := range c.TCP {
		h := hostOr(tc.Host, host)
		line := shell.Join([]string{"timeout", secs(tc.Timing), "bash", "-c", "exec 3<>/dev/tcp/" + h + "/" + strconv.Itoa(tc.Port)})
		out = append(out, CheckLine{checkName("tcp", tc.Description, net.JoinHostPort(h, strconv.Itoa(tc.Port))), line, period(tc.Timing)})
	}
	return out
}

func (c Checks) probes(t Target, host string) []probe {
	var ps []probe
	name := checkName
	for _, cc := range c.Cmd {
		ps = append(ps, probe{name("cmd", cc.Description, strings.Join(cc.Cmd, " ")), cc.Timing, func(ctx context.Context) error {
			err := t.Run(ctx, remote.Cmd{Argv: cc.Cmd, Stdout: io.Discard})
			var ee *remote.ExitError
			if errors.As(err, &ee) {
				return err
			}
			if err != nil {
				return fmt.Errorf("could not run it: %w", err)
			}
			return nil
		}})
	}
	for _, hc := range c.HTTP {
		url := hc.Scheme + "://" + net.JoinHostPort(hostOr(hc.Host, host), strconv.Itoa(hc.Port)) + hc.Path
		client := &http.Client{Transport: &http.Transport{
			Proxy:           nil,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: hc.InsecureSSL}, //nolint:gosec // the user asked for it
		}}
		ps = append(ps, probe{name("http", hc.Description, url), hc.Timing, func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			for k, v := range hc.Headers {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("answered %s", resp.Status)
			}
			return nil
		}})
	}
	for _, tc := range c.TCP {
		addr := net.JoinHostPort(hostOr(tc.Host, host), strconv.Itoa(tc.Port))
		ps = append(ps, probe{name("tcp", tc.Description, addr), tc.Timing, func(ctx context.Context) error {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return conn.Close()
		}})
	}
	return ps
}

// Probe runs every check concurrently, each tried every period until it
// passes or deadline has passed (each try limited to its timeout), and
// returns the results in the order of the checks. onResult, when set, is
// told of each result as it comes.
func Probe(ctx context.Context, t Target, checks Checks, host string, deadline time.Duration, onResult func(ProbeResult)) []ProbeResult {
	ps := checks.probes(t, host)
	results := make([]ProbeResult, len(ps))
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runProbe(ctx, p, deadline)
			results[i] = r
			if onResult != nil {
				mu.Lock()
				onResult(r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return results
}

// runProbe tries p until it passes or ctx ends.
func runProbe(ctx context.Context, p probe, deadline time.Duration) ProbeResult {
	r := ProbeResult{Check: p.name}
	start := time.Now()
	seconds := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	for {
		r.Attempts++
		tctx, cancel := context.WithTimeout(ctx, seconds(p.Timeout))
		err := p.try(tctx)
		timedOut := tctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			r.OK, r.Error = true, ""
			r.Took = time.Since(start)
			return r
		case ctx.Err() != nil:
			// The deadline cut this try short: the last whole try's
			// error says more.
			if r.Attempts == 1 {
				r.Error = fmt.Sprintf("no answer within the probe deadline of %s", deadline)
			} else {
				r.Attempts--
			}
			r.Took = time.Since(start)
			return r
		case timedOut:
			r.Error = fmt.Sprintf("no answer within its timeout of %gs", p.Timeout)
		default:
			r.Error = err.Error()
		}
		select {
		case <-ctx.Done():
			r.Took = time.Since(start)
			return r
		case <-time.After(seconds(p.Period)):
		}
	}
}
