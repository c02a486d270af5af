package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/integration/fleet"
)

// TestKeys: deployment.keys go up with the deploy. A "poison" secret from
// a keyCommand reaches its file with its mode and owner, and appears in no
// Nix store (here or on the hosts) and in no process's command line while
// it moves; no key file is ever seen with a wider mode; a key whose owner
// the new system creates is re-owned after the switch; a post-activation
// key goes up after it; a failing keyCommand stops its host before the
// switch, leaving it on its previous system, while the other deploys;
// upload-keys uploads again without deploying.
func TestKeys(t *testing.T) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	poison := "poison-" + hex.EncodeToString(b[:])
	alphaKeys := map[string]any{"keys": map[string]any{
		"db":   map[string]any{"keyCommand": []string{"printenv", "DEPLOYCTL_TEST_POISON"}, "user": fleet.DeployUser, "group": fleet.DeployUser, "permissions": "0640"},
		"svc":  map[string]any{"text": "for svc", "user": "svc", "group": "svc"},
		"late": map[string]any{"text": "after the switch", "user": fleet.DeployUser, "uploadAt": "post-activation", "destDir": "/run/keys/late"},
	}}
	betaKeys := map[string]any{"keys": map[string]any{"bad": map[string]any{"keyCommand": []string{"sh", "-c", "echo 'vault: permission denied' >&2; exit 3"}}}}
	e := startFleet(t, fixture.Host{Name: "alpha"}, fixture.Host{Name: "beta"})
	e.deployctl("deploy", "beta").wantCode(t, 0)
	betaBefore := e.currentSystem("beta")
	e.writeFlake(fixture.Host{Name: "alpha", Deployment: alphaKeys, AddsUser: "svc"}, fixture.Host{Name: "beta", Deployment: betaKeys, Revision: "2"})
	e.deployctl("build", "--all").wantCode(t, 0)

	// Watch alpha's key directory and every process's command line while
	// the deploy runs.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var seen []string
	wg.Add(2)
	go func() {
		defer wg.Done()
		watch := `while [ ! -e /tmp/stop-watch ]; do
  for f in /run/keys/* /run/keys/.deployctl-key.* /run/keys/late/* /run/keys/late/.deployctl-key.*; do
    [ ! -f "$f" ] || stat -c '%a %U:%G %n' "$f" 2>/dev/null
  done
done`
		out, _ := e.fleet.SSH(context.Background(), "alpha", watch)
		seen = strings.Split(out, "\n")
	}()
	var inCmdline []string
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				if c, err := os.ReadFile(p); err == nil && strings.Contains(string(c), poison) {
					inCmdline = append(inCmdline, p+": "+strings.ReplaceAll(string(c), "\x00", " "))
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond) // the watcher is up
	r := e.deployctlWith([]string{"DEPLOYCTL_TEST_POISON=" + poison}, "deploy", "--all")
	stop()
	e.ssh("alpha", "touch /tmp/stop-watch")
	wg.Wait()
	r.wantCode(t, 3)

	if len(inCmdline) > 0 {
		t.Errorf("the secret appeared in command lines: %v", inCmdline)
	}
	files := 0
	for _, line := range seen {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mode, err := strconv.ParseUint(f[0], 8, 32)
		if err == nil && mode&^0o640 != 0 {
			t.Errorf("a key file was seen with mode %s: %s", f[0], line)
		}
		files++
	}
	t.Logf("the watcher saw key files %d times, temporary ones %d times", files, strings.Count(strings.Join(seen, "\n"), ".deployctl-key."))
	if files == 0 {
		t.Errorf("the watcher saw no key file at all: it proves nothing")
	}
	for file, want := range map[string]string{"/run/keys/db": "640 deploy:deploy", "/run/keys/svc": "600 svc:svc", "/run/keys/late/late": "600 deploy:root"} {
		if got := e.ssh("alpha", "stat -c '%a %U:%G' "+file); got != want {
			t.Errorf("%s: %s, want %s", file, got, want)
		}
	}
	if got := e.ssh("alpha", "cat /run/keys/db"); got != poison {
		t.Errorf("the key's content: %q", got)
	}
	if !strings.Contains(r.stderr, "key svc: svc:svc does not exist yet: /run/keys/svc is root's until the new system is active") {
		t.Errorf("no warning for the key whose owner comes with the new system:\n%s", r.stderr)
	}
	if !regexp.MustCompile(`(?m)^  beta +FAILED +\S+ +keys: key bad: keyCommand sh -c .*: exit status 3: vault: permission denied$`).MatchString(r.stderr) {
		t.Errorf("beta's failing keyCommand is not reported with its stderr:\n%s", r.stderr)
	}
	if got := e.currentSystem("beta"); got != betaBefore {
		t.Errorf("beta runs %s after its keyCommand failed, want %s", got, betaBefore)
	}
	// In no store: this machine's, and each host's.
	if out, _ := exec.Command("grep", "-rlF", poison, "/nix/store").Output(); len(out) > 0 {
		t.Errorf("the secret is in this machine's store: %s", out)
	}
	for _, h := range []string{"alpha", "beta"} {
		if out := e.ssh(h, "grep -rlF "+poison+" /nix/store || true"); out != "" {
			t.Errorf("the secret is in %s's store: %s", h, out)
		}
	}

	// upload-keys: again, without deploying.
	running := e.currentSystem("alpha")
	e.deployctlWith([]string{"DEPLOYCTL_TEST_POISON=second"}, "upload-keys", "alpha").wantCode(t, 0)
	if got := e.ssh("alpha", "cat /run/keys/db"); got != "second" || e.currentSystem("alpha") != running {
		t.Errorf("upload-keys: the key holds %q, alpha runs %s (was %s)", got, e.currentSystem("alpha"), running)
	}
	// An owner that does not exist, outside of a switch that could make
	// it: an error naming it.
	alphaKeys["keys"].(map[string]any)["ghost"] = map[string]any{"text": "boo", "user": "ghost", "group": "ghost"}
	e.writeFlake(fixture.Host{Name: "alpha", Deployment: alphaKeys, AddsUser: "svc"}, fixture.Host{Name: "beta", Deployment: betaKeys, Revision: "2"})
	r = e.deployctlWith([]string{"DEPLOYCTL_TEST_POISON=third"}, "upload-keys", "alpha")
	r.wantCode(t, 1)
	if !strings.Contains(r.stderr, "keys: key ghost: the owner ghost:ghost does not exist on the host (/run/keys/ghost is root's)") {
		t.Errorf("a key whose owner does not exist is not reported:\n%s", r.stderr)
	}
}
