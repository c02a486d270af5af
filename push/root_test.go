package push

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/remote"
)

// userTarget is a Target whose login user cannot become root; it records
// the commands run.
type userTarget struct {
	events *[]string
	err    error
}

func (u userTarget) Start(context.Context, remote.Cmd) (*remote.Process, error) {
	return nil, errors.New("not started here")
}

func (u userTarget) Run(_ context.Context, cmd remote.Cmd) error {
	*u.events = append(*u.events, "run "+strings.Join(cmd.Argv[4:], " "))
	return u.err
}

func (u userTarget) Unprivileged() bool { return true }

// TestUserRootBeforeTheSessionEnds: a user's root is registered while the
// push's session still holds the paths, and the session ends even when
// registering fails.
func TestUserRootBeforeTheSessionEnds(t *testing.T) {
	for _, fail := range []error{nil, errors.New("exit status 1")} {
		var events []string
		root := newRoot(t.Context(), userTarget{events: &events, err: fail}, "/nix/store/x-system", Root)
		err := root.commit(func() { events = append(events, "end") })
		if want := []string{"run /nix/store/x-system pushed", "end"}; !slices.Equal(events, want) {
			t.Errorf("failing %v: %q, want %q", fail, events, want)
		}
		if (err != nil) != (fail != nil) || fail != nil && !strings.Contains(err.Error(), "~/.local/state/deployctl/pushed") {
			t.Errorf("failing %v: commit = %v", fail, err)
		}
	}
}
