// Package remote runs commands on deploy targets over in-process SSH
// connections: ssh_config, known_hosts, agent and key authentication,
// ProxyJump, keepalives, quoting and privilege escalation.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// Options configure a Dialer.
type Options struct {
	// ConfigFile replaces ~/.ssh/config and /etc/ssh/ssh_config when set.
	ConfigFile string
	// Home is the user's home directory, for ~ and the default files.
	Home string
	// LocalUser is the local user name, for the %u token.
	LocalUser string
	// AgentSocket is SSH_AUTH_SOCK; "" disables the agent.
	AgentSocket string
	// AcceptNewHostKeys records the key of a host that known_hosts does
	// not know yet. A changed key is refused regardless.
	AcceptNewHostKeys bool
	// SudoPassword, when set, is given to sudo on the hosts that ask for
	// it (on standard input, never in argv).
	SudoPassword string
	Log          *slog.Logger
}

// Dialer opens SSH connections to targets.
type Dialer struct {
	opts   Options
	config *sshConfig
	log    *slog.Logger
	// knownMu serialises appends to known_hosts files.
	knownMu sync.Mutex
}

// NewDialer reads the ssh configuration.
func NewDialer(opts Options) (*Dialer, error) {
	cfg, err := loadSSHConfig(opts.ConfigFile, opts.Home, opts.LocalUser)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Dialer{opts: opts, config: cfg, log: log}, nil
}

// Resolve applies the ssh configuration to t.
func (d *Dialer) Resolve(t Target) (*Endpoint, error) {
	return d.config.resolve(t)
}

// HostKeyError is a host key that known_hosts does not accept.
type HostKeyError struct {
	Addr        string
	Fingerprint string
	KeyType     string
	Changed     bool
	// Known lists where the expected keys are recorded, for a changed key.
	Known []string
	// KnownFile is the file holding the first expected key.
	KnownFile string
	Files     []string
}

func (e *HostKeyError) Error() string {
	if e.Changed {
		return fmt.Sprintf("host key of %s has CHANGED: it offered %s %s, but known_hosts records another (%s). "+
			"Someone may be intercepting the connection, or the host was reinstalled. deployctl refuses to connect; "+
			"if the change is expected, remove the old entry (ssh-keygen -f %s -R %s) and check the new fingerprint",
			e.Addr, e.KeyType, e.Fingerprint, strings.Join(e.Known, ", "), e.KnownFile, knownhosts.Normalize(e.Addr))
	}
	return fmt.Sprintf("host key of %s is unknown: it offered %s %s, which is not in %s. "+
		"Check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then run again with --accept-new-host-keys to record it",
		e.Addr, e.KeyType, e.Fingerprint, strings.Join(e.Files, " or "))
}

// Unconnected is a Conn to t that never connects: it gives the command
// lines that reach t as a connection would (CommandLine, AsRoot,
// Endpoint), for a person to run; running anything on it fails.
func (d *Dialer) Unconnected(t Target) (*Conn, error) {
	ep, err := d.Resolve(t)
	if err != nil {
		return nil, err
	}
	return &Conn{name: t.Name, ep: ep, escalation: t.Escalation, configFile: d.opts.ConfigFile, log: d.log, sessions: make(chan struct{}, MaxSessions)}, nil
}

// errNotConnected is running a command on an Unconnected Conn.
var errNotConnected = errors.New("not connected (a Conn for command lines only)")

// Dial connects to t, through its ProxyJump hops if any, verifying each
// hop's host key.
func (d *Dialer) Dial(ctx context.Context, t Target) (*Conn, error) {
	ep, err := d.Resolve(t)
	if err != nil {
		return nil, err
	}
	var hops []*ssh.Client
	closeHops := func() {
		for i := len(hops) - 1; i >= 0; i-- {
			hops[i].Close()
		}
	}
	var via *ssh.Client
	for i, hep := range ep.Hops {
		c, err := d.connect(ctx, hep, via)
		if err != nil {
			closeHops()
			return nil, fmt.Errorf("ProxyJump %s: %w", ep.ProxyJump[i], err)
		}
		hops = append(hops, c)
		via = c
	}
	client, err := d.connect(ctx, ep, via)
	if err != nil {
		closeHops()
		return nil, err
	}
	return &Conn{name: t.Name, client: client, hops: hops, ep: ep, escalation: t.Escalation, configFile: d.opts.ConfigFile, log: d.log, sessions: make(chan struct{}, MaxSessions), password: d.opts.SudoPassword}, nil
}

// connect opens one SSH connection to ep, directly or through via.
func (d *Dialer) connect(ctx context.Context, ep *Endpoint, via *ssh.Client) (*ssh.Client, error) {
	addr := ep.Addr()
	hostKeyCallback, algos, err := d.hostKeyCheck(ep)
	if err != nil {
		return nil, err
	}
	auth, closeAuth := d.authMethods(ep)
	defer closeAuth()
	cfg := &ssh.ClientConfig{
		User:              ep.User,
		Auth:              auth,
		HostKeyCallback:   hostKeyCallback,
		HostKeyAlgorithms: algos,
		Timeout:           ep.ConnectTimeout,
	}
	dialCtx, cancel := context.WithTimeout(ctx, ep.ConnectTimeout)
	defer cancel()
	var conn net.Conn
	if via == nil {
		conn, err = (&net.Dialer{}).DialContext(dialCtx, "tcp", addr)
	} else {
		conn, err = via.DialContext(dialCtx, "tcp", addr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	// ClientConfig.Timeout covers only the TCP connect: bound the handshake
	// (banner, key exchange, authentication) by ConnectTimeout as well, as
	// OpenSSH does, and abandon it when ctx ends.
	// A timer that closes the connection works for direct connections and
	// for channels through a ProxyJump hop alike (those have no deadlines).
	handshakeTimeout := ep.ConnectTimeout
	var timedOut atomic.Bool
	timer := time.AfterFunc(handshakeTimeout, func() { timedOut.Store(true); conn.Close() })
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	timer.Stop()
	stop()
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if timedOut.Load() {
			return nil, fmt.Errorf("ssh handshake with %s: no answer within %s", addr, handshakeTimeout)
		}
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		return nil, fmt.Errorf("ssh to %s@%s: %w", ep.User, addr, err)
	}
	if timedOut.Load() {
		c.Close()
		return nil, fmt.Errorf("ssh handshake with %s: no answer within %s", addr, handshakeTimeout)
	}
	client := ssh.NewClient(c, chans, reqs)
	if ep.AliveInterval > 0 {
		go keepAlive(client, ep.AliveInterval, ep.AliveCountMax)
	}
	return client, nil
}

// keepAlive sends keepalive@openssh.com requests and closes the connection
// after count unanswered intervals, so that a dead host fails the commands
// waiting on it instead of hanging them.
func keepAlive(c *ssh.Client, interval time.Duration, count int) {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t := time.NewTicker(interval)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		select {
		case err := <-answered:
			if err != nil {
				c.Close()
				return
			}
			missed = 0
		case <-time.After(interval):
			missed++
			if missed >= count {
				c.Close()
				return
			}
		case <-done:
			return
		}
	}
}

// hostKeyCheck builds the known_hosts verification for ep and the host key
// algorithms to offer (those known_hosts records for it, so the server does
// not answer with a key type we cannot check: golang/go#29286).
func (d *Dialer) hostKeyCheck(ep *Endpoint) (ssh.HostKeyCallback, []string, error) {
	var files []string
	for _, f := range append(append([]string{}, ep.KnownHostsFiles...), ep.GlobalKnownHosts...) {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("known_hosts: %w", err)
		}
	}
	var db *knownhosts.HostKeyDB
	if len(files) > 0 {
		var err error
		db, err = knownhosts.NewDB(files...)
		if err != nil {
			return nil, nil, fmt.Errorf("known_hosts: %w", err)
		}
	}
	var algos []string
	if db != nil {
		algos = db.HostKeyAlgorithms(ep.Addr())
	}
	accept := d.opts.AcceptNewHostKeys || ep.StrictHostKey == "accept-new"
	cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		var err error
		if db != nil {
			err = db.HostKeyCallback()(hostname, remote, key)
		} else {
			err = &unknownHostError{}
		}
		if err == nil {
			return nil
		}
		hk := &HostKeyError{Addr: hostname, Fingerprint: ssh.FingerprintSHA256(key), KeyType: key.Type(), Files: ep.KnownHostsFiles}
		switch {
		case knownhosts.IsHostKeyChanged(err):
			hk.Changed = true
			hk.Known, hk.KnownFile = changedLocations(err)
			return hk
		case knownhosts.IsHostUnknown(err) || errors.Is(err, errUnknownHost):
			if !accept {
				return hk
			}
			if err := d.recordHostKey(ep.KnownHostsFiles[0], hostname, remote, key); err != nil {
				return fmt.Errorf("recording host key of %s: %w", hostname, err)
			}
			d.log.Warn("recorded new host key", "host", ep.Alias, "addr", hostname, "key", key.Type()+" "+hk.Fingerprint, "file", ep.KnownHostsFiles[0])
			return nil
		default:
			return err
		}
	}
	return cb, algos, nil
}

var errUnknownHost = errors.New("host not in known_hosts")

type unknownHostError struct{}

func (*unknownHostError) Error() string { return errUnknownHost.Error() }
func (*unknownHostError) Is(t error) bool {
	return t == errUnknownHost
}

// changedLocations lists where known_hosts records the expected keys, and
// the first such file.
func changedLocations(err error) (locations []string, file string) {
	var keyErr *xknownhosts.KeyError
	if errors.As(err, &keyErr) {
		for _, w := range keyErr.Want {
			locations = append(locations, fmt.Sprintf("%s:%d %s", w.Filename, w.Line, w.Key.Type()))
		}
		if len(keyErr.Want) > 0 {
			file = keyErr.Want[0].Filename
		}
	}
	return locations, file
}

func (d *Dialer) recordHostKey(file, hostname string, remote net.Addr, key ssh.PublicKey) error {
	d.knownMu.Lock()
	defer d.knownMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := knownhosts.WriteKnownHost(f, hostname, remote, key); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// authMethods offers the agent's keys (when SSH_AUTH_SOCK is set) and the
// identity files', as OpenSSH does; with IdentitiesOnly, only the agent keys
// that match an identity file.
func (d *Dialer) authMethods(ep *Endpoint) ([]ssh.AuthMethod, func()) {
	var fileSigners []ssh.Signer
	var filePubs []ssh.PublicKey
	for _, f := range ep.IdentityFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			if ep.IdentitiesExplicit && !errors.Is(err, fs.ErrNotExist) {
				d.log.Warn("cannot read identity file", "host", ep.Alias, "file", f, "err", err)
			}
			if pub := readPublicKey(f + ".pub"); pub != nil {
				filePubs = append(filePubs, pub)
			}
			continue
		}
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			var pm *ssh.PassphraseMissingError
			if errors.As(err, &pm) && pm.PublicKey != nil {
				filePubs = append(filePubs, pm.PublicKey)
				d.log.Debug("identity file is encrypted: only the agent can use it", "host", ep.Alias, "file", f)
			} else {
				d.log.Warn("cannot parse identity file", "host", ep.Alias, "file", f, "err", err)
			}
			continue
		}
		fileSigners = append(fileSigners, s)
		filePubs = append(filePubs, s.PublicKey())
	}
	var agentSigners []ssh.Signer
	closer := func() {}
	if d.opts.AgentSocket != "" {
		if c, err := net.Dial("unix", d.opts.AgentSocket); err == nil {
			closer = func() { c.Close() }
			if ss, err := agent.NewClient(c).Signers(); err == nil {
				agentSigners = ss
			}
		} else {
			d.log.Debug("ssh agent unreachable", "socket", d.opts.AgentSocket, "err", err)
		}
	}
	if ep.IdentitiesOnly {
		var kept []ssh.Signer
		for _, s := range agentSigners {
			for _, p := range filePubs {
				if string(s.PublicKey().Marshal()) == string(p.Marshal()) {
					kept = append(kept, s)
					break
				}
			}
		}
		agentSigners = kept
	}
	signers := append(agentSigners, fileSigners...)
	return []ssh.AuthMethod{ssh.PublicKeys(signers...)}, closer
}

func readPublicKey(path string) ssh.PublicKey {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil
	}
	return pub
}
