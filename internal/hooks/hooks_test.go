package hooks

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestParse: hooks default to local; unknown points, sides and empty
// commands are refused, named.
func TestParse(t *testing.T) {
	hs, err := Parse(json.RawMessage(`{"preActivate":[{"command":["true"]},{"command":["x"],"on":"target"}]}`))
	if err != nil || len(hs["preActivate"]) != 2 || hs["preActivate"][0].On != "local" || hs["preActivate"][1].On != "target" {
		t.Errorf("parsed %+v, %v", hs, err)
	}
	for raw, want := range map[string]string{
		`{"preDeploy":[]}`: "deployment.hooks.preDeploy: not a hook point",
		`{"postPush":[{"command":["x"],"on":"builder"}]}`: `deployment.hooks.postPush[0]: on "builder"`,
		`{"postPush":[{"command":[]}]}`:                   "deployment.hooks.postPush[0]: command is empty",
	} {
		if _, err := Parse(json.RawMessage(raw)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}

// TestRunLocal: a local hook gets the variables; the first failure stops
// the point, its error naming the hook and carrying its output.
func TestRunLocal(t *testing.T) {
	var out strings.Builder
	r := Runner{Output: &out}
	hs := Hooks{"postPush": {
		{Command: []string{"sh", "-c", `echo "$DEPLOYCTL_PHASE $DEPLOYCTL_HOST $DEPLOYCTL_TOPLEVEL"`}, On: "local"},
		{Command: []string{"sh", "-c", "echo broken >&2; exit 4"}, On: "local"},
		{Command: []string{"sh", "-c", "echo never"}, On: "local"},
	}}
	err := r.Run(context.Background(), hs, "postPush", Env{Host: "web-1", Toplevel: "/nix/store/x"})
	if out.String() != "postPush web-1 /nix/store/x\nbroken\n" {
		t.Errorf("output %q", out.String())
	}
	if err == nil || !strings.Contains(err.Error(), "postPush hook 2 (local, sh -c") || !strings.Contains(err.Error(), "exit status 4: broken") {
		t.Errorf("error %v", err)
	}
	if err := r.Run(context.Background(), Hooks{"prePush": {{Command: []string{"true"}, On: "target"}}}, "prePush", Env{}); err == nil || !strings.Contains(err.Error(), "no host to run it on") {
		t.Errorf("a target hook without a host: %v", err)
	}
}
