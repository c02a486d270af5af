package push

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/deployctl/deployctl/internal/remote"
)

// Root is the garbage-collector root on a target that keeps the system
// pushed last until its activation puts it in the system profile.
const Root = remote.GCRootDir + "/pushed"

// gcRoot keeps what a push sends from the target's garbage collector.
type gcRoot interface {
	// commit makes the root final and ends the push's session through
	// end (whose open session holds what was sent until then).
	commit(end func()) error
	// abandon drops the root of a push that did not succeed; the last
	// good push's root stays.
	abandon()
}

// newRoot is the root named root for toplevel on conn's target, started
// beside the push's session: the system's when conn's commands can run as
// root, else the login user's own (remote.UserRootDir).
func newRoot(ctx context.Context, conn Target, toplevel, root string) gcRoot {
	if conn.Unprivileged() {
		return &userRoot{ctx: ctx, conn: conn, toplevel: toplevel, name: filepath.Base(root)}
	}
	return startRoot(ctx, conn, toplevel, root)
}

// pendingRoot is a push's GC root while the push runs: a symlink in the GC
// roots directory, a root of whatever it points to from the moment that
// path is valid, made at the push's start and renamed to Root when the
// push succeeded, so a failed push leaves the last good one's Root alone.
// One remote shell makes the link, says "ready", and then waits on its
// standard input for the verdict: "commit" renames the link; anything
// else, or the input's end (an abandoned push, or a lost connection),
// removes it.
type pendingRoot struct {
	root    string
	started chan struct{}
	p       *remote.Process
	err     error
	ended   bool
}

// rootStep makes a link to $1 beside the GC root $2, then renames it to
// $2 or removes it.
var rootStep = &remote.Step{
	Name: "push-root",
	Body: remote.StorePathFn + remote.GCRootFn + `store_path "$1"; gc_root "$2"; link=$2-${1##*/}
mkdir -p "${2%/*}" && ln -sfn "$1" "$link" || exit; echo ready
read -r verdict; if [ "$verdict" = commit ]; then exec mv -fT "$link" "$2"; fi; rm -f "$link"`,
}

// startRoot starts the shell in the background, beside the push's own
// session.
func startRoot(ctx context.Context, conn Target, toplevel, root string) *pendingRoot {
	r := &pendingRoot{root: root, started: make(chan struct{})}
	go func() {
		defer close(r.started)
		r.p, r.err = conn.Start(ctx, rootStep.Cmd(toplevel, root))
	}()
	return r
}

// end sends the verdict and waits for the shell to act on it.
func (r *pendingRoot) end(verdict string) error {
	<-r.started
	if r.err != nil || r.ended {
		return r.err
	}
	r.ended = true
	_, _ = io.WriteString(r.p.Stdin, verdict+"\n")
	r.p.Stdin.Close()
	r.err = r.p.Wait()
	return r.err
}

// commit renames the pending root to Root, atomically, while the session
// ends, once the link holds the system (a push with nothing to send can
// get here before the shell made it).
func (r *pendingRoot) commit(end func()) error {
	<-r.started
	if r.err == nil {
		// "ready", or the end of a shell that failed, which end reports.
		_, _ = bufio.NewReader(r.p.Stdout).ReadString('\n')
	}
	ended := make(chan struct{})
	go func() { end(); close(ended) }()
	err := r.end("commit")
	<-ended
	if err != nil {
		return fmt.Errorf("register the GC root %s: %w", r.root, err)
	}
	return nil
}

func (r *pendingRoot) abandon() { _ = r.end("abandon") }

// userRoot is the root of a push by a user who cannot become root: a
// symlink in the user's remote.UserRootDir, registered with the target's Nix
// (through its daemon) as an indirect root. Nix registers a link to a
// valid path only, so it is made once the push is complete, while the
// push's session still holds what it sent.
type userRoot struct {
	ctx            context.Context
	conn           Target
	toplevel, name string
}

func (u *userRoot) commit(end func()) error {
	defer end()
	if err := u.conn.Run(u.ctx, remote.UserRoot(u.toplevel, u.name)); err != nil {
		return fmt.Errorf("register the GC root %s/%s: %w", remote.UserRootDir, u.name, err)
	}
	return nil
}

func (u *userRoot) abandon() {}
