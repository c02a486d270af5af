package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
)

// TestPlanScriptDeploys: deployctl plan prints a shell script that, run by
// hand, deploys the hosts: alpha gets its system, its key (from its
// command, which the script shows instead of the secret), its hooks with
// their variables and its checks; beta, whose health check fails, goes
// back to the system it ran before and the script fails. Printing the plan
// contacts no host and builds nothing.
func TestPlanScriptDeploys(t *testing.T) {
	rev := time.Now().Format("150405.000000")
	secret := "plan-secret-" + rev
	dir := t.TempDir()
	hookLog, secretFile := filepath.Join(dir, "hooks.log"), filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	deployment := func(check string) map[string]any {
		return map[string]any{
			"keys": map[string]any{"token": map[string]any{"keyCommand": []string{"cat", secretFile}, "destDir": "/run/keys", "user": "root", "group": "root", "permissions": "0640"}},
			"hooks": map[string]any{
				"prePush":      []any{map[string]any{"command": []string{"sh", "-c", `echo "prePush $DEPLOYCTL_HOST" >> ` + hookLog}, "on": "local"}},
				"postActivate": []any{map[string]any{"command": []string{"sh", "-c", `echo "postActivate $DEPLOYCTL_HOST previous=$DEPLOYCTL_PREVIOUS" >> /var/lib/deployctl/plan-hooks.log`}, "on": "target"}},
			},
			"healthChecks": map[string]any{"cmd": []any{map[string]any{"cmd": []string{"grep", "-qx", check, "/run/fixture/health"}, "period": 0.2}}},
		}
	}
	e := startFleet(t,
		fixture.Host{Name: "alpha", Revision: rev, Deployment: deployment("healthy")},
		fixture.Host{Name: "beta", Revision: rev, Deployment: deployment("healthy")})
	// Both run a first system; then beta's next one fails its check.
	e.deployctl("deploy", "--all").wantCode(t, 0)
	before := map[string]string{"alpha": e.currentSystem("alpha"), "beta": e.currentSystem("beta")}
	e.writeFlake(
		fixture.Host{Name: "alpha", Revision: rev + "-2", Deployment: deployment("healthy")},
		fixture.Host{Name: "beta", Revision: rev + "-2", Deployment: deployment("never")})

	r := e.deployctl("plan", "alpha", "beta", "--probe-timeout", "3s")
	r.wantCode(t, 0)
	plan := r.stdout
	if strings.Contains(plan, secret) {
		t.Fatalf("the plan holds the secret itself:\n%s", plan)
	}
	for _, want := range []string{"#!/bin/sh", "cat " + secretFile + ` > "$key_file"`, "nix copy", "switch-to-configuration switch", "ssh -F " + e.fleet.SSHConfig, "nix-store --serve"} {
		if !strings.Contains(plan, want) {
			t.Errorf("the plan lacks %q:\n%s", want, plan)
		}
	}
	if strings.Contains(r.stderr, "connected") {
		t.Errorf("printing the plan contacted a host:\n%s", r.stderr)
	}
	if e.currentSystem("alpha") != before["alpha"] {
		t.Fatal("printing the plan changed alpha")
	}
	// What it stands for: these systems, from this flake.
	e.deployctl("build", "--all").wantCode(t, 0)
	want := map[string]string{"alpha": e.toplevel("alpha"), "beta": e.toplevel("beta")}
	if !strings.Contains(plan, want["alpha"]) || !strings.Contains(plan, want["beta"]) {
		t.Fatalf("the plan does not name the systems %v:\n%s", want, plan)
	}

	if err := os.Remove(hookLog); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "plan.sh")
	if err := os.WriteFile(file, []byte(plan), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", file)
	cmd.Env = e.env()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the script succeeded though beta's check fails:\n%s", out)
	}
	if got := e.currentSystem("alpha"); got != want["alpha"] {
		t.Errorf("after the script alpha runs %s, want %s\n%s", got, want["alpha"], out)
	}
	if got := e.ssh("alpha", "readlink -f /nix/var/nix/profiles/system"); got != want["alpha"] {
		t.Errorf("alpha's profile is %s, want %s", got, want["alpha"])
	}
	if got := e.ssh("alpha", "cat /run/keys/token; stat -c ' %a %U' /run/keys/token"); got != secret+" 640 root" {
		t.Errorf("alpha's key: %q, want %q", got, secret+" 640 root")
	}
	if got := e.ssh("alpha", "tail -n 1 /var/lib/deployctl/plan-hooks.log"); got != "postActivate alpha previous="+before["alpha"] {
		t.Errorf("alpha's postActivate hook wrote %q", got)
	}
	local, _ := os.ReadFile(hookLog)
	if string(local) != "prePush alpha\nprePush beta\n" {
		t.Errorf("the local hooks wrote %q", local)
	}
	if got := e.currentSystem("beta"); got != before["beta"] {
		t.Errorf("beta runs %s after its failed check, want the system before, %s\n%s", got, before["beta"], out)
	}
	if got := e.ssh("beta", "readlink -f /nix/var/nix/profiles/system"); got != before["beta"] {
		t.Errorf("beta's profile is %s, want %s", got, before["beta"])
	}
	if !strings.Contains(string(out), "beta: a health check failed: rolling back") {
		t.Errorf("the script did not say why beta went back:\n%s", out)
	}
}
