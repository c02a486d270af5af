// Package fleet starts test hosts on this machine: each host is a mount and
// PID namespace with its own /nix store, /run, /tmp, /var/lib/deployctl,
// /etc/deployctl and /root (so this machine's shell start-up files stay out
// of its sessions), running its own sshd on its own loopback address. Test
// code only.
package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Prerequisites reports what this machine lacks to run a fleet, or nil.
func Prerequisites() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (mount namespaces and binding /nix need it)")
	}
	for _, bin := range []string{"unshare", "nsenter", "ssh", "ssh-keygen", "nix", "nix-store"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat(sshdPath); err != nil {
		missing = append(missing, sshdPath+" (openssh-server)")
	}
	if _, err := os.Stat(perlPath); err != nil {
		missing = append(missing, perlPath+" (perl-base: the hosts' init and the fixture's HTTP service)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run scripts/setup.sh as root", strings.Join(missing, ", "))
	}
	return nil
}

const (
	sshdPath = "/usr/sbin/sshd"
	perlPath = "/usr/bin/perl"
)

// Options describe a fleet to start.
type Options struct {
	// Dir holds keys, configs and the hosts' private directories. It must
	// not contain white space (NIX_SSHOPTS is split on it).
	Dir   string
	Hosts []string
	// Log receives the hosts' sshd output; nil discards it.
	Log io.Writer
	// StoresInMemory puts each host's /nix on a tmpfs of its own instead
	// of Dir/hosts/NAME/nix. The benchmarks use it: this VM's disk takes
	// from 0.05 to 0.8 ms to create a file, depending on the directory
	// (measured with a shell loop), and that noise would swamp what they
	// compare.
	StoresInMemory bool
	// Systemd, when set, makes every host a Debian container of this
	// release (SystemdReleases) booting systemd as its PID 1, instead of
	// a mount namespace: transient units and systemctl work there as on
	// NixOS. Its root is built once and cached (EnsureRoot).
	Systemd string
}

// Fleet is a set of running test hosts.
type Fleet struct {
	Dir        string
	SSHConfig  string // an ssh_config with a Host alias per host
	KnownHosts string // known_hosts holding every host's key
	Identity   string // the private key every host accepts for root
	Hosts      []*Host
}

// Host is one running test host.
type Host struct {
	Name string
	Addr string // 127.0.0.N
	// Root is the host's private directory on this machine; Root/nix is
	// its /nix (unless the fleet keeps its stores in memory).
	Root string
	// KnownHostsLine is the host's key as a known_hosts line.
	KnownHostsLine string

	storeInMemory bool
	// merged is a systemd host's root (an overlay); "" for a namespace
	// host.
	merged   string
	cmd      *exec.Cmd
	exited   chan struct{}
	stderr   *lockedBuffer
	stopOnce sync.Once
}

var (
	addrMu   sync.Mutex
	nextAddr = 10
)

// allocAddr returns a loopback address whose port 22 nobody listens on.
func allocAddr() (string, error) {
	addrMu.Lock()
	defer addrMu.Unlock()
	for nextAddr < 250 {
		addr := fmt.Sprintf("127.0.0.%d", nextAddr)
		nextAddr++
		c, err := net.DialTimeout("tcp", addr+":22", 200*time.Millisecond)
		if err != nil {
			return addr, nil
		}
		c.Close()
	}
	return "", errors.New("no free loopback address left in 127.0.0.10-249")
}

// Users on every host besides root (sudo rules when this machine has
// sudo): DeployUser may run any command as root with sudo, without a
// password; PasswordUser may too, with the password SudoPassword;
// NoSudoUser may not use sudo at all.
const (
	DeployUser   = "deploy"
	PasswordUser = "deploypw"
	SudoPassword = "fleet-sudo-pw"
	NoSudoUser   = "nosudo"
	// sudoPasswordHash is SudoPassword as crypt(3) SHA-512 ("openssl
	// passwd -6 -salt fleetsudo fleet-sudo-pw").
	sudoPasswordHash = "$6$fleetsudo$amG7KqbZuZX9DkXftLpWLWpFUVso09BeD/Hb0wtPLdZwthbp7Ya9vCQpa9PycTuy5awzW1oXHZZStLi77iYiA1"
)

// Start starts the hosts and returns when each one's sshd accepts
// connections. On error, whatever started is stopped.
func Start(ctx context.Context, opts Options) (_ *Fleet, err error) {
	if err := Prerequisites(); err != nil {
		return nil, err
	}
	var systemdRoot string
	if opts.Systemd != "" {
		if err := SystemdPrerequisites(); err != nil {
			return nil, err
		}
		if systemdRoot, err = EnsureRoot(ctx, opts.Systemd, opts.Log); err != nil {
			return nil, err
		}
	}
	if strings.ContainsAny(opts.Dir, " \t\n") {
		return nil, fmt.Errorf("fleet dir %q contains white space", opts.Dir)
	}
	f := &Fleet{
		Dir:        opts.Dir,
		SSHConfig:  filepath.Join(opts.Dir, "ssh_config"),
		KnownHosts: filepath.Join(opts.Dir, "known_hosts"),
		Identity:   filepath.Join(opts.Dir, "id_ed25519"),
	}
	defer func() {
		if err != nil {
			f.Stop()
		}
	}()
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := keygen(ctx, f.Identity, "deployctl-fleet"); err != nil {
		return nil, err
	}
	// The mount points must exist on this machine.
	for _, d := range []string{"/var/lib/deployctl", "/etc/deployctl"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat("/nix"); err != nil {
		return nil, fmt.Errorf("/nix does not exist on this machine: is Nix installed? %w", err)
	}
	// All hosts' sshd write to one log: serialise them.
	var log io.Writer
	if opts.Log != nil {
		log = &lockedWriter{w: opts.Log}
	}
	var known, config strings.Builder
	for _, name := range opts.Hosts {
		addr, err := allocAddr()
		if err != nil {
			return nil, err
		}
		h := &Host{Name: name, Addr: addr, Root: filepath.Join(opts.Dir, "hosts", name), storeInMemory: opts.StoresInMemory}
		if systemdRoot != "" {
			f.Hosts = append(f.Hosts, h)
			if err := h.prepareSystemd(ctx, systemdRoot, f.Identity+".pub"); err != nil {
				return nil, fmt.Errorf("host %s: %w", name, err)
			}
			if err := h.startSystemd(log); err != nil {
				return nil, fmt.Errorf("host %s: %w", name, err)
			}
		} else {
			if err := h.prepare(ctx, f.Identity+".pub"); err != nil {
				return nil, fmt.Errorf("host %s: %w", name, err)
			}
			if err := h.start(log); err != nil {
				return nil, fmt.Errorf("host %s: %w", name, err)
			}
			f.Hosts = append(f.Hosts, h)
		}
		known.WriteString(h.KnownHostsLine + "\n")
		fmt.Fprintf(&config, "Host %s\n  HostName %s\n", name, addr)
	}
	fmt.Fprintf(&config, "Host *\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n"+
		"  StrictHostKeyChecking yes\n  ConnectTimeout 5\n  LogLevel ERROR\n", f.Identity, f.KnownHosts)
	if err := os.WriteFile(f.KnownHosts, []byte(known.String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.SSHConfig, []byte(config.String()), 0o600); err != nil {
		return nil, err
	}
	for _, h := range f.Hosts {
		if err := h.waitReady(ctx); err != nil {
			return nil, fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return f, nil
}

func keygen(ctx context.Context, path, comment string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh-keygen %s: %v: %s", path, err, out)
	}
	return nil
}

// hostKey makes the host's key at path and its known_hosts line.
func (h *Host) hostKey(ctx context.Context, path string) error {
	if err := keygen(ctx, path, h.Name); err != nil {
		return err
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		return err
	}
	fields := strings.Fields(string(pub))
	h.KnownHostsLine = h.Addr + " " + fields[0] + " " + fields[1]
	return nil
}

func (h *Host) prepare(ctx context.Context, authorizedKey string) error {
	for _, d := range []string{"nix", "tmp", "varlib", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(h.Root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(h.Root, "tmp"), 0o1777); err != nil {
		return err
	}
	hostKey := filepath.Join(h.Root, "etc", "ssh_host_ed25519_key")
	if err := h.hostKey(ctx, hostKey); err != nil {
		return err
	}
	auth, err := os.ReadFile(authorizedKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.Root, "etc", "authorized_keys"), auth, 0o600); err != nil {
		return err
	}
	conf := fmt.Sprintf(`ListenAddress %s:22
HostKey /run/fleet/ssh_host_ed25519_key
AuthorizedKeysFile /run/fleet/authorized_keys
PidFile /run/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 200
ClientAliveInterval 0
SetEnv NIX_CONF_DIR=/run/fleet/nix
`, h.Addr)
	if err := os.WriteFile(filepath.Join(h.Root, "etc", "sshd_config"), []byte(conf), 0o600); err != nil {
		return err
	}
	// The non-root users, on this host only: private copies of the
	// account files.
	for file, line := range map[string]string{
		"passwd": DeployUser + ":x:4242:4242:deployctl test user:/tmp:/bin/sh\n" +
			PasswordUser + ":x:4243:4243:deployctl test user, sudo with a password:/tmp:/bin/sh\n" +
			NoSudoUser + ":x:4244:4244:deployctl test user, no sudo:/tmp:/bin/sh\n",
		"group": DeployUser + ":x:4242:\n" + PasswordUser + ":x:4243:\n" + NoSudoUser + ":x:4244:\n",
		"shadow": DeployUser + ":*:19000:0:99999:7:::\n" + PasswordUser + ":" + sudoPasswordHash + ":19000:0:99999:7:::\n" +
			NoSudoUser + ":*:19000:0:99999:7:::\n",
		// sudo keeps NIX_CONF_DIR (sshd sets it), so Nix run as root
		// through sudo reads the host's settings too: no binary cache.
		"sudoers": "Defaults env_keep += \"NIX_CONF_DIR\"\n" + DeployUser + " ALL=(ALL) NOPASSWD: ALL\n" + PasswordUser + " ALL=(ALL) ALL\n",
	} {
		orig, err := os.ReadFile("/etc/" + file)
		if os.IsNotExist(err) {
			continue // no sudo here: the user cannot escalate
		}
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if file == "shadow" || file == "sudoers" {
			mode = 0o440
		}
		if err := os.WriteFile(filepath.Join(h.Root, "etc", file), append(orig, line...), mode); err != nil {
			return err
		}
	}
	// The host's Nix reads this machine's settings, with no binary cache:
	// none is reachable here, and a build would first try it for seconds
	// (and reach outside the machine).
	nixConf, err := os.ReadFile("/etc/nix/nix.conf")
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	nixConf = append(nixConf, "\n# fleet host: no binary cache\nsubstituters =\n"...)
	return os.WriteFile(filepath.Join(h.Root, "etc", "nix.conf"), nixConf, 0o644)
}

// hostScript runs inside the new namespaces: private mounts, sshd, and a
// PID 1 that reaps orphans (as init does), so that killing sshd leaves the
// host up. When PID 1 dies, the kernel kills every process the host
// started. For the fixture's systems it leaves /run/fleet/address (the
// host's loopback address) and /run/fleet/start-sshd (starts sshd again
// after a system stopped it; /run/sshd.pid is its pid).
const hostScript = `set -eu
R="$1"
if [ "$2" = memory ]; then mount -t tmpfs -o mode=0755 tmpfs /nix; else mount --bind "$R/nix" /nix; fi
for f in passwd group shadow sudoers; do
  if [ -e "$R/etc/$f" ]; then mount --bind "$R/etc/$f" "/etc/$f"; fi
done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd /run/fleet/nix
cp "$R/etc/sshd_config" "$R/etc/ssh_host_ed25519_key" "$R/etc/authorized_keys" /run/fleet/
cp "$R/etc/nix.conf" /run/fleet/nix/
chmod 600 /run/fleet/ssh_host_ed25519_key
chmod 644 /run/fleet/authorized_keys
mount --bind "$R/varlib" /var/lib/deployctl
mount -t tmpfs -o mode=0755 tmpfs /etc/deployctl
mount --bind "$R/root" /root
mount --bind "$R/tmp" /tmp
echo "$3" > /run/fleet/address
printf '#!/bin/sh\nexec %s -f /run/fleet/sshd_config </dev/null >/dev/null 2>&1\n' ` + sshdPath + ` > /run/fleet/start-sshd
chmod 755 /run/fleet/start-sshd
` + sshdPath + ` -D -e -f /run/fleet/sshd_config &
exec ` + perlPath + ` -e 'while (1) { sleep 1 if waitpid(-1, 0) < 0 }'
`

func (h *Host) start(log io.Writer) error {
	storeKind := "disk"
	if h.storeInMemory {
		storeKind = "memory"
	}
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--mount-proc",
		"sh", "-c", hostScript, "fleet-host", h.Root, storeKind, h.Addr)
	h.stderr = newLockedBuffer()
	var w io.Writer = h.stderr
	if log != nil {
		w = io.MultiWriter(h.stderr, &prefixWriter{w: log, prefix: "[" + h.Name + " sshd] "})
	}
	cmd.Stdout, cmd.Stderr = w, w
	// If this process dies, the host dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	h.cmd = cmd
	h.exited = make(chan struct{})
	go func() { cmd.Wait(); close(h.exited) }()
	return nil
}

func (h *Host) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-h.exited:
			return fmt.Errorf("sshd exited: %s", strings.TrimSpace(h.stderr.String()))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		c, err := net.DialTimeout("tcp", h.Addr+":22", 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd on %s:22 not ready after 15s: %s", h.Addr, strings.TrimSpace(h.stderr.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills every host and waits for them. It is safe to call twice.
func (f *Fleet) Stop() {
	for _, h := range f.Hosts {
		h.Stop()
	}
}

// Stop kills the host: its unshare process, whose death kills the
// namespace's PID 1 and with it every process of the host. Only the first
// call acts: the process group may be reused once the host is reaped.
func (h *Host) Stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		if h.merged != "" {
			_ = exec.Command("umount", h.merged).Run()
		}
		return
	}
	h.stopOnce.Do(func() {
		if h.merged != "" {
			h.stopSystemd()
			return
		}
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.exited
	})
}

// Exec runs script with sh inside the host's namespaces, as root, without
// SSH (for a host whose sshd a test stopped), with args as its $1…, and
// returns its output.
func (h *Host) Exec(ctx context.Context, script string, args ...string) (string, error) {
	init, err := h.initPID()
	if err != nil {
		return "", err
	}
	argv := append([]string{"--target", strconv.Itoa(init), "--mount", "--pid", "sh", "-c", script, "sh"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	return string(out), err
}

// daemonScript (re)starts a namespace host's nix-daemon with the host's
// Nix settings and $1 added, and waits for its socket. Users who are not
// root reach the host's store through it, as on a multi-user install.
const daemonScript = `set -eu
d=/run/fleet/nix-daemon s=/nix/var/nix/daemon-socket/socket
if [ -e $d/pid ]; then kill "$(cat $d/pid)" 2>/dev/null || true; fi
mkdir -p $d && cp /run/fleet/nix/nix.conf $d/ && printf '%s\n' "$1" >> $d/nix.conf
rm -f $s
NIX_CONF_DIR=$d nix-daemon </dev/null >>$d/log 2>&1 &
echo $! > $d/pid
i=0
while [ ! -S $s ]; do
  i=$((i+1)); if [ $i -gt 200 ]; then echo "nix-daemon did not start:"; cat $d/log; exit 1; fi
  sleep 0.05
done
`

// StartNixDaemon (re)starts a nix-daemon on a namespace host, with the
// settings conf (nix.conf lines) added to the host's own.
func (h *Host) StartNixDaemon(ctx context.Context, conf string) error {
	if h.merged != "" {
		return fmt.Errorf("%s: StartNixDaemon is for namespace hosts", h.Name)
	}
	if out, err := h.Exec(ctx, daemonScript, conf); err != nil {
		return fmt.Errorf("%s: start nix-daemon: %v: %s", h.Name, err, out)
	}
	return nil
}

// initPID is the host's PID 1, as this machine sees it: the child of
// unshare or systemd-nspawn.
func (h *Host) initPID() (int, error) {
	pid := h.cmd.Process.Pid
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil || len(strings.Fields(string(children))) == 0 {
		return 0, fmt.Errorf("%s: no init process: %v", h.Name, err)
	}
	return strconv.Atoi(strings.Fields(string(children))[0])
}

// Host returns the named host, or nil.
func (f *Fleet) Host(name string) *Host {
	for _, h := range f.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// SSH runs a shell command on a host with OpenSSH's ssh (independent of
// deployctl's own SSH code) and returns its standard output.
func (f *Fleet) SSH(ctx context.Context, host, command string) (string, error) {
	cmd := exec.CommandContext(ctx, "ssh", "-F", f.SSHConfig, "-o", "BatchMode=yes", host, command)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ssh %s %q: %v: %s", host, command, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lockedBuffer is a bytes.Buffer that goroutines may write and read.
type lockedBuffer struct {
	buf bytes.Buffer
	lockedWriter
}

func newLockedBuffer() *lockedBuffer {
	b := &lockedBuffer{}
	b.lockedWriter.w = &b.buf
	return b
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !p.mid {
			io.WriteString(p.w, p.prefix)
		}
		p.w.Write(line)
		p.mid = line[len(line)-1] != '\n'
	}
	return len(b), nil
}
