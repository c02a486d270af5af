package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// rootsDir caches the systemd hosts' root filesystems between runs.
const rootsDir = "/var/cache/deployctl-fleet"

// SystemdReleases are the Debian releases a systemd host can run, and the
// Nix each brings.
var SystemdReleases = map[string]string{"bookworm": "2.8", "trixie": "2.26"}

// SystemdPrerequisites reports what this machine lacks to run systemd
// hosts, or nil.
func SystemdPrerequisites() error {
	var missing []string
	for _, bin := range []string{"debootstrap", "systemd-nspawn"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run scripts/setup.sh as root", strings.Join(missing, ", "))
	}
	return nil
}

// rootScript is scripts/systemd-root.sh, found beside this source file
// (the fleet is test code, run from the repository).
func rootScript() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate scripts/systemd-root.sh")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "systemd-root.sh"), nil
}

// EnsureRoot returns the root filesystem for release, building it (about
// a minute, from a Debian mirror) when the cache lacks it. The cache is
// keyed by the release and the build script's content, so a changed
// script builds a new root.
func EnsureRoot(ctx context.Context, release string, log io.Writer) (string, error) {
	if _, ok := SystemdReleases[release]; !ok {
		return "", fmt.Errorf("no systemd host release %q", release)
	}
	script, err := rootScript()
	if err != nil {
		return "", err
	}
	content, err := os.ReadFile(script)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(content)
	dir := filepath.Join(rootsDir, release+"-"+hex.EncodeToString(sum[:4]))
	ready := func() bool { _, err := os.Stat(filepath.Join(dir, "usr", "bin", "nix-store")); return err == nil }
	if ready() {
		return dir, nil
	}
	if err := os.MkdirAll(rootsDir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(rootsDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if ready() {
		return dir, nil
	}
	// A build that died (killed with its test) left its work directory,
	// maybe with /proc mounted in it.
	stale, _ := filepath.Glob(filepath.Join(rootsDir, "*.tmp.*"))
	for _, d := range stale {
		_ = exec.Command("umount", filepath.Join(d, "proc")).Run()
		_ = os.RemoveAll(d)
	}
	var out strings.Builder
	cmd := exec.CommandContext(ctx, "bash", script, release, dir)
	// Cancelled, the whole build goes (debootstrap included), not only
	// the script.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var w io.Writer = &out
	if log != nil {
		w = io.MultiWriter(&out, log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		tail := out.String()
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return "", fmt.Errorf("build the %s root (scripts/systemd-root.sh): %w\n%s", release, err, tail)
	}
	return dir, nil
}

// prepareSystemd makes the host's root an overlay over the shared one,
// with its own host key, sshd listening on its address, and the fleet's
// key for root.
func (h *Host) prepareSystemd(ctx context.Context, root, authorizedKey string) error {
	upper, work := filepath.Join(h.Root, "upper"), filepath.Join(h.Root, "work")
	h.merged = filepath.Join(h.Root, "merged")
	for _, d := range []string{upper, work, h.merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", root, upper, work)
	if out, err := exec.CommandContext(ctx, "mount", "-t", "overlay", "overlay", "-o", opts, h.merged).CombinedOutput(); err != nil {
		return fmt.Errorf("mount the overlay: %v: %s", err, out)
	}
	hostKey := filepath.Join(h.merged, "etc", "ssh", "ssh_host_ed25519_key")
	if err := h.hostKey(ctx, hostKey); err != nil {
		return err
	}
	conf := fmt.Sprintf("ListenAddress %s:22\nHostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"+
		"PasswordAuthentication no\nKbdInteractiveAuthentication no\nMaxStartups 200\nUseDNS no\n", h.Addr)
	if err := os.WriteFile(filepath.Join(h.merged, "etc", "ssh", "sshd_config.d", "fleet.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	auth, err := os.ReadFile(authorizedKey)
	if err != nil {
		return err
	}
	sshDir := filepath.Join(h.merged, "root", ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(sshDir, "authorized_keys"), auth, 0o600)
}

// startSystemd boots the host's root with systemd as its PID 1
// (systemd-nspawn, sharing this machine's network).
func (h *Host) startSystemd(log io.Writer) error {
	cmd := exec.Command("systemd-nspawn", "--keep-unit", "--register=no", "--machine="+h.Name, "-D", h.merged, "-b", "--console=pipe")
	h.stderr = newLockedBuffer()
	var w io.Writer = h.stderr
	if log != nil {
		w = io.MultiWriter(h.stderr, &prefixWriter{w: log, prefix: "[" + h.Name + " boot] "})
	}
	cmd.Stdout, cmd.Stderr = w, w
	// If this process dies, nspawn powers the container off (SIGTERM).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("systemd-nspawn: %w", err)
	}
	h.cmd = cmd
	h.exited = make(chan struct{})
	go func() { cmd.Wait(); close(h.exited) }()
	return nil
}

// stopSystemd powers the container off (SIGRTMIN+4 to its systemd),
// kills it if it does not go within 20 s, and unmounts its root.
func (h *Host) stopSystemd() {
	if init, err := h.initPID(); err == nil {
		_ = syscall.Kill(init, syscall.Signal(34+4)) // SIGRTMIN+4: poweroff
	}
	select {
	case <-h.exited:
	case <-time.After(20 * time.Second):
		if init, err := h.initPID(); err == nil {
			_ = syscall.Kill(init, syscall.SIGKILL)
		}
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.exited
	}
	if out, err := exec.Command("umount", h.merged).CombinedOutput(); err != nil {
		_ = exec.Command("umount", "-l", h.merged).Run()
		_ = out
	}
}
