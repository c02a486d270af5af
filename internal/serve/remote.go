package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deployctl/deployctl/internal/remote"
)

// Starter starts a command on a machine; *remote.Conn is one.
type Starter interface {
	Start(ctx context.Context, cmd remote.Cmd) (*remote.Process, error)
}

// Session is a `nix-store --serve` process on a remote machine, handshaken.
type Session struct {
	*Conn
	p *remote.Process
}

// OpenQuery starts `nix-store --serve` as root on the machine (through its
// privilege escalation when the login user is not), with --write when
// write, handshakes, and asks in the same round trip which of paths the
// store holds (QueryValidPaths). Close the session when done.
func OpenQuery(ctx context.Context, s Starter, write bool, paths []string, lock, substitute bool) (*Session, []string, error) {
	p, t, err := start(ctx, s, write)
	if err != nil {
		return nil, nil, err
	}
	c, valid, err := HandshakeQuery(t, paths, lock, substitute)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return &Session{Conn: c, p: p}, valid, nil
}

// OpenMissing opens a writable session and returns, from the same round
// trip, those of closure the store lacks, references first (ready for
// Add). lock keeps the paths it holds from garbage collection while the
// session lasts; substitute lets it first fetch what it can from its own
// substituters.
func OpenMissing(ctx context.Context, s Starter, closure []PathInfo, lock, substitute bool) (*Session, []PathInfo, error) {
	sess, valid, err := OpenQuery(ctx, s, true, pathsOf(closure), lock, substitute)
	if err != nil {
		return nil, nil, err
	}
	missing, err := missingOf(closure, valid)
	if err != nil {
		sess.Close()
		return nil, nil, err
	}
	return sess, missing, nil
}

// Step runs nix-store --serve, with --write when given it. It also takes
// the arguments Nix's ssh:// store gives its remote-program (--serve
// --write), for nix copy.
var Step = &remote.Step{
	Name: "serve",
	Body: `case $* in
  ''|--serve) exec nix-store --serve ;;
  --write|'--serve --write') exec nix-store --serve --write ;;
esac
echo "serve: unexpected arguments: $*" >&2; exit 64`,
	Direct: func(args []string) []string { return append([]string{"nix-store", "--serve"}, args...) },
}

// start starts nix-store --serve on the machine.
func start(ctx context.Context, s Starter, write bool) (*remote.Process, Transport, error) {
	cmd := Step.Cmd()
	if write {
		cmd = Step.Cmd("--write")
	}
	p, err := s.Start(ctx, cmd)
	if err != nil {
		return nil, Transport{}, err
	}
	why := func() error {
		err, ok := p.Exited(3 * time.Second)
		switch {
		case !ok:
			return nil
		case err == nil:
			return errors.New("it exited while deployctl was still talking to it")
		case errors.Is(err, remote.ErrOutcomeUnknown):
			return errors.New("the SSH session ended without an exit status: the connection was lost, or the process was killed")
		}
		return err
	}
	return p, Transport{In: p.Stdin, Out: p.Stdout, Why: why}, nil
}

// Close ends the session: the server sees its input close and exits.
func (s *Session) Close() error {
	s.p.Stdin.Close()
	if !s.Failed() {
		// Let the server finish; one that broke may be stuck writing.
		s.p.Exited(5 * time.Second)
	}
	s.p.Close()
	return nil
}

// List lists toplevel's closure on the machine conn reaches (one
// nix-store -qR). It opens a session of its own: call it before opening a
// Session on the same connection, not while holding one, so that a
// connection's limited sessions are never held waiting for another.
func List(ctx context.Context, conn *remote.Conn, toplevel string) ([]string, error) {
	var out bytes.Buffer
	if err := conn.Run(ctx, remote.Cmd{Argv: []string{"nix-store", "--query", "--requisites", toplevel}, Stdout: &out}); err != nil {
		return nil, fmt.Errorf("list the closure of %s: %w", toplevel, err)
	}
	return strings.Fields(out.String()), nil
}

// Infos reads the metadata of paths, failing unless the store holds them
// all.
func (s *Session) Infos(paths []string) ([]PathInfo, error) {
	infos, err := s.QueryPathInfos(paths)
	if err != nil {
		return nil, err
	}
	if len(infos) != len(paths) {
		return nil, fmt.Errorf("it holds only %d of the %d paths asked for", len(infos), len(paths))
	}
	return infos, nil
}
