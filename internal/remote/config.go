package remote

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	sshconfig "github.com/kevinburke/ssh_config"
)

// Target is a host to connect to, as the inventory describes it.
type Target struct {
	// Name is the inventory name, used in logs and errors.
	Name string
	// Host is deployment.targetHost: an ssh_config alias or an address.
	Host string
	// Port and User override the ssh config when set (0 and "").
	Port int
	User string
	// Options is deployment.sshOptions: OpenSSH command-line options
	// (-o Key=Value, -p, -l, -i, -J), applied over the ssh config.
	Options []string
	// Escalation is the argv prefix that runs a command as root when User
	// is not root (deployment.privilegeEscalationCommand).
	Escalation []string
}

// Endpoint is a Target resolved against the ssh config: everything needed to
// open the connection.
type Endpoint struct {
	Alias          string // the name as the user wrote it
	HostName       string
	Port           int
	User           string
	IdentityFiles  []string
	IdentitiesOnly bool
	// IdentitiesExplicit is set when IdentityFile came from config or
	// options, not from OpenSSH's default list.
	IdentitiesExplicit bool
	KnownHostsFiles    []string // user files first: new keys go to the first
	GlobalKnownHosts   []string
	ProxyJump          []string    // hops in order, as written
	Hops               []*Endpoint // ProxyJump resolved, in order
	StrictHostKey      string      // StrictHostKeyChecking as configured
	ConnectTimeout     time.Duration
	AliveInterval      time.Duration
	AliveCountMax      int
	// options are the Target's Options as given, for OpenSSHArgs.
	options []string
}

// Addr is host:port for dialing.
func (e *Endpoint) Addr() string {
	return joinHostPort(e.HostName, e.Port)
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// sshConfig is the ssh configuration: either the --ssh-config file alone
// (as `ssh -F`), or ~/.ssh/config then /etc/ssh/ssh_config. It is
// evaluated for each destination, as OpenSSH does, because Include and
// Match depend on the destination.
type sshConfig struct {
	sources   []configSource
	home      string
	localUser string
}

type configSource struct {
	path string
	// includeDir is where relative Include paths resolve.
	includeDir string
}

func loadSSHConfig(custom, home, localUser string) (*sshConfig, error) {
	c := &sshConfig{home: home, localUser: localUser}
	candidates := []configSource{{filepath.Join(home, ".ssh", "config"), filepath.Join(home, ".ssh")}, {"/etc/ssh/ssh_config", "/etc/ssh"}}
	if custom != "" {
		candidates = []configSource{{custom, filepath.Join(home, ".ssh")}}
	}
	for _, src := range candidates {
		if _, err := os.Stat(src.path); err != nil {
			if errors.Is(err, fs.ErrNotExist) && custom == "" {
				continue
			}
			return nil, fmt.Errorf("ssh config: %w", err)
		}
		c.sources = append(c.sources, src)
	}
	// Read everything once now, so that a broken file fails the run
	// before any host is contacted.
	if _, err := c.viewFor(matchState{alias: "*"}); err != nil {
		return nil, err
	}
	return c, nil
}

// view is the configuration as it applies to one destination.
type view struct {
	alias string
	files []*sshconfig.Config
}

// matchState is what Match criteria are judged against, as OpenSSH judges
// them: while reading the files in order.
type matchState struct {
	alias string
	// hostName and user are as set so far: by the command line (or the
	// target) first, then by the first HostName / User line that applies.
	hostName, user string
	// defaultUser is the user when nothing sets one.
	defaultUser string
}

// viewFor evaluates the configuration for one destination.
func (c *sshConfig) viewFor(st matchState) (*view, error) {
	v := &view{alias: st.alias}
	for _, src := range c.sources {
		text, err := c.flatten(src.path, src.includeDir, &st, 0)
		if err != nil {
			return nil, fmt.Errorf("ssh config: %w", err)
		}
		cfg, err := sshconfig.Decode(strings.NewReader(text))
		if err != nil {
			return nil, fmt.Errorf("ssh config %s: %w", src.path, err)
		}
		v.files = append(v.files, cfg)
	}
	return v, nil
}

// flatten reads an ssh_config file for one destination into text the
// parser understands, with OpenSSH's semantics for what it does not:
//   - Include is inlined where its enclosing block applies to the
//     destination and dropped where it does not; after it, the enclosing
//     block resumes. Relative paths resolve against includeDir.
//   - Match becomes "Host *" where its criteria hold for the destination at
//     that point of the reading, and a block that applies to nothing where
//     they do not. Criteria that cannot be judged before connecting (exec,
//     …) do not hold, so such a block is ignored.
func (c *sshConfig) flatten(path, includeDir string, st *matchState, depth int) (string, error) {
	if depth > 16 {
		return "", fmt.Errorf("%s: Include nested too deeply", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	active, header := true, "Host *"
	for _, line := range strings.Split(string(data), "\n") {
		key, rest := splitDirective(line)
		switch strings.ToLower(key) {
		case "host":
			active, header = hostMatches(splitArgs(rest), st.alias), line
			b.WriteString(line + "\n")
		case "match":
			active = c.matchHolds(splitArgs(rest), st)
			header = "Host " + neverHost
			if active {
				header = "Host *"
			}
			b.WriteString(header + "\n")
		case "include":
			if !active {
				continue
			}
			for _, pat := range splitArgs(rest) {
				pat = c.expand(pat, tokens{host: st.hostName, alias: st.alias})
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(includeDir, pat)
				}
				matches, err := filepath.Glob(pat)
				if err != nil {
					return "", fmt.Errorf("%s: Include %s: %w", path, pat, err)
				}
				sort.Strings(matches)
				for _, m := range matches {
					text, err := c.flatten(m, includeDir, st, depth+1)
					if err != nil {
						return "", err
					}
					b.WriteString(text)
				}
			}
			b.WriteString(header + "\n")
		case "hostname":
			if active && st.hostName == "" {
				st.hostName = c.expand(strings.Trim(rest, `"`), tokens{host: st.alias, alias: st.alias})
			}
			b.WriteString(line + "\n")
		case "user":
			if active && st.user == "" {
				st.user = strings.Trim(rest, `"`)
			}
			b.WriteString(line + "\n")
		default:
			b.WriteString(line + "\n")
		}
	}
	return b.String(), nil
}

// hostMatches applies a Host line's patterns to name, negations included.
func hostMatches(patterns []string, name string) bool {
	h := &sshconfig.Host{}
	for _, p := range patterns {
		for _, q := range strings.Split(p, ",") {
			if pat, err := sshconfig.NewPattern(q); err == nil && q != "" {
				h.Patterns = append(h.Patterns, pat)
			}
		}
	}
	return h.Matches(name)
}

// matchHolds judges a Match line's criteria for the destination as read
// so far.
func (c *sshConfig) matchHolds(criteria []string, st *matchState) bool {
	hostName, user := st.hostName, st.user
	if hostName == "" {
		hostName = st.alias
	}
	if user == "" {
		user = st.defaultUser
	}
	for i := 0; i < len(criteria); i++ {
		crit := strings.ToLower(criteria[i])
		negate := strings.HasPrefix(crit, "!")
		crit = strings.TrimPrefix(crit, "!")
		var holds bool
		switch crit {
		case "all", "final":
			holds = true
		case "canonical":
			// deployctl does not canonicalize host names.
			holds = false
		case "host", "originalhost", "user", "localuser":
			if i+1 >= len(criteria) {
				return false
			}
			i++
			subject := map[string]string{"host": hostName, "originalhost": st.alias, "user": user, "localuser": c.localUser}[crit]
			holds = hostMatches([]string{criteria[i]}, subject)
		default:
			// exec, tagged, localnetwork, …: unknown before connecting.
			return false
		}
		if holds == negate {
			return false
		}
	}
	return true
}

// splitDirective splits a config line into its keyword and the rest
// ("Key Value", "Key=Value", "Key = Value").
func splitDirective(line string) (key, rest string) {
	line = strings.TrimSpace(line)
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return line, ""
	}
	rest = strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimPrefix(rest, "=")
	return line[:i], strings.TrimSpace(rest)
}

// splitArgs splits a directive's arguments on white space, keeping
// double-quoted arguments whole.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case (r == ' ' || r == '\t') && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// neverHost is a Host pattern that matches no host name.
const neverHost = "deployctl-unsupported-match.invalid"

// get returns the first value for key among the option overrides, then the
// config files; "" when none sets it.
func (v *view) get(over map[string][]string, key string) string {
	if vals := over[strings.ToLower(key)]; len(vals) > 0 {
		return vals[0]
	}
	for _, f := range v.files {
		if val, err := f.Get(v.alias, key); err == nil && val != "" {
			return val
		}
	}
	return ""
}

// getAll returns every value for key, as for IdentityFile, which
// accumulates: the overrides first, then every matching line of every file.
func (v *view) getAll(over map[string][]string, key string) []string {
	vals := append([]string{}, over[strings.ToLower(key)]...)
	for _, f := range v.files {
		if more, err := f.GetAll(v.alias, key); err == nil {
			vals = append(vals, more...)
		}
	}
	return vals
}

// parseOptions reads OpenSSH command-line options into ssh_config keys.
func parseOptions(args []string) (map[string][]string, error) {
	over := map[string][]string{}
	add := func(k, v string) { k = strings.ToLower(k); over[k] = append(over[k], v) }
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			return nil, fmt.Errorf("sshOptions: unsupported argument %q (supported: -o Key=Value, -p, -l, -i, -J)", a)
		}
		flag, val := a[:2], a[2:]
		if val == "" && strings.Contains("opliJ", a[1:2]) {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("sshOptions: %s needs a value", a)
			}
			i++
			val = args[i]
		}
		switch flag {
		case "-o":
			k, v, ok := strings.Cut(val, "=")
			if !ok {
				k, v, ok = strings.Cut(strings.TrimSpace(val), " ")
			}
			if !ok || k == "" {
				return nil, fmt.Errorf("sshOptions: -o %q is not Key=Value", val)
			}
			add(strings.TrimSpace(k), strings.TrimSpace(v))
		case "-p":
			add("Port", val)
		case "-l":
			add("User", val)
		case "-i":
			add("IdentityFile", val)
		case "-J":
			add("ProxyJump", val)
		default:
			return nil, fmt.Errorf("sshOptions: unsupported option %q (supported: -o Key=Value, -p, -l, -i, -J)", a)
		}
	}
	return over, nil
}

// resolve applies options, then the target's own port and user, then the
// ssh config, then defaults, and resolves the ProxyJump hops the same way.
func (c *sshConfig) resolve(t Target) (*Endpoint, error) {
	return c.resolveEndpoint(t, nil)
}

// resolveHop resolves one ProxyJump element, "[user@]host[:port]"; chain
// holds the destinations that lead to it, to refuse loops.
func (c *sshConfig) resolveHop(hop string, chain []string) (*Endpoint, error) {
	t := Target{}
	if u, h, ok := strings.Cut(hop, "@"); ok {
		t.User, hop = u, h
	}
	if h, p, err := net.SplitHostPort(hop); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("%q is not a TCP port", p)
		}
		t.Host, t.Port = h, n
	} else {
		t.Host = hop
	}
	for _, seen := range chain {
		if seen == t.Host {
			return nil, fmt.Errorf("ProxyJump loop: %s → %s (set ProxyJump none for the jump host)", strings.Join(chain, " → "), t.Host)
		}
	}
	return c.resolveEndpoint(t, chain)
}

// resolveEndpoint resolves a target (chain nil) or a jump host (chain: the
// destinations that lead to it). As in Colmena, a target's user defaults
// to root; as in OpenSSH, a jump host's to the local user.
func (c *sshConfig) resolveEndpoint(t Target, chain []string) (*Endpoint, error) {
	if t.Host == "" {
		return nil, fmt.Errorf("no target host")
	}
	if strings.HasPrefix(t.Host, "-") {
		return nil, fmt.Errorf("target host %q may not begin with '-'", t.Host)
	}
	over, err := parseOptions(t.Options)
	if err != nil {
		return nil, err
	}
	alias := t.Host
	st := matchState{alias: alias, defaultUser: "root"}
	if chain != nil && c.localUser != "" {
		st.defaultUser = c.localUser
	}
	if len(over["hostname"]) > 0 {
		st.hostName = over["hostname"][0]
	}
	switch {
	case len(over["user"]) > 0:
		st.user = over["user"][0]
	case t.User != "":
		st.user = t.User
	}
	v, err := c.viewFor(st)
	if err != nil {
		return nil, err
	}
	get := func(key string) string { return v.get(over, key) }
	e := &Endpoint{Alias: alias, options: t.Options}

	e.HostName = c.expand(get("HostName"), tokens{host: alias, alias: alias})
	if e.HostName == "" {
		e.HostName = alias
	}
	e.Port = 22
	portStr := ""
	switch {
	case len(over["port"]) > 0:
		portStr = over["port"][0]
	case t.Port != 0:
		e.Port = t.Port
	default:
		portStr = v.get(nil, "Port")
	}
	if portStr != "" {
		n, err := strconv.Atoi(portStr)
		if err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("ssh config: Port %q is not a TCP port", portStr)
		}
		e.Port = n
	}
	switch {
	case len(over["user"]) > 0:
		e.User = over["user"][0]
	case t.User != "":
		e.User = t.User
	case get("User") != "":
		e.User = get("User")
	case chain != nil && c.localUser != "":
		e.User = c.localUser
	default:
		e.User = "root"
	}

	ids := v.getAll(over, "IdentityFile")
	e.IdentitiesExplicit = len(ids) > 0
	if !e.IdentitiesExplicit {
		for _, n := range []string{"id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk"} {
			ids = append(ids, filepath.Join(c.home, ".ssh", n))
		}
	}
	tok := tokens{host: e.HostName, alias: alias, user: e.User, port: e.Port}
	for _, id := range ids {
		// One file per IdentityFile line, possibly quoted.
		if len(id) >= 2 && id[0] == '"' && id[len(id)-1] == '"' {
			id = id[1 : len(id)-1]
		}
		e.IdentityFiles = append(e.IdentityFiles, c.expand(id, tok))
	}
	e.IdentitiesOnly = strings.EqualFold(get("IdentitiesOnly"), "yes")

	if v := get("UserKnownHostsFile"); v != "" {
		for _, f := range splitArgs(v) {
			e.KnownHostsFiles = append(e.KnownHostsFiles, c.expand(f, tok))
		}
	} else {
		e.KnownHostsFiles = []string{filepath.Join(c.home, ".ssh", "known_hosts"), filepath.Join(c.home, ".ssh", "known_hosts2")}
	}
	if v := get("GlobalKnownHostsFile"); v != "" {
		for _, f := range splitArgs(v) {
			e.GlobalKnownHosts = append(e.GlobalKnownHosts, c.expand(f, tok))
		}
	} else {
		e.GlobalKnownHosts = []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}
	}
	if v := get("ProxyJump"); v != "" && !strings.EqualFold(v, "none") {
		for _, hop := range strings.Split(v, ",") {
			if hop = strings.TrimSpace(hop); hop != "" {
				hep, err := c.resolveHop(hop, append(append([]string{}, chain...), alias))
				if err != nil {
					return nil, fmt.Errorf("ProxyJump %s: %w", hop, err)
				}
				// A jump host reached through its own jump hosts: those
				// come first, in one flat chain.
				e.ProxyJump = append(append(e.ProxyJump, hep.ProxyJump...), hop)
				e.Hops = append(append(e.Hops, hep.Hops...), hep)
				hep.ProxyJump, hep.Hops = nil, nil
			}
		}
	}
	if v := get("ProxyCommand"); v != "" && !strings.EqualFold(v, "none") {
		return nil, fmt.Errorf("ProxyCommand is not supported by deployctl's SSH client (use ProxyJump): %s", v)
	}
	e.StrictHostKey = strings.ToLower(get("StrictHostKeyChecking"))
	e.ConnectTimeout = 10 * time.Second
	if v := get("ConnectTimeout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("ssh config: ConnectTimeout %q is not a number of seconds", v)
		}
		e.ConnectTimeout = time.Duration(n) * time.Second
	}
	// OpenSSH sends no keepalives unless asked; a deploy tool must notice a
	// dead host, so deployctl defaults to 15 s × 3.
	e.AliveInterval, e.AliveCountMax = 15*time.Second, 3
	if v := get("ServerAliveInterval"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("ssh config: ServerAliveInterval %q is not a number of seconds", v)
		}
		e.AliveInterval = time.Duration(n) * time.Second
	}
	if v := get("ServerAliveCountMax"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("ssh config: ServerAliveCountMax %q is not a positive number", v)
		}
		e.AliveCountMax = n
	}
	return e, nil
}

// tokens are the values of OpenSSH's % tokens for one connection.
type tokens struct {
	host  string // %h: the HostName
	alias string // %n: the name as given
	user  string // %r: the remote user
	port  int    // %p
}

// expand expands a leading ~ and the tokens %% %d %h %n %p %r %u, as
// OpenSSH does in IdentityFile, UserKnownHostsFile, Include and HostName.
func (c *sshConfig) expand(s string, t tokens) string {
	if strings.HasPrefix(s, "~/") || s == "~" {
		s = c.home + s[1:]
	}
	if !strings.Contains(s, "%") {
		return s
	}
	port := ""
	if t.port != 0 {
		port = strconv.Itoa(t.port)
	}
	return strings.NewReplacer("%%", "%", "%d", c.home, "%h", t.host, "%n", t.alias,
		"%p", port, "%r", t.user, "%u", c.localUser).Replace(s)
}

// OpenSSHArgs returns the arguments that make OpenSSH's ssh connect the same
// way, up to but not including the destination: -F when a config file was
// given, the target's options, and port and user when deployctl decided them.
func (e *Endpoint) OpenSSHArgs(configFile string) []string {
	var args []string
	if configFile != "" {
		args = append(args, "-F", configFile)
	}
	args = append(args, e.options...)
	// Always the port deployctl connected to, so that OpenSSH cannot pick
	// another one from the config.
	return append(args, "-p", strconv.Itoa(e.Port))
}

// Destination is user@alias, as OpenSSH and Nix's ssh:// store URLs take it.
func (e *Endpoint) Destination() string {
	return e.User + "@" + e.Alias
}
