package remote

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/nixtest"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolvePrecedence(t *testing.T) {
	cfg := writeConfig(t, `
Host web-*
  HostName %h.example
  User admin
  Port 2200
  IdentityFile ~/.ssh/deploy_key
  IdentitiesOnly yes
  UserKnownHostsFile ~/kh1 /etc/kh2
  ProxyJump jump1,ops@jump2:2222
  ServerAliveInterval 5
Host *
  ConnectTimeout 3
`)
	c, err := loadSSHConfig(cfg, "/home/u", "me")
	if err != nil {
		t.Fatal(err)
	}
	// The config decides what the target leaves open (User "" means null).
	e, err := c.resolve(Target{Host: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	want := &Endpoint{
		Alias: "web-1", HostName: "web-1.example", Port: 2200, User: "admin",
		IdentityFiles: []string{"/home/u/.ssh/deploy_key"}, IdentitiesOnly: true, IdentitiesExplicit: true,
		KnownHostsFiles:  []string{"/home/u/kh1", "/etc/kh2"},
		GlobalKnownHosts: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
		ProxyJump:        []string{"jump1", "ops@jump2:2222"},
		Hops: []*Endpoint{
			{Alias: "jump1", HostName: "jump1", Port: 22, User: "me", IdentityFiles: []string{"/home/u/.ssh/id_rsa", "/home/u/.ssh/id_ecdsa", "/home/u/.ssh/id_ecdsa_sk", "/home/u/.ssh/id_ed25519", "/home/u/.ssh/id_ed25519_sk"},
				KnownHostsFiles: []string{"/home/u/.ssh/known_hosts", "/home/u/.ssh/known_hosts2"}, GlobalKnownHosts: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
				ConnectTimeout: 3 * time.Second, AliveInterval: 15 * time.Second, AliveCountMax: 3},
			{Alias: "jump2", HostName: "jump2", Port: 2222, User: "ops", IdentityFiles: []string{"/home/u/.ssh/id_rsa", "/home/u/.ssh/id_ecdsa", "/home/u/.ssh/id_ecdsa_sk", "/home/u/.ssh/id_ed25519", "/home/u/.ssh/id_ed25519_sk"},
				KnownHostsFiles: []string{"/home/u/.ssh/known_hosts", "/home/u/.ssh/known_hosts2"}, GlobalKnownHosts: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
				ConnectTimeout: 3 * time.Second, AliveInterval: 15 * time.Second, AliveCountMax: 3},
		},
		ConnectTimeout: 3 * time.Second, AliveInterval: 5 * time.Second, AliveCountMax: 3,
	}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("resolve =\n%+v\nwant\n%+v", e, want)
	}
	// deployment.targetPort/targetUser beat the config; sshOptions beat both.
	e, err = c.resolve(Target{Host: "web-1", Port: 22, User: "root"})
	if err != nil || e.Port != 22 || e.User != "root" {
		t.Errorf("target port/user did not override config: %+v %v", e, err)
	}
	e, err = c.resolve(Target{Host: "web-1", Port: 22, User: "root", Options: []string{"-p", "2300", "-oUser=bob", "-o", "ProxyJump=none", "-i", "/k"}})
	if err != nil || e.Port != 2300 || e.User != "bob" || e.ProxyJump != nil {
		t.Errorf("sshOptions did not override: %+v %v", e, err)
	}
	if strings.Join(e.IdentityFiles, " ") != "/k /home/u/.ssh/deploy_key" {
		t.Errorf("identity files %v, want -i's first, then the config's", e.IdentityFiles)
	}
	// A host the config does not mention gets the defaults.
	e, err = c.resolve(Target{Host: "db"})
	if err != nil || e.HostName != "db" || e.Port != 22 || e.User != "root" || e.IdentitiesExplicit ||
		e.KnownHostsFiles[0] != "/home/u/.ssh/known_hosts" || e.AliveInterval != 15*time.Second {
		t.Errorf("defaults wrong: %+v %v", e, err)
	}
}

func TestResolveRejects(t *testing.T) {
	c, err := loadSSHConfig(writeConfig(t, ""), "/home/u", "me")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{Host: "-oProxyCommand=sh"}, "may not begin with '-'"},
		{Target{Host: "h", Options: []string{"-v"}}, "unsupported option"},
		{Target{Host: "h", Options: []string{"-o"}}, "needs a value"},
		{Target{Host: "h", Options: []string{"-p", "x"}}, "not a TCP port"},
		{Target{Host: "h", Options: []string{"plain"}}, "unsupported argument"},
		{Target{Host: "h", Options: []string{"-J", "bastion:abc"}}, `ProxyJump bastion:abc: "abc" is not a TCP port`},
		{Target{Host: "h", Options: []string{"-o", "ProxyCommand=nc %h %p"}}, "ProxyCommand is not supported"},
	} {
		if _, err := c.resolve(tc.t); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("resolve(%+v) = %v, want error containing %q", tc.t, err, tc.want)
		}
	}
	if _, err := loadSSHConfig("/nonexistent/ssh_config", "/", "me"); err == nil {
		t.Error("a missing --ssh-config file was accepted")
	}
}

func TestCommandLine(t *testing.T) {
	c, err := loadSSHConfig(writeConfig(t, ""), "/home/u", "me")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.resolve(Target{Host: "h1", Port: 2222, User: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	conn := &Conn{ep: ep, escalation: []string{"sudo", "-H", "--"}, configFile: "/etc/my ssh"}
	got := conn.CommandLine(Cmd{Argv: []string{"nix-env", "-p", "/nix/var/nix/profiles/system", "--set", "/nix/store/x y"}, Root: true})
	want := `ssh -F '/etc/my ssh' -p 2222 deploy@h1 'sudo -H -- nix-env -p /nix/var/nix/profiles/system --set '\''/nix/store/x y'\'''`
	if got != want {
		t.Errorf("CommandLine =\n%s\nwant\n%s", got, want)
	}
}

func TestIncludeMatchAndTokens(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "conf.d")
	if err := os.MkdirAll(inc, 0o755); err != nil {
		t.Fatal(err)
	}
	// As Fedora ships it: a Match criterion the parser does not know.
	if err := os.WriteFile(filepath.Join(inc, "50-redhat.conf"), []byte("Match final all\n  ServerAliveInterval 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, `Include `+inc+`/*.conf
Match user alice exec "true"
  Port 9999
Match host db-*,web-1
  User ops
Host *
  HostName %n.internal
  IdentityFile "~/keys/%u %r@%h:%p"
  UserKnownHostsFile "/kh/with space" /kh/2
`)
	c, err := loadSSHConfig(cfg, "/home/u", "me")
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.resolve(Target{Host: "db-1", User: ""})
	if err != nil {
		t.Fatal(err)
	}
	if e.AliveInterval != 7*time.Second {
		t.Errorf("Included 'Match final all' not applied: ServerAliveInterval %s", e.AliveInterval)
	}
	if e.Port != 22 {
		t.Errorf("a Match block with unsupported criteria was applied: port %d", e.Port)
	}
	if e.User != "ops" || e.HostName != "db-1.internal" {
		t.Errorf("Match host not applied: %s@%s", e.User, e.HostName)
	}
	if want := "/home/u/keys/me ops@db-1.internal:22"; len(e.IdentityFiles) != 1 || e.IdentityFiles[0] != want {
		t.Errorf("IdentityFile = %q, want %q", e.IdentityFiles, want)
	}
	if strings.Join(e.KnownHostsFiles, "|") != "/kh/with space|/kh/2" {
		t.Errorf("UserKnownHostsFile = %q", e.KnownHostsFiles)
	}
}

// TestResolveAgreesWithOpenSSH resolves destinations through configs with
// Include and Match and compares HostName, User and Port with what
// OpenSSH's `ssh -G` says for the same file.
func TestResolveAgreesWithOpenSSH(t *testing.T) {
	nixtest.Require(t, "ssh")
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("web.conf", "Host other\n  Port 2200\n")
	write("bastion.conf", "Port 2300\nUser jumper\n")
	write("all.conf", "Host *.internal\n  User ops\n")
	cfg := write("config", `Host web-*
  Include `+dir+`/web.conf
  User deploy
Host db
  HostName 10.1.2.3
Match host 10.1.*
  Port 2022
Match originalhost other
  User other-user
Host bastion
Include `+dir+`/bastion.conf
Host *
  Include `+dir+`/all.conf
  User fallback
`)
	c, err := loadSSHConfig(cfg, dir, "me")
	if err != nil {
		t.Fatal(err)
	}
	for _, alias := range []string{"web-1", "other", "db", "bastion", "x.internal", "plain"} {
		out, err := exec.Command("ssh", "-G", "-F", cfg, alias).Output()
		if err != nil {
			t.Fatalf("ssh -G %s: %v", alias, err)
		}
		want := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok {
				want[k] = v
			}
		}
		e, err := c.resolve(Target{Host: alias})
		if err != nil {
			t.Fatalf("%s: %v", alias, err)
		}
		got := map[string]string{"hostname": e.HostName, "user": e.User, "port": strconv.Itoa(e.Port)}
		for _, k := range []string{"hostname", "user", "port"} {
			if got[k] != want[k] {
				t.Errorf("%s: %s = %q, OpenSSH says %q", alias, k, got[k], want[k])
			}
		}
	}
}

func TestJumpHostChains(t *testing.T) {
	c, err := loadSSHConfig(writeConfig(t, `Host inner
  ProxyJump middle
Host middle
  ProxyJump outer
Host loop-a
  ProxyJump loop-b
Host loop-b
  ProxyJump loop-a
`), "/home/u", "me")
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.resolve(Target{Host: "inner"})
	if err != nil {
		t.Fatal(err)
	}
	var hops []string
	for _, h := range e.Hops {
		hops = append(hops, h.User+"@"+h.Alias)
	}
	if strings.Join(hops, ",") != "me@outer,me@middle" || strings.Join(e.ProxyJump, ",") != "outer,middle" || e.User != "root" {
		t.Errorf("chain = %v (%v), user %s; want me@outer,me@middle and root for the target", hops, e.ProxyJump, e.User)
	}
	if _, err := c.resolve(Target{Host: "loop-a"}); err == nil || !strings.Contains(err.Error(), "ProxyJump loop: loop-a → loop-b → loop-a") {
		t.Errorf("a ProxyJump loop = %v", err)
	}
}

// TestMatchAgreesWithOpenSSH: Match criteria are judged as OpenSSH judges
// them, in reading order (a Match host before the HostName line sees the
// name as given), with canonical not holding and user the remote user.
func TestMatchAgreesWithOpenSSH(t *testing.T) {
	nixtest.Require(t, "ssh")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte(`Match host 10.0.0.5
  Port 2222
Host web
  HostName 10.0.0.5
Match host 10.0.0.5 user root
  Port 2250
Match canonical
  Port 2300
Match user deploy
  Port 2400
Match originalhost api !user root
  HostName api.internal
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadSSHConfig(cfg, dir, "me")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ alias, user string }{{"web", "root"}, {"web", "deploy"}, {"api", "deploy"}, {"api", "root"}, {"other", "deploy"}} {
		out, err := exec.Command("ssh", "-G", "-F", cfg, "-l", tc.user, tc.alias).Output()
		if err != nil {
			t.Fatalf("ssh -G %s: %v", tc.alias, err)
		}
		want := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok {
				want[k] = v
			}
		}
		e, err := c.resolve(Target{Host: tc.alias, User: tc.user})
		if err != nil {
			t.Fatalf("%s: %v", tc.alias, err)
		}
		got := map[string]string{"hostname": e.HostName, "user": e.User, "port": strconv.Itoa(e.Port)}
		for _, k := range []string{"hostname", "user", "port"} {
			if got[k] != want[k] {
				t.Errorf("%s@%s: %s = %q, OpenSSH says %q", tc.user, tc.alias, k, got[k], want[k])
			}
		}
	}
}
