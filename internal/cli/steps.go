package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/events"
	"github.com/deployctl/deployctl/internal/hooks"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/keys"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/push"
)

// hostStep is one thing done to a host over its connection.
type hostStep struct {
	name string
	run  func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error
	// finish says that once started, the step runs to its end through an
	// interrupt (not through a detach).
	finish bool
	// root says that the step runs commands as root on the target, which
	// a login user who cannot become root cannot do.
	root bool
}

func (g *globals) pushStep() hostStep {
	return hostStep{name: "push", run: func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
		env := hooks.Env{Toplevel: b.Toplevel}
		if err := g.runHooks(ctx, h, conn, "prePush", env); err != nil {
			return rollout.Step("prePush hook", err)
		}
		if err := g.push(ctx, conn, h, b); err != nil {
			return err
		}
		if err := g.runHooks(ctx, h, conn, "postPush", env); err != nil {
			return rollout.Step("postPush hook", err)
		}
		return nil
	}}
}

// push copies b's closure to h over conn.
func (g *globals) push(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
	switch {
	case b.At.on == "target":
		g.log.Info("built on the target: nothing to push", "host", h.Name)
		return nil
	case g.nixCopy() && !b.At.local():
		return fmt.Errorf("--copy-backend %s pushes from the local store only, and this system is on %s", g.copyBackend, b.At.target.Name)
	case g.nixCopy():
		proto := push.SSHNG
		if g.copyBackend == "nix-ssh" {
			proto = push.SSH
		}
		if err := push.NixCopy(ctx, g.nix(), conn, g.sshConfig, proto, b.Toplevel, push.Options{Substitute: g.substitute}); err != nil {
			return err
		}
		g.log.Info("pushed", "host", h.Name, "toplevel", b.Toplevel)
		return nil
	}
	var src push.Source = push.LocalStore{Nix: g.nix(), Shared: g.sharedNARs(), Infos: g.localInfos}
	if !b.At.local() {
		bc, err := g.connect(ctx, b.At.key, b.At.target)
		if err != nil {
			return fmt.Errorf("connect to build host %s: %w", b.At.target.Name, err)
		}
		defer g.release(b.At.key)
		src = push.Builder{Name: b.At.target.Name, Conn: bc}
	}
	start := time.Now()
	opts := push.Options{
		Substitute: g.substitute,
		Sign:       g.signer,
		OnSending: func(paths, of int, bytes int64) {
			g.events.Emit(events.Event{Type: events.Progress, Host: h.Name, Step: "push", State: "sending", Paths: paths, PathsTotal: of, Bytes: bytes})
			g.log.Info(fmt.Sprintf("sending %d of %d paths, %s", paths, of, humanBytes(bytes)), "host", h.Name, "from", src.String())
			g.pushBar.expect(bytes)
		},
		OnSent: func(n int64) {
			g.pushBar.sent(n)
			g.board.sent(h.Name, n)
		},
	}
	st, err := push.Native(ctx, conn, src, b.Toplevel, opts)
	if err != nil {
		return err
	}
	took := time.Since(start)
	g.events.Emit(events.Event{Type: events.Progress, Host: h.Name, Step: "push", State: "sent", Paths: st.Sent, PathsTotal: st.Paths, Bytes: st.Bytes})
	g.log.Info(fmt.Sprintf("pushed %d of %d paths, %s%s", st.Sent, st.Paths, humanBytes(st.Bytes), rate(st.Bytes, took)), "host", h.Name, "from", src.String(), "took", took.Round(10*time.Millisecond).String())
	return nil
}

// rate is ", N MiB/s" for n bytes in d, or "" when there is too little to
// say.
func rate(n int64, d time.Duration) string {
	if n < 1<<20 || d <= 0 {
		return ""
	}
	return ", " + humanBytes(int64(float64(n)/d.Seconds())) + "/s"
}

// humanBytes is n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 2; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMG"[exp])
}

func (g *globals) activateStep(f activateFlags, specs map[string]activationSpec) hostStep {
	return hostStep{name: "activate", finish: true, root: true, run: func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
		var extra []*remote.Conn
		defer func() {
			for _, c := range extra {
				c.Close()
			}
		}()
		reconnect := func(ctx context.Context) (activate.Target, error) {
			d, err := g.dialer()
			if err != nil {
				return nil, err
			}
			c, err := d.Dial(ctx, targetOf(h))
			if err != nil {
				return nil, err
			}
			extra = append(extra, c)
			return c, nil
		}
		return g.activateOn(ctx, conn, conn.Endpoint().HostName, reconnect, h, b, f, specs[h.Name])
	}}
}

// activateOn activates b on h through t: over SSH, or this machine
// (--local). reconnect opens a new way in, for the dead-man's switch's
// check-in and after a lost connection; probeHost is where the HTTP and
// TCP checks go.
func (g *globals) activateOn(ctx context.Context, t activate.Target, probeHost string, reconnect func(context.Context) (activate.Target, error), h *inventory.Host, b built, f activateFlags, spec activationSpec) error {
	out := activate.Options{
		Log:  g.log,
		Host: h.Name,
		Warn: func(msg string) { g.log.Warn(msg, "host", h.Name) },
		OnProbe: func(r activate.ProbeResult) {
			if r.OK {
				g.log.Info(r.String(), "host", h.Name)
			} else {
				g.log.Warn(r.String(), "host", h.Name)
			}
		},
		Reconnect: reconnect,
	}
	if g.verbose {
		w := g.handler.Lines(h.Name)
		defer w.Close()
		out.Stdout, out.Stderr = w, w
	} else {
		out.Stdout = io.Discard
	}
	id := g.deployID()
	req := activate.Request{
		ID:               id,
		Toplevel:         b.Toplevel,
		Action:           f.action,
		Holder:           g.holder(id, b.Toplevel, f.action),
		AllowFailedUnits: f.allowFailedUnits,
		NoRollback:       f.noRollback,
		Rollback:         f.rollback,
		Checks:           spec.checks,
		ProbeTimeout:     f.probeTimeout,
		ProbeHost:        probeHost,
	}
	if !f.noMagicRollback {
		req.ConfirmTimeout = spec.confirmTimeout
	}
	// Keys go up under the lock, before the switch (pre-activation; read
	// here first, all of them, so a failing keyCommand changes nothing)
	// and after it (post-activation); the preActivate hooks run just
	// before the switch. A dry run and a rollback have neither.
	activating := f.action != "dry-activate" && !f.rollback
	uploading := activating && !f.skipKeys
	var reown []keys.Key
	if activating {
		var pre []keyContent
		if uploading {
			var err error
			if pre, err = readKeys(ctx, spec.keys, keys.PreActivation, g.inv.Env); err != nil {
				return rollout.Step("keys", err)
			}
			defer wipe(pre)
		}
		out.BeforeSwitch = func(ctx context.Context, t activate.Target) error {
			if err := g.runHooks(ctx, h, t, "preActivate", hooks.Env{Toplevel: b.Toplevel, Action: f.action}); err != nil {
				return rollout.Step("preActivate hook", err)
			}
			var err error
			if reown, err = g.putKeys(ctx, t, h, pre, keys.PreActivation); err != nil {
				return rollout.Step("keys", err)
			}
			return nil
		}
		out.AfterSwitch = g.postActivateChecks(h, f.action, b.Toplevel)
	}
	res, err := activate.Activate(ctx, t, req, out)
	if err != nil && g.inv.Detach.Err() != nil {
		return errors.New(detachedAt(res))
	}
	if res != nil && res.RolledBack {
		if herr := g.runHooks(ctx, h, t, "postRollback", hooks.Env{Toplevel: b.Toplevel, Previous: res.Previous, Action: f.action}); herr != nil {
			// The activation's failure stays the host's; the hook's is
			// added to it.
			return &rollout.StepError{Step: "activate", Err: errors.Join(err, fmt.Errorf("then the postRollback hooks: %w", herr))}
		}
	}
	if err != nil {
		return err
	}
	if res.RebootRequired {
		g.log.Warn(f.action+" done: the new system needs a reboot to take full effect", "host", h.Name)
	} else {
		g.log.Info(f.action+" done", "host", h.Name)
	}
	if !uploading {
		return nil
	}
	var errs []error
	for _, k := range reown {
		if f.action == "boot" {
			// The new system is not running: its users do not exist yet.
			g.log.Warn(fmt.Sprintf("key %s: %s stays root's until the new system runs: upload the keys again after the reboot (deployctl upload-keys)", k.Attr, k.Path()), "host", h.Name)
			continue
		}
		if err := keys.Reown(ctx, t, k); err != nil {
			errs = append(errs, err)
		}
	}
	post, err := readKeys(ctx, spec.keys, keys.PostActivation, g.inv.Env)
	if err == nil {
		defer wipe(post)
		_, err = g.putKeys(ctx, t, h, post, keys.PostActivation)
	}
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return rollout.Step("keys", fmt.Errorf("after the %s, which stays: %w", f.action, err))
	}
	return nil
}

// keyContent is a key read on this machine, in memory.
type keyContent struct {
	key     keys.Key
	content []byte
}

// readKeys reads the keys that go up at (every key for ""), all before
// any is uploaded.
func readKeys(ctx context.Context, ks []keys.Key, at string, env []string) ([]keyContent, error) {
	var out []keyContent
	for _, k := range ks {
		if at != "" && k.UploadAt != at {
			continue
		}
		content, err := k.Content(ctx, env)
		if err != nil {
			wipe(out)
			return nil, err
		}
		out = append(out, keyContent{k, content})
	}
	return out, nil
}

// wipe zeroes keys read into memory.
func wipe(kcs []keyContent) {
	for _, kc := range kcs {
		clear(kc.content)
	}
}

// putKeys uploads keys read for at, and returns those whose owner does
// not exist yet: pre-activation ones, written root's, to re-own once the
// new system made it; at post-activation (or "", every key) a missing
// owner is an error.
func (g *globals) putKeys(ctx context.Context, t keys.Target, h *inventory.Host, kcs []keyContent, at string) ([]keys.Key, error) {
	var reown []keys.Key
	for _, kc := range kcs {
		k := kc.key
		missing, err := keys.Upload(ctx, t, k, kc.content)
		if err != nil {
			return nil, err
		}
		if missing && at == keys.PreActivation {
			g.log.Warn(fmt.Sprintf("key %s: %s:%s does not exist yet: %s is root's until the new system is active", k.Attr, k.User, k.Group, k.Path()), "host", h.Name)
			reown = append(reown, k)
			continue
		}
		if missing {
			return nil, fmt.Errorf("key %s: the owner %s:%s does not exist on the host (%s is root's)", k.Attr, k.User, k.Group, k.Path())
		}
		g.log.Info(fmt.Sprintf("key %s uploaded to %s", k.Attr, k.Path()), "host", h.Name)
	}
	return reown, nil
}

// deployID names one activation on its host: the time, and random bits so
// that two deploying machines never pick the same.
func (g *globals) deployID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// holder is who deploys, as the hosts' locks and journals record it.
func (g *globals) holder(id, toplevel, action string) activate.Holder {
	user := g.getenv("USER")
	if user == "" {
		user = "unknown"
	}
	machine, err := os.Hostname()
	if err != nil {
		machine = "unknown"
	}
	return activate.Holder{ID: id, User: user, Machine: machine, PID: os.Getpid(), Started: time.Now().UTC(), Toplevel: toplevel, Action: action}
}

// detachedAt says what becomes of a host whose activation was left at
// res.Stage.
func detachedAt(res *activate.Result) string {
	msg := "detached before the switch: nothing changed on the host"
	if res == nil {
		return msg
	}
	switch res.Stage {
	case "switch":
		msg = "detached during the switch, which runs on on the host"
	case "checks":
		msg = "detached after the switch"
	case "done":
		return "detached as it ended"
	case "lock", "":
		return msg
	}
	if res.Armed {
		return msg + "; with no one to check in or disarm it, the host's dead-man's switch rolls it back when its deadline passes"
	}
	return msg + "; the new system stays"
}
