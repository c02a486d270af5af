package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/push"
)

// hostStep is one thing done to a host over its connection.
type hostStep struct {
	name string
	run  func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error
}

func (g *globals) pushStep() hostStep {
	return hostStep{"push", func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
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
				g.log.Info(fmt.Sprintf("sending %d of %d paths, %s", paths, of, humanBytes(bytes)), "host", h.Name, "from", src.String())
				g.pushBar.expect(bytes)
			},
			OnSent: g.pushBar.sent,
		}
		st, err := push.Native(ctx, conn, src, b.Toplevel, opts)
		if err != nil {
			return err
		}
		took := time.Since(start)
		g.log.Info(fmt.Sprintf("pushed %d of %d paths, %s%s", st.Sent, st.Paths, humanBytes(st.Bytes), rate(st.Bytes, took)), "host", h.Name, "from", src.String(), "took", took.Round(10*time.Millisecond).String())
		return nil
	}}
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

func (g *globals) activateStep(action string) hostStep {
	return hostStep{"activate", func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
		out := activate.Options{Warn: func(msg string) { g.log.Warn(msg, "host", h.Name) }}
		if g.verbose {
			w := g.handler.Lines(h.Name)
			defer w.Close()
			out.Stdout, out.Stderr = w, w
		} else {
			out.Stdout = io.Discard
		}
		if err := activate.Activate(ctx, conn, b.Toplevel, action, out); err != nil {
			return err
		}
		g.log.Info(action+" done", "host", h.Name)
		return nil
	}}
}
