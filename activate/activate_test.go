package activate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/deployctl/deployctl/internal/remote"
)

// recorder is a fake target: it records commands and fails the ones whose
// line contains fail.
type recorder struct {
	cmds []string
	root []bool
	fail string
}

func (r *recorder) Run(_ context.Context, cmd remote.Cmd) error {
	line := strings.Join(cmd.Argv, " ")
	r.cmds = append(r.cmds, line)
	r.root = append(r.root, cmd.Root)
	if r.fail != "" && strings.Contains(line, r.fail) {
		return &remote.ExitError{Status: 4, Stderr: "unit failed"}
	}
	return nil
}

const (
	top     = "/nix/store/aaaa-nixos-system-h1"
	realise = "nix-store --realise " + top
	profile = "nix-env -p " + SystemProfile + " --set " + top
	drop    = `sh -c [ "$(readlink "$1")" != "$2" ] || rm -f "$1" sh /nix/var/nix/gcroots/deployctl/pushed ` + top
)

func TestActivateRunsProfileThenSwitch(t *testing.T) {
	for action, want := range map[string][]string{
		"switch":       {realise, profile, top + "/bin/switch-to-configuration switch", drop},
		"boot":         {realise, profile, top + "/bin/switch-to-configuration boot", drop},
		"test":         {realise, top + "/bin/switch-to-configuration test"},
		"dry-activate": {realise, top + "/bin/switch-to-configuration dry-activate"},
	} {
		r := &recorder{}
		if err := Activate(context.Background(), r, top, action, Options{}); err != nil {
			t.Fatalf("%s: %v", action, err)
		}
		if strings.Join(r.cmds, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s ran\n%s\nwant\n%s", action, strings.Join(r.cmds, "\n"), strings.Join(want, "\n"))
		}
		for i, root := range r.root {
			if !root {
				t.Errorf("%s: %q does not run as root", action, r.cmds[i])
			}
		}
	}
}

func TestActivateErrors(t *testing.T) {
	r := &recorder{fail: "switch-to-configuration"}
	err := Activate(context.Background(), r, top, "switch", Options{})
	var ee *remote.ExitError
	if !errors.As(err, &ee) || ee.Status != 4 || err.Error() != "switch-to-configuration switch: exit status 4: unit failed" {
		t.Errorf("switch failure = %v", err)
	}
	r = &recorder{fail: "nix-env"}
	err = Activate(context.Background(), r, top, "switch", Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "set system profile: ") || len(r.cmds) != 2 {
		t.Errorf("a failed profile update must stop before the switch: %v, ran %v", err, r.cmds)
	}
	r = &recorder{fail: "--realise"}
	err = Activate(context.Background(), r, top, "switch", Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "realise "+top+": ") || len(r.cmds) != 1 {
		t.Errorf("a path missing on the target must stop before the profile: %v, ran %v", err, r.cmds)
	}
	r = &recorder{}
	if err := Activate(context.Background(), r, top, "reboot", Options{}); err == nil || len(r.cmds) != 0 {
		t.Errorf("unknown action: %v, ran %v", err, r.cmds)
	}
}

// TestActivatePushRootWarning: a push root that cannot be dropped after a
// successful switch is a warning, not a failed activation.
func TestActivatePushRootWarning(t *testing.T) {
	r := &recorder{fail: "gcroots/deployctl/pushed"}
	var warned []string
	err := Activate(context.Background(), r, top, "switch", Options{Warn: func(msg string) { warned = append(warned, msg) }})
	if err != nil {
		t.Fatalf("a push root that cannot be dropped failed the activation: %v", err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "could not drop the push's GC root") {
		t.Errorf("warnings %q, want one about the push root", warned)
	}
}
