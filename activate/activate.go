// Package activate makes a pushed system the running one on its target, or
// puts the target back exactly as it was.
package activate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/shell"
	"github.com/deployctl/deployctl/push"
)

// SystemProfile is the NixOS system profile.
const SystemProfile = "/nix/var/nix/profiles/system"

// Journal is the file on each target where every activation appends a line.
const Journal = "/var/lib/deployctl/journal.jsonl"

// Actions are the switch-to-configuration actions.
var Actions = []string{"switch", "boot", "test", "dry-activate"}

// Target runs commands on the host; *remote.Conn is one.
type Target interface {
	Run(ctx context.Context, cmd remote.Cmd) error
	Start(ctx context.Context, cmd remote.Cmd) (*remote.Process, error)
}

// Request is one activation.
type Request struct {
	// ID names this deploy on the host (its state is under Dir/ID).
	ID       string
	Toplevel string
	Action   string
	// Holder says who deploys, for the lock and the journal.
	Holder Holder
	// AllowFailedUnits accepts switch-to-configuration's status 4 (some
	// units failed) as a success.
	AllowFailedUnits bool
	// NoRollback leaves a host whose switch or checks failed as it is.
	NoRollback bool
	// Checks run after a switch or test, for at most ProbeTimeout; their
	// HTTP and TCP checks go to ProbeHost unless they name a host.
	Checks       Checks
	ProbeTimeout time.Duration
	ProbeHost    string
	// Rollback marks this activation, in the journal, as a rollback.
	Rollback bool
	// ConfirmTimeout arms the dead-man's switch for switch and test: the
	// host rolls itself back unless a new connection checks in within
	// this long after the switch. 0 disarms it.
	ConfirmTimeout time.Duration
}

// Holder is who holds a host's lock.
type Holder struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Machine  string    `json:"machine"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
	Toplevel string    `json:"toplevel"`
	Action   string    `json:"action"`
}

func (h Holder) String() string {
	return fmt.Sprintf("%s@%s (pid %d), since %s, activating %s (%s)", h.User, h.Machine, h.PID, h.Started.Local().Format(time.DateTime), h.Toplevel, h.Action)
}

// Options are where the switch's output goes (nil: kept only for errors),
// where warnings go, and how to reach the host again when its connection
// is lost.
type Options struct {
	Stdout, Stderr io.Writer
	Warn           func(msg string)
	// Reconnect dials the host anew; nil gives up on a lost connection.
	// The caller closes what it returns. It is tried, backing off, for
	// reconnectFor.
	Reconnect func(ctx context.Context) (Target, error)
	// OnProbe, when set, is told of each health check's result.
	OnProbe func(ProbeResult)
	// BeforeSwitch, when set, runs under the lock, after the realise and
	// before anything changes (the pre-activation keys and hooks); its
	// error stops the activation there.
	BeforeSwitch func(ctx context.Context, t Target) error
	// AfterSwitch, when set, runs after a successful switch and the
	// health checks, as more checks (the postActivate hooks): a failed one
	// rolls the host back like a failed health check.
	AfterSwitch func(ctx context.Context, t Target, res *Result) []ProbeResult
	// Log, when set, is told at debug level what each detached job runs,
	// as an "exec" record of Host (the SSH line that starts it is the
	// connection's own record).
	Log  *slog.Logger
	Host string
}

// Result is what an activation found and did.
type Result struct {
	// Previous is the system that ran before (readlink
	// /run/current-system), PreviousProfile the system profile's: "" when
	// there was none.
	Previous, PreviousProfile string
	// Status is switch-to-configuration's exit status.
	Status int
	// RebootRequired is status 100: the new system needs a reboot.
	RebootRequired bool
	// Probes are the health checks' results.
	Probes []ProbeResult
	// RolledBack says the host was put back on Previous; ByWatchdog that
	// its dead-man's switch did it.
	RolledBack, ByWatchdog bool
	// Stage is how far the activation got: "lock", "switch" (the job
	// started), "checks" (after the switch), "done".
	Stage string
	// Armed says the dead-man's switch was armed, and not disarmed.
	Armed bool
}

// BusyError is a host another deploy holds.
type BusyError struct{ Holder string }

func (e *BusyError) Error() string {
	return "another deploy holds the host: " + describeHolder(e.Holder)
}

// describeHolder is a lock's content in words: a Holder as a sentence,
// anything else as it is.
func describeHolder(raw string) string {
	var h Holder
	if json.Unmarshal([]byte(raw), &h) == nil && h.ID != "" {
		return h.String()
	}
	return strings.TrimSpace(raw)
}

// Outcome is what became of a host after a failure.
type Outcome struct {
	// RolledBack says the host runs Previous again; ByWatchdog that the
	// host's dead-man's switch did it.
	RolledBack, ByWatchdog bool
	// Err says why the host was not rolled back, when that was tried.
	Err error
	// Previous is the system the host was to go back to.
	Previous string
}

func (o Outcome) String() string {
	switch {
	case o.RolledBack && o.ByWatchdog:
		return "the host rolled itself back to " + o.Previous
	case o.RolledBack:
		return "rolled back to " + o.Previous
	case o.ByWatchdog && o.Err != nil:
		return "the host's watchdog rolls it back to " + o.Previous + ", but its result could not be read: " + o.Err.Error()
	case o.Err != nil:
		return "NOT rolled back: " + o.Err.Error()
	}
	return "left as it is (--no-rollback)"
}

// SwitchError is a switch-to-configuration that failed, and what became of
// the host.
type SwitchError struct {
	Action string
	Status int
	// Stopped, when set, is how the switch ended without an exit status
	// (its job killed, as systemd or the job's files tell); Status is
	// then meaningless.
	Stopped string
	// Output is the end of the switch's output.
	Output string
	Outcome
}

// statusMeaning explains switch-to-configuration's exit statuses.
func statusMeaning(st int) string {
	switch st {
	case 1:
		return "a pre-switch check or the boot loader failed"
	case 2:
		return "the activation script failed"
	case 4:
		return "some units failed"
	}
	return "it failed"
}

func (e *SwitchError) Error() string {
	msg := fmt.Sprintf("switch-to-configuration %s exited %d (%s); %s", e.Action, e.Status, statusMeaning(e.Status), e.Outcome)
	if e.Stopped != "" {
		msg = fmt.Sprintf("switch-to-configuration %s ended without an exit status (%s); %s", e.Action, e.Stopped, e.Outcome)
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += "\nits output ends:\n" + out
	}
	return msg
}

// ProbeError is health checks that failed after the switch, and what
// became of the host.
type ProbeError struct {
	Failed []ProbeResult
	Outcome
}

func (e *ProbeError) Error() string {
	var b strings.Builder
	if len(e.Failed) == 1 {
		b.WriteString("a health check failed")
	} else {
		fmt.Fprintf(&b, "%d health checks failed", len(e.Failed))
	}
	fmt.Fprintf(&b, "; %s", e.Outcome)
	for _, r := range e.Failed {
		b.WriteString("\n  " + r.String())
	}
	return b.String()
}

// UnconfirmedError is a switched host that deployctl could not reach over
// a new connection in time, so the host's dead-man's switch rolled it
// back (or was due to).
type UnconfirmedError struct {
	// Timeout is the confirm timeout the check-in missed (with a Cause).
	Timeout time.Duration
	// Cause is why the check-in failed; nil when the watchdog acted first.
	Cause error
	Outcome
}

func (e *UnconfirmedError) Error() string {
	msg := fmt.Sprintf("no new SSH connection to the host could check in within %s of the switch (the new system may break SSH)", e.Timeout)
	if e.Cause == nil {
		msg = "the host's watchdog acted before deployctl could disarm it (its deadline had passed)"
	}
	msg += "; " + e.Outcome.String()
	if e.Cause != nil {
		msg += "\nthe check-in's error: " + e.Cause.Error()
	}
	return msg
}

// Activate makes req.Toplevel the target's system for req.Action: it takes
// the host's lock, records the running system, realises the toplevel (a
// no-op when pushed; from the target's own substituters otherwise), then
// runs a job detached from the SSH session that sets the system profile
// (switch, boot) and runs the toplevel's switch-to-configuration. A lost
// connection does not stop the job: Activate reconnects and reads its true
// result. A failed switch is rolled back to exactly the recorded system,
// unless req.NoRollback. Each activation appends a line to Journal.
func Activate(ctx context.Context, t Target, req Request, opts Options) (*Result, error) {
	if !slices.Contains(Actions, req.Action) {
		return nil, fmt.Errorf("unknown action %q (want switch, boot, test or dry-activate)", req.Action)
	}
	if req.Action == "dry-activate" {
		// Changes nothing: no lock, no job, no journal.
		if err := realise(ctx, t, req.Toplevel, opts); err != nil {
			return nil, err
		}
		cmd := dryActivateStep.Cmd(req.Toplevel)
		cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
		err := t.Run(ctx, cmd)
		if err != nil {
			return nil, fmt.Errorf("switch-to-configuration dry-activate: %w", err)
		}
		return &Result{}, nil
	}
	a := &activation{t: t, req: req, opts: opts}
	a.res.Stage = "lock"
	_, err := a.run(ctx)
	a.release(ctx)
	return &a.res, err
}

// RealiseCmd makes toplevel valid in the host's store.
func RealiseCmd(toplevel string) remote.Cmd { return realiseStep.Cmd(toplevel) }

// DryActivateCmd runs toplevel's switch-to-configuration dry-activate.
func DryActivateCmd(toplevel string) remote.Cmd { return dryActivateStep.Cmd(toplevel) }

// realise makes toplevel valid in the target's store: a no-op when it was
// pushed, a fetch from the target's own substituters otherwise.
func realise(ctx context.Context, t Target, toplevel string, opts Options) error {
	cmd := RealiseCmd(toplevel)
	cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
	if err := t.Run(ctx, cmd); err != nil {
		return fmt.Errorf("realise %s: %w", toplevel, err)
	}
	return nil
}

// activation is one Activate's state.
type activation struct {
	t     Target
	req   Request
	opts  Options
	lease *remote.Process
	res   Result
	// decided says the host's fate after the switch is claimed: by a
	// rollback, by the watchdog, or kept (the watchdog disarmed);
	// watchdogActed that the watchdog claimed it.
	decided, watchdogActed bool
	// fresh is the check-in's connection.
	fresh Target
}

func (a *activation) run(ctx context.Context) (*Result, error) {
	if err := a.lock(ctx, false); err != nil {
		return nil, err
	}
	if err := realise(ctx, a.t, a.req.Toplevel, a.opts); err != nil {
		return nil, err
	}
	if a.opts.BeforeSwitch != nil {
		if err := a.opts.BeforeSwitch(ctx, a.t); err != nil {
			return &a.res, err
		}
	}
	running := a.req.Action == "switch" || a.req.Action == "test"
	armed := running && a.req.ConfirmTimeout > 0
	a.res.Armed = armed
	if armed {
		// Armed before the switch starts: a switch that breaks SSH at
		// once is still caught.
		tmo := strconv.Itoa(int(a.req.ConfirmTimeout.Round(time.Second) / time.Second))
		if a.opts.Log != nil {
			a.opts.Log.Debug(fmt.Sprintf("arming the dead-man's switch: the host rolls back unless a new connection checks in within %s of the switch", a.req.ConfirmTimeout), "host", a.opts.Host)
		}
		if _, err := a.start(ctx, "watchdog", "", "", tmo); err != nil {
			return nil, err
		}
	}
	a.res.Stage = "switch"
	st, out, err := a.job(ctx, "switch", a.switchLine())
	var stopped *stoppedError
	if err != nil && !errors.As(err, &stopped) {
		return &a.res, fmt.Errorf("switch: %w", err)
	}
	a.res.Stage = "checks"
	a.res.Status = st
	if stopped != nil {
		a.res.Status = -1 // no exit status
	}
	ok := stopped == nil && (st == 0 || st == 100 || st == 4 && a.req.AllowFailedUnits)
	a.res.RebootRequired = st == 100
	if st == 4 && ok && a.opts.Warn != nil {
		a.opts.Warn("some units failed to start (allowed by --allow-failed-units):\n" + strings.TrimSpace(out))
	}
	var failure error
	switch {
	case st == profileFailed:
		// nix-env failed: nothing was switched, nothing to roll back.
		failure = fmt.Errorf("setting the system profile failed, so nothing was switched: %s", strings.TrimSpace(out))
	case stopped != nil:
		// Killed halfway: whatever it did is undone as for a failure.
		failure = &SwitchError{Action: a.req.Action, Stopped: stopped.why, Output: out, Outcome: a.rollback(ctx)}
	case !ok:
		failure = &SwitchError{Action: a.req.Action, Status: st, Output: out, Outcome: a.rollback(ctx)}
	case armed:
		if err := a.checkIn(ctx); err != nil {
			failure = err
		}
	}
	// The checks go over the check-in's connection when there is one: the
	// switch may have cut the first.
	checkOn := a.t
	if a.fresh != nil {
		checkOn = a.fresh
	}
	if failure == nil && running && !a.req.Checks.Empty() {
		a.res.Probes = Probe(ctx, checkOn, a.req.Checks, a.req.ProbeHost, a.req.ProbeTimeout, a.opts.OnProbe)
	}
	if failure == nil && a.opts.AfterSwitch != nil {
		a.res.Probes = append(a.res.Probes, a.opts.AfterSwitch(ctx, checkOn, &a.res)...)
	}
	if failure == nil {
		var failed []ProbeResult
		for _, r := range a.res.Probes {
			if !r.OK {
				failed = append(failed, r)
			}
		}
		if len(failed) > 0 {
			failure = &ProbeError{Failed: failed, Outcome: a.rollback(ctx)}
		}
	}
	if armed && !a.decided {
		// Checks passed, or a failure is left as it is (NoRollback):
		// the watchdog must not act either.
		if err := a.disarm(ctx); err != nil && failure == nil {
			failure = err
		}
	}
	a.res.Armed = armed && !a.decided
	if failure == nil && (a.req.Action == "switch" || a.req.Action == "boot") {
		a.dropPushRoot(ctx)
	}
	if !a.watchdogActed {
		// (The watchdog journals what it does itself.)
		a.journal(ctx, failure)
	}
	a.res.Stage = "done"
	return &a.res, failure
}

// profileFailed is the switch job's status when nix-env could not set
// the system profile (switch-to-configuration never ran).
const profileFailed = 90

// previous is the system a rollback goes back to.
func (a *activation) previous() string {
	if a.req.Action == "boot" {
		return a.res.PreviousProfile
	}
	return a.res.Previous
}

// rollback puts the host back on the recorded system, unless NoRollback;
// when the host's watchdog has claimed that already, it waits for the
// watchdog's rollback instead.
func (a *activation) rollback(ctx context.Context) Outcome {
	o := Outcome{Previous: a.previous()}
	if a.req.NoRollback {
		return o
	}
	started, err := a.start(ctx, "rollback", a.rollbackLine(), "rollback", "")
	if err != nil {
		o.Err = err
		return o
	}
	a.decided = true
	o.ByWatchdog = !started
	a.watchdogActed = o.ByWatchdog
	st, out, err := a.wait(ctx, "rollback")
	return a.rolledBack(o, st, out, err)
}

// rolledBack completes o with the rollback job's result.
func (a *activation) rolledBack(o Outcome, st int, out string, err error) Outcome {
	switch {
	case err != nil:
		o.Err = err
	case st != 0:
		o.Err = fmt.Errorf("exit status %d: %s", st, strings.TrimSpace(out))
	default:
		o.RolledBack = true
		a.res.RolledBack, a.res.ByWatchdog = true, o.ByWatchdog
	}
	return o
}

// checkIn tells the watchdog, over a new connection, that deployctl can
// still reach the host, which moves its deadline past the health checks.
// It tries until ConfirmTimeout has passed since the switch ended; then
// the watchdog rolls back, and checkIn waits to report that.
func (a *activation) checkIn(ctx context.Context) error {
	deadline := time.Now().Add(a.req.ConfirmTimeout)
	cause := errors.New("no way to open a new connection")
	if a.opts.Reconnect != nil {
		for wait := 250 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
			err := a.checkInOnce(ctx, deadline)
			if err == nil {
				return nil
			}
			if errors.Is(err, errClaimed) {
				return &UnconfirmedError{Timeout: a.req.ConfirmTimeout, Outcome: a.watchdogRollback(ctx)}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cause = err
			if !time.Now().Add(wait).Before(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	if a.opts.Warn != nil {
		a.opts.Warn(fmt.Sprintf("no new connection could check in within %s of the switch: the host's watchdog rolls it back; waiting for it", a.req.ConfirmTimeout))
	}
	return &UnconfirmedError{Timeout: a.req.ConfirmTimeout, Cause: cause, Outcome: a.watchdogRollback(ctx)}
}

// errClaimed is a watchdog that has acted already.
var errClaimed = errors.New("the watchdog has claimed the host")

// checkInOnce dials the host anew and checks in, giving the watchdog the
// probe deadline and the confirm timeout more.
func (a *activation) checkInOnce(ctx context.Context, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	t, err := a.opts.Reconnect(ctx)
	if err != nil {
		return err
	}
	more := int((a.req.ProbeTimeout + a.req.ConfirmTimeout).Round(time.Second) / time.Second)
	var word bytes.Buffer
	cmd := checkinStep.Cmd(a.req.ID, strconv.Itoa(more))
	cmd.Stdout = &word
	err = t.Run(ctx, cmd)
	switch {
	case err != nil:
		return err
	case strings.TrimSpace(word.String()) == "claimed":
		return errClaimed
	}
	a.fresh = t
	return nil
}

// watchdogRollback waits for the rollback the host's watchdog runs, over
// the session's connection while it works, else over a new one.
func (a *activation) watchdogRollback(ctx context.Context) Outcome {
	o := Outcome{Previous: a.previous(), ByWatchdog: true}
	a.decided, a.watchdogActed = true, true
	st, out, err := a.wait(ctx, "rollback")
	return a.rolledBack(o, st, out, err)
}

// disarm claims the host's fate, so the watchdog goes without acting.
// When the watchdog was first, it waits for its rollback and reports it.
func (a *activation) disarm(ctx context.Context) error {
	var word bytes.Buffer
	cmd := claimStep.Cmd(a.req.ID, "keep")
	cmd.Stdout = &word
	err := a.t.Run(ctx, cmd)
	if err != nil && lost(ctx, err) {
		if err = a.reconnect(ctx, err); err == nil {
			word.Reset()
			err = a.t.Run(ctx, cmd)
		}
	}
	if err != nil {
		return fmt.Errorf("disarm the dead-man's switch (it rolls the host back when its deadline passes): %w", err)
	}
	a.decided = true
	if strings.TrimSpace(word.String()) == "claimed" {
		return &UnconfirmedError{Outcome: a.watchdogRollback(ctx)}
	}
	return nil
}

// lock starts the lease session and waits for its report: the lock and the
// recorded system, or the holder of a lock held elsewhere.
func (a *activation) lock(ctx context.Context, resume bool) error {
	holder, err := json.Marshal(a.req.Holder)
	if err != nil {
		return err
	}
	cmd := leaseStep.Cmd(a.req.ID, string(holder), a.req.Action, a.req.Toplevel)
	if resume {
		cmd = leaseStep.Cmd(a.req.ID, "", "resume")
	}
	// The lease outlives ctx, so that an interrupted deploy can still say
	// "release" (the keeper then lets go once the jobs under way end).
	p, err := a.t.Start(context.WithoutCancel(ctx), cmd)
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	lines := bufio.NewScanner(p.Stdout)
	var report []string
	ready := false
	for lines.Scan() {
		line := lines.Text()
		if line == "ready" {
			ready = true
			break
		}
		report = append(report, line)
	}
	if len(report) > 0 && report[0] == "busy" {
		p.Close()
		_ = p.Wait()
		return fmt.Errorf("lock: %w", &BusyError{Holder: strings.Join(report[1:], "\n")})
	}
	if !ready || len(report) == 0 || !strings.HasPrefix(report[0], "previous ") {
		p.Close()
		err := p.Wait()
		if err == nil {
			err = errors.New("the lock session ended without a report")
		}
		return fmt.Errorf("lock: %w", err)
	}
	a.lease = p
	if resume {
		return nil
	}
	for _, line := range report {
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "previous":
			a.res.Previous = val
		case "profile":
			a.res.PreviousProfile = val
		case "stale":
			if a.opts.Warn != nil {
				a.opts.Warn("took over the lock of a deploy that did not finish: " + describeHolder(val))
			}
		}
	}
	return nil
}

// release tells the keeper this deploy is done, and ends the lease. After
// ctx has ended (a detached deploy), it does not wait for the keeper: the
// keeper lets go once the jobs under way end.
func (a *activation) release(ctx context.Context) {
	if a.lease == nil {
		return
	}
	word := "release\n"
	if ctx.Err() != nil {
		word = "leave\n"
	}
	_, _ = io.WriteString(a.lease.Stdin, word)
	a.lease.Stdin.Close()
	if _, ok := a.lease.Exited(10 * time.Second); !ok {
		a.lease.Close()
	}
}

// job runs a detached job and returns its exit status and the end of its
// output. When the connection is lost while the job runs, it reconnects
// and reads the job's true result.
func (a *activation) job(ctx context.Context, name, line string) (int, string, error) {
	if _, err := a.start(ctx, name, line, "", ""); err != nil {
		return 0, "", err
	}
	return a.wait(ctx, name)
}

// start starts the detached job name (switch, rollback or watchdog, whose
// confirm timeout is tmo), after claiming the host's fate when claim is
// set; it reports false when the watchdog had claimed it (and started
// nothing). line, when set, is the job as a shell line for -v. A
// connection lost before the job starts is made again.
func (a *activation) start(ctx context.Context, name, line, claim, tmo string) (bool, error) {
	if a.opts.Log != nil && line != "" {
		a.opts.Log.Debug("exec", "host", a.opts.Host, "cmd", "detached in "+Dir+"/"+a.req.ID+": "+line)
	}
	var word bytes.Buffer
	cmd := jobStep.Cmd(a.req.ID, name, claim, tmo)
	cmd.Stdout = &word
	err := a.t.Run(ctx, cmd)
	if err != nil && lost(ctx, err) && word.Len() == 0 {
		if err = a.reconnect(ctx, err); err == nil {
			err = a.t.Run(ctx, cmd)
		}
	}
	if err != nil {
		return false, fmt.Errorf("start the %s job: %w", name, err)
	}
	return strings.TrimSpace(word.String()) == "started", nil
}

// wait waits for a detached job and returns its exit status and the end
// of its output, reconnecting when the connection is lost meanwhile.
func (a *activation) wait(ctx context.Context, name string) (int, string, error) {
	var status bytes.Buffer
	output := remote.NewTail(4000)
	stderr := io.Writer(output)
	if a.opts.Stderr != nil {
		stderr = io.MultiWriter(a.opts.Stderr, output)
	}
	cmd := waitStep.Cmd(a.req.ID, name)
	cmd.Stdout, cmd.Stderr = &status, stderr
	err := a.t.Run(ctx, cmd)
	if err != nil && lost(ctx, err) {
		if err := a.reconnect(ctx, err); err != nil {
			return 0, "", fmt.Errorf("the %s job runs on, but: %w", name, err)
		}
		status.Reset()
		output.Reset()
		cmd := resultStep.Cmd(a.req.ID, name)
		cmd.Stdout, cmd.Stderr = &status, output
		err = a.t.Run(ctx, cmd)
	}
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == jobStopped {
		return 0, output.String(), &stoppedError{job: name, why: lastLine(ee.Stderr)}
	}
	if err != nil {
		return 0, "", fmt.Errorf("wait for the %s job: %w", name, err)
	}
	st, err := strconv.Atoi(strings.TrimSpace(status.String()))
	if err != nil {
		return 0, "", fmt.Errorf("the %s job's status %q: %w", name, status.String(), err)
	}
	return st, output.String(), nil
}

// jobStopped is the waiters' exit status for a job that ended without an
// exit status of its own (awaitStatus).
const jobStopped = 71

// stoppedError is a job that ended without an exit status: killed.
type stoppedError struct{ job, why string }

func (e *stoppedError) Error() string { return "the " + e.job + " job: " + e.why }

// lastLine is the last line of s that is not blank.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// switchLine is what the switch job runs, as a shell line.
func (a *activation) switchLine() string { return SwitchLine(a.req.Toplevel, a.req.Action) }

// SwitchLine is the switch to toplevel, as a shell line run as root: the
// system profile set (switch, boot), then its switch-to-configuration.
func SwitchLine(toplevel, action string) string {
	sw := shell.Join([]string{toplevel + "/bin/switch-to-configuration", action})
	if action == "switch" || action == "boot" {
		return shell.Join([]string{"nix-env", "-p", SystemProfile, "--set", toplevel}) + " && " + sw
	}
	return sw
}

// rollbackLine is what the rollback job runs, as a shell line.
func (a *activation) rollbackLine() string {
	switch a.req.Action {
	case "test":
		return shell.Join([]string{a.res.Previous + "/bin/switch-to-configuration", "test"})
	case "boot":
		return shell.Join([]string{"nix-env", "-p", SystemProfile, "--set", a.res.PreviousProfile}) + " && " +
			shell.Join([]string{a.res.PreviousProfile + "/bin/switch-to-configuration", "boot"})
	}
	sw := shell.Join([]string{a.res.Previous + "/bin/switch-to-configuration", "switch"})
	if a.res.PreviousProfile == "" {
		return sw
	}
	return shell.Join([]string{"nix-env", "-p", SystemProfile, "--set", a.res.PreviousProfile}) + " && " + sw
}

// lost reports whether err is a connection lost rather than a command that
// failed.
func lost(ctx context.Context, err error) bool {
	var ee *remote.ExitError
	return ctx.Err() == nil && !errors.As(err, &ee)
}

// reconnectFor is how long a lost connection is tried again.
const reconnectFor = 2 * time.Minute

// reconnect dials the host anew, with backoff, and rejoins the deploy's
// keeper.
func (a *activation) reconnect(ctx context.Context, cause error) error {
	if a.opts.Reconnect == nil {
		return fmt.Errorf("the connection was lost: %w", cause)
	}
	if a.opts.Warn != nil {
		a.opts.Warn("the connection was lost while a job ran on the host (it runs on): reconnecting")
	}
	deadline := time.Now().Add(reconnectFor)
	wait := 250 * time.Millisecond
	for {
		t, err := a.opts.Reconnect(ctx)
		if err == nil {
			if a.lease != nil {
				a.lease.Close()
				a.lease = nil
			}
			a.t = t
			return a.lock(ctx, true)
		}
		if ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("the connection was lost and could not be made again within %s: %w", reconnectFor, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// dropPushRoot removes the push's GC root when it points at this system:
// the profile keeps it now. Failing to drop it leaves a root that the next
// push replaces: worth a warning, no more.
func (a *activation) dropPushRoot(ctx context.Context) {
	cmd := dropRootStep.Cmd(a.req.Toplevel)
	cmd.Stdout = io.Discard
	err := a.t.Run(ctx, cmd)
	if err != nil && a.opts.Warn != nil {
		a.opts.Warn(fmt.Sprintf("could not drop the push's GC root %s: %v", push.Root, err))
	}
}

// JournalEntry is one line of Journal.
type JournalEntry struct {
	Time    time.Time `json:"time"`
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Machine string    `json:"machine"`
	Action  string    `json:"action"`
	// Rollback marks a deployctl rollback.
	Rollback bool   `json:"rollback,omitempty"`
	Previous string `json:"previous"`
	// PreviousProfile is the system profile's store path before.
	PreviousProfile string        `json:"previousProfile,omitempty"`
	New             string        `json:"new"`
	Result          string        `json:"result"`
	Status          int           `json:"status"`
	RebootRequired  bool          `json:"rebootRequired,omitempty"`
	Probes          []ProbeResult `json:"probes,omitempty"`
	RolledBack      bool          `json:"rolledBack,omitempty"`
	ByWatchdog      bool          `json:"byWatchdog,omitempty"`
	Error           string        `json:"error,omitempty"`
}

// journal appends this activation's line to Journal; failing to is a
// warning.
func (a *activation) journal(ctx context.Context, failure error) {
	e := JournalEntry{
		Time: time.Now().UTC(), ID: a.req.ID, User: a.req.Holder.User, Machine: a.req.Holder.Machine,
		Action: a.req.Action, Rollback: a.req.Rollback, Previous: a.res.Previous, PreviousProfile: a.res.PreviousProfile, New: a.req.Toplevel, Status: a.res.Status,
		RebootRequired: a.res.RebootRequired, RolledBack: a.res.RolledBack, ByWatchdog: a.res.ByWatchdog, Result: "ok", Probes: a.res.Probes,
	}
	if failure != nil {
		e.Result, e.Error = "failed", failure.Error()
		if a.res.RolledBack {
			e.Result = "rolled back"
		}
	}
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	cmd := journalStep.Cmd(string(line))
	cmd.Stdout = io.Discard
	err = a.t.Run(ctx, cmd)
	if err != nil && a.opts.Warn != nil {
		a.opts.Warn(fmt.Sprintf("could not append to the journal %s: %v", Journal, err))
	}
}
