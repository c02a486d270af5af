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

// Open starts `nix-store --serve` as root on the machine (through its
// privilege escalation when the login user is not), with --write when
// write, and handshakes. Close it when done.
func Open(ctx context.Context, s Starter, write bool) (*Session, error) {
	argv := []string{"nix-store", "--serve"}
	if write {
		argv = append(argv, "--write")
	}
	p, err := s.Start(ctx, remote.Cmd{Argv: argv, Root: true})
	if err != nil {
		return nil, err
	}
	why := func() error {
		err, ok := p.Exited(3 * time.Second)
		switch {
		case !ok:
			return nil
		case err == nil:
			return errors.New("it exited while deployctl was still talking to it")
		}
		return err
	}
	c, err := Handshake(Transport{In: p.Stdin, Out: p.Stdout, Why: why})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("nix-store --serve: %w", err)
	}
	return &Session{Conn: c, p: p}, nil
}

// Close ends the session: the server sees its input close and exits.
func (s *Session) Close() error {
	s.p.Stdin.Close()
	s.p.Exited(5 * time.Second)
	s.p.Close()
	return nil
}

// Closure lists toplevel's closure on the machine conn reaches (one
// nix-store -qR) and reads its metadata over s.
func (s *Session) Closure(ctx context.Context, conn *remote.Conn, toplevel string) ([]PathInfo, error) {
	var out bytes.Buffer
	if err := conn.Run(ctx, remote.Cmd{Argv: []string{"nix-store", "--query", "--requisites", toplevel}, Stdout: &out}); err != nil {
		return nil, fmt.Errorf("list the closure of %s: %w", toplevel, err)
	}
	paths := strings.Fields(out.String())
	infos, err := s.QueryPathInfos(paths)
	if err != nil {
		return nil, err
	}
	if len(infos) != len(paths) {
		return nil, fmt.Errorf("it holds %d of the %d paths of the closure of %s", len(infos), len(paths), toplevel)
	}
	return infos, nil
}
