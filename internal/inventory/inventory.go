// Package inventory reads the hosts of a flake's nixosConfigurations and
// their deployment options in one Nix evaluation, and selects among them.
package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/deployctl/deployctl/internal/nix"
)

// The defaults of the deployment options, when a configuration sets
// nothing (nixmodule declares the same; its test compares them):
// targetHost the attribute name, targetPort unset (the SSH config, else
// 22), targetUser root, tags none, buildOnTarget false, buildHost none,
// privilegeEscalationCommand DefaultPrivilegeEscalation, sshOptions none,
// confirmTimeout DefaultConfirmTimeout, allowLocalDeployment false,
// healthChecks none.
var (
	// DefaultPrivilegeEscalation is deployment.privilegeEscalationCommand's
	// default, as in Colmena.
	DefaultPrivilegeEscalation = []string{"sudo", "-H", "--"}
	// DefaultConfirmTimeout is deployment.confirmTimeout's default, as in
	// deploy-rs.
	DefaultConfirmTimeout = 30 * time.Second
)

// Host is one nixosConfigurations entry with its deployment options, the
// defaults applied.
type Host struct {
	Name string
	// TargetHost is the SSH destination; "" when deployment.targetHost is
	// null, which makes the host build-only.
	TargetHost string
	// TargetPort is 0 when unset: the SSH config decides, else 22.
	TargetPort int
	// TargetUser is "" when set to null: the SSH config decides, else root.
	TargetUser    string
	Tags          []string
	BuildOnTarget bool
	// BuildHost is the machine to build on: a host of the flake or an SSH
	// destination; "" builds locally (or on the target, with BuildOnTarget).
	BuildHost                  string
	PrivilegeEscalationCommand []string
	SSHOptions                 []string
	// ConfirmTimeout is how long the host's dead-man's switch waits for a
	// check-in after a switch; 0 disarms it.
	ConfirmTimeout time.Duration
	// AllowLocalDeployment lets deploy --local deploy the host on the
	// machine deployctl runs on.
	AllowLocalDeployment bool
	// Extra holds the deployment options this phase does not read
	// (healthChecks, keys, …), as Nix gave them.
	Extra map[string]json.RawMessage
	// Deployment is config.deployment as Nix gave it, for the manifest.
	Deployment json.RawMessage

	// DrvPath and OutPath are the toplevel's, set only for selected hosts.
	DrvPath, OutPath string
	// EvalError is the toplevel's evaluation error, for a selected host.
	EvalError string
}

// OptionError is a deployment option the flake sets wrongly.
type OptionError struct{ err error }

func (e *OptionError) Error() string { return e.err.Error() }
func (e *OptionError) Unwrap() error { return e.err }

// Deployable reports whether the host has a target to deploy to.
func (h *Host) Deployable() bool { return h.TargetHost != "" }

// Inventory is every host of the flake, and the ones selected.
type Inventory struct {
	FlakeRef string
	Hosts    []*Host
	Selected []*Host
	// Broken are hosts whose config.deployment does not evaluate: left out
	// of Hosts, so a tag cannot select them.
	Broken []*BrokenHost
}

// BrokenHost is a host whose deployment options do not evaluate.
type BrokenHost struct {
	Name string
	Err  string
}

// brokenSelected reports whether a name selector (not a tag: a broken
// host has no known tags) picks name.
func brokenSelected(name string, sels []Selector) bool {
	for _, s := range sels {
		if !s.Tag && s.match(name) {
			return true
		}
	}
	return false
}

// evalDeploymentError evaluates one host's deployment options alone, only
// to get Nix's error message.
func evalDeploymentError(ctx context.Context, n *nix.CLI, flakeRef, host string) string {
	apply := fmt.Sprintf("cs: builtins.deepSeq cs.${%s}.config.deployment null", nix.Quote(host))
	if _, err := n.Nix(ctx, "eval", "--json", flakeRef+"#nixosConfigurations", "--apply", apply); err != nil {
		return err.Error()
	}
	return "it failed in the combined evaluation"
}

// LoadOptions says which hosts to select and whether their toplevels are
// needed. With no selectors and All unset, nothing is selected.
type LoadOptions struct {
	Selectors []Selector
	// All selects every host; with DeployableOnly, every deployable one.
	All            bool
	DeployableOnly bool
	// Toplevel evaluates config.system.build.toplevel of the selected hosts.
	Toplevel bool
}

// Load evaluates the flake once: every host's deployment options and, when
// asked, the selected hosts' toplevel derivations.
func Load(ctx context.Context, n *nix.CLI, flakeRef string, opts LoadOptions) (*Inventory, error) {
	raw, err := evaluate(ctx, n, flakeRef, opts, opts.Toplevel, nil)
	perHost := false
	broken := map[string]string{}
	if err != nil && ctx.Err() == nil {
		// builtins.tryEval catches throw and assert, not a missing
		// attribute or a type error: one such error in any host fails the
		// whole evaluation. Evaluate the options alone (bisecting over the
		// hosts if they are where it lies), then the selected toplevels in
		// halves, so that only the broken hosts fail.
		raw2, err2 := evaluate(ctx, n, flakeRef, opts, false, nil)
		if err2 != nil && ctx.Err() == nil {
			if names, err3 := HostNames(ctx, n, flakeRef); err3 == nil {
				raw2, err2 = map[string]evaluated{}, nil
				if err3 = bisectOptions(ctx, n, flakeRef, opts, names, raw2, broken); err3 != nil {
					err2 = err3
				}
			}
		}
		if err2 == nil {
			raw, err, perHost = raw2, nil, opts.Toplevel
		}
	}
	if err != nil {
		return nil, err
	}
	inv := &Inventory{FlakeRef: flakeRef}
	var errs []error
	for name, msg := range broken {
		inv.Broken = append(inv.Broken, &BrokenHost{Name: name, Err: msg})
	}
	for name, r := range raw {
		if r.DeploymentFailed {
			inv.Broken = append(inv.Broken, &BrokenHost{Name: name, Err: evalDeploymentError(ctx, n, flakeRef, name)})
			continue
		}
		h, err := Decode(name, r.Deployment)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h.DrvPath, h.OutPath = r.DrvPath, r.OutPath
		if r.Failed {
			h.EvalError = caughtEvalError
		}
		inv.Hosts = append(inv.Hosts, h)
	}
	if len(errs) > 0 {
		return nil, &OptionError{errors.Join(errs...)}
	}
	sort.Slice(inv.Hosts, func(i, j int) bool { return inv.Hosts[i].Name < inv.Hosts[j].Name })
	sort.Slice(inv.Broken, func(i, j int) bool { return inv.Broken[i].Name < inv.Broken[j].Name })
	// A broken host that the selection would include fails the run before
	// anything is done; --all includes every one.
	var named []string
	for _, b := range inv.Broken {
		if opts.All || brokenSelected(b.Name, opts.Selectors) {
			named = append(named, fmt.Sprintf("%s: config.deployment does not evaluate: %s", b.Name, b.Err))
		}
	}
	if len(named) > 0 {
		return nil, &OptionError{errors.New(strings.Join(named, "\n"))}
	}
	if len(opts.Selectors) > 0 || opts.All {
		inv.Selected, err = Select(inv.Hosts, opts.Selectors, opts.All, opts.DeployableOnly)
		if err != nil {
			return nil, err
		}
	}
	if opts.Toplevel {
		if perHost {
			if err := bisect(ctx, n, flakeRef, inv.Selected); err != nil {
				return nil, err
			}
		}
		if err := explain(ctx, n, flakeRef, inv.Selected); err != nil {
			return nil, err
		}
	}
	return inv, nil
}

// Toplevels evaluates the toplevel derivations of hosts (loaded without
// them) in one evaluation, or in halves when an error escapes tryEval: it
// sets each host's DrvPath and OutPath, or its EvalError.
func Toplevels(ctx context.Context, n *nix.CLI, flakeRef string, hosts []*Host) error {
	if err := bisect(ctx, n, flakeRef, hosts); err != nil {
		return err
	}
	return explain(ctx, n, flakeRef, hosts)
}

// explain replaces a caught evaluation failure with Nix's own message.
func explain(ctx context.Context, n *nix.CLI, flakeRef string, hosts []*Host) error {
	for _, h := range hosts {
		switch {
		case h.EvalError == caughtEvalError:
			// Alone, Nix says what is wrong.
			h.DrvPath, h.OutPath, h.EvalError = evalToplevel(ctx, n, flakeRef, h.Name)
		case h.EvalError == "" && h.DrvPath == "":
			return fmt.Errorf("%s: internal error: selected in Go but not by the evaluation", h.Name)
		}
	}
	return ctx.Err()
}

// HostNames lists the flake's nixosConfigurations without evaluating them.
func HostNames(ctx context.Context, n *nix.CLI, flakeRef string) ([]string, error) {
	out, err := n.Nix(ctx, "eval", "--json", flakeRef+"#nixosConfigurations", "--apply", "builtins.attrNames")
	if err != nil {
		return nil, err
	}
	var names []string
	return names, json.Unmarshal(out, &names)
}

// bisectOptions evaluates the deployment options of names in halves, down
// to the hosts whose options fail alone (recorded in broken, with Nix's
// message); the rest go into raw.
func bisectOptions(ctx context.Context, n *nix.CLI, flakeRef string, opts LoadOptions, names []string, raw map[string]evaluated, broken map[string]string) error {
	if len(names) == 0 {
		return nil
	}
	got, err := evaluate(ctx, n, flakeRef, opts, false, names)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil:
		for k, v := range got {
			raw[k] = v
		}
		return nil
	case len(names) == 1:
		var ne *nix.Error
		if !errors.As(err, &ne) {
			return err
		}
		broken[names[0]] = ne.Error()
		return nil
	}
	half := len(names) / 2
	if err := bisectOptions(ctx, n, flakeRef, opts, names[:half], raw, broken); err != nil {
		return err
	}
	return bisectOptions(ctx, n, flakeRef, opts, names[half:], raw, broken)
}

// bisect evaluates the toplevels of hosts when evaluating them together
// failed in a way tryEval cannot catch: in halves, each in one evaluation,
// down to the hosts that fail alone. One broken host among n costs about
// 2·log2(n) evaluations, not n.
func bisect(ctx context.Context, n *nix.CLI, flakeRef string, hosts []*Host) error {
	if len(hosts) == 0 {
		return nil
	}
	sels := make([]Selector, len(hosts))
	for i, h := range hosts {
		sels[i] = Selector{Raw: h.Name, Literal: true}
	}
	raw, err := evaluate(ctx, n, flakeRef, LoadOptions{Selectors: sels}, true, hostNamesOf(hosts))
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil:
		for _, h := range hosts {
			r := raw[h.Name]
			h.DrvPath, h.OutPath = r.DrvPath, r.OutPath
			if r.Failed {
				h.EvalError = caughtEvalError
			}
		}
		return nil
	case len(hosts) == 1:
		h := hosts[0]
		h.DrvPath, h.OutPath = "", ""
		h.EvalError = err.Error()
		var ne *nix.Error
		if errors.As(err, &ne) {
			h.EvalError = ne.Error()
		}
		return nil
	}
	half := len(hosts) / 2
	if err := bisect(ctx, n, flakeRef, hosts[:half]); err != nil {
		return err
	}
	return bisect(ctx, n, flakeRef, hosts[half:])
}

// caughtEvalError marks a toplevel whose evaluation tryEval caught: Nix's
// own message is fetched afterwards.
const caughtEvalError = "evaluation of config.system.build.toplevel failed"

type evaluated struct {
	Deployment       json.RawMessage `json:"deployment"`
	DeploymentFailed bool            `json:"deploymentFailed"`
	DrvPath          string          `json:"drvPath"`
	OutPath          string          `json:"toplevel"`
	Failed           bool            `json:"failed"`
}

func hostNamesOf(hosts []*Host) []string {
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = h.Name
	}
	return out
}

// evaluate runs the one nix eval over nixosConfigurations, or over the
// hosts named in only (nil: all).
func evaluate(ctx context.Context, n *nix.CLI, flakeRef string, opts LoadOptions, toplevel bool, only []string) (map[string]evaluated, error) {
	type sel struct {
		Tag bool    `json:"tag"`
		Re  string  `json:"re"`
		Lit *string `json:"lit"`
	}
	sels := make([]sel, len(opts.Selectors))
	for i, s := range opts.Selectors {
		sels[i] = sel{Tag: s.Tag, Re: s.Regex}
		if s.Literal {
			lit := s.Raw
			if s.Tag {
				lit = s.Raw[1:]
			}
			sels[i].Lit = &lit
		}
	}
	arg, err := json.Marshal(map[string]any{"all": opts.All, "deployableOnly": opts.DeployableOnly, "sels": sels, "toplevel": toplevel, "only": only})
	if err != nil {
		return nil, err
	}
	// One line, so that the command -v prints stays readable.
	expr := strings.Join(strings.Fields(evalExpr), " ")
	apply := fmt.Sprintf("let args = builtins.fromJSON %s; in %s", nix.Quote(string(arg)), expr)
	out, err := n.Nix(ctx, "eval", "--json", flakeRef+"#nixosConfigurations", "--apply", apply)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("evaluate %s: %w", flakeRef, err)
	}
	var raw map[string]evaluated
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("evaluate %s: reading nix eval output: %w", flakeRef, err)
	}
	return raw, nil
}

// evalExpr maps nixosConfigurations to { deployment; drvPath; toplevel; failed; }
// (not "outPath": nix eval --json prints a set that has one as that string).
// The deployment set is made JSON-safe without copying anything into the
// store: paths become strings (a key file given as a path must not be copied
// into the world-readable store), derivations their outPath, functions null.
// A deployment block that does not evaluate (a throw, an undeclared
// option) marks only its host (deploymentFailed), and its toplevel is not
// evaluated. The expression must hold no comments: it is sent as one line.
// Selection is repeated here (args.sels: the literal names and the same
// regexes Go uses) so that only the selected hosts' toplevels are evaluated.
const evalExpr = `configs:
  let
    clean = v:
      if builtins.isPath v then toString v
      else if builtins.isFunction v then null
      else if builtins.isList v then map clean v
      else if builtins.isAttrs v then
        (if v ? outPath then toString v.outPath else builtins.mapAttrs (_: clean) v)
      else v;
    strings = l: if builtins.isList l then builtins.filter builtins.isString l else [ ];
    matches = s: v: if s.lit != null then v == s.lit else builtins.match s.re v != null;
    selected = name: d:
      if args.all then !(args.deployableOnly && d ? targetHost && d.targetHost == null)
      else builtins.any (s:
        if s.tag then builtins.any (matches s) (strings (d.tags or [ ]))
        else matches s name) args.sels;
    restricted = if args.only == null then configs
      else builtins.intersectAttrs (builtins.listToAttrs (map (n: { name = n; value = null; }) args.only)) configs;
  in builtins.mapAttrs (name: c:
    let
      dt = builtins.tryEval (let v = clean (c.config.deployment or { }); in builtins.deepSeq v v);
      d = if dt.success then dt.value else { };
      top = c.config.system.build.toplevel;
      drv = builtins.tryEval top.drvPath;
      want = args.toplevel && dt.success && selected name d;
    in { deployment = if dt.success then d else null; deploymentFailed = !dt.success; }
      // (if !want then { }
          else if drv.success then { drvPath = drv.value; toplevel = top.outPath; }
          else { failed = true; })
  ) restricted`

// evalToplevel evaluates one host's toplevel alone: its derivation and
// output paths, or Nix's own error message.
func evalToplevel(ctx context.Context, n *nix.CLI, flakeRef, host string) (drv, out, evalErr string) {
	// The host is picked inside the expression: any attribute name works
	// there, while a URL fragment refuses some.
	apply := fmt.Sprintf("cs: let t = cs.${%s}.config.system.build.toplevel; in { drv = t.drvPath; out = t.outPath; }", nix.Quote(host))
	res, err := n.Nix(ctx, "eval", "--json", flakeRef+"#nixosConfigurations", "--apply", apply)
	if err != nil {
		return "", "", err.Error()
	}
	var v struct{ Drv, Out string }
	if err := json.Unmarshal(res, &v); err != nil || v.Drv == "" {
		return "", "", fmt.Sprintf("reading nix eval output %q: %v", res, err)
	}
	return v.Drv, v.Out, ""
}

// Decode reads one host's config.deployment (nil or null: all defaults),
// checking each option's type.
func Decode(name string, raw json.RawMessage) (*Host, error) {
	if len(raw) == 0 {
		raw = json.RawMessage("null")
	}
	h := &Host{
		Name:                       name,
		Deployment:                 raw,
		TargetHost:                 name,
		TargetUser:                 "root",
		PrivilegeEscalationCommand: slices.Clone(DefaultPrivilegeEscalation),
		ConfirmTimeout:             DefaultConfirmTimeout,
		Extra:                      map[string]json.RawMessage{},
	}
	var fields map[string]json.RawMessage
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, &OptionError{fmt.Errorf("%s: deployment: expected an attribute set, got %s", name, abbrev(raw))}
		}
	}
	var errs []error
	opt := func(key string, dst any, nullable bool, fn func()) {
		v, ok := fields[key]
		if !ok {
			return
		}
		delete(fields, key)
		if string(v) == "null" {
			if nullable && fn != nil {
				fn()
			}
			if !nullable {
				errs = append(errs, fmt.Errorf("%s: deployment.%s: expected %s, got null", name, key, typeName(dst)))
			}
			return
		}
		if err := json.Unmarshal(v, dst); err != nil {
			errs = append(errs, fmt.Errorf("%s: deployment.%s: expected %s, got %s", name, key, typeName(dst), abbrev(v)))
		}
	}
	var port int
	emptyTarget := string(fields["targetHost"]) == `""`
	emptyBuildHost := string(fields["buildHost"]) == `""`
	opt("targetHost", &h.TargetHost, true, func() { h.TargetHost = "" })
	opt("targetPort", &port, true, nil)
	opt("targetUser", &h.TargetUser, true, func() { h.TargetUser = "" })
	opt("tags", &h.Tags, false, nil)
	opt("buildOnTarget", &h.BuildOnTarget, false, nil)
	opt("buildHost", &h.BuildHost, true, nil)
	opt("privilegeEscalationCommand", &h.PrivilegeEscalationCommand, false, nil)
	opt("sshOptions", &h.SSHOptions, false, nil)
	opt("allowLocalDeployment", &h.AllowLocalDeployment, false, nil)
	confirm := math.NaN()
	opt("confirmTimeout", &confirm, true, nil)
	switch {
	case math.IsNaN(confirm):
	case confirm < 0:
		errs = append(errs, fmt.Errorf("%s: deployment.confirmTimeout: %g is not a number of seconds", name, confirm))
	default:
		// Whole seconds, rounded up: the host's watchdog counts in them.
		h.ConfirmTimeout = time.Duration(math.Ceil(confirm)) * time.Second
	}
	h.TargetPort = port
	if port < 0 || port > 65535 {
		errs = append(errs, fmt.Errorf("%s: deployment.targetPort: %d is not a TCP port", name, port))
	}
	if emptyTarget {
		errs = append(errs, fmt.Errorf(`%s: deployment.targetHost is "" (use null to make the host build-only)`, name))
	} else if strings.HasPrefix(h.TargetHost, "-") || strings.ContainsAny(h.TargetHost, " \t\n") {
		errs = append(errs, fmt.Errorf("%s: deployment.targetHost: %q is not a host name", name, h.TargetHost))
	}
	if strings.HasPrefix(h.BuildHost, "-") || strings.ContainsAny(h.BuildHost, " \t\n") || emptyBuildHost {
		errs = append(errs, fmt.Errorf("%s: deployment.buildHost: %q is not a host name (use null to build locally)", name, h.BuildHost))
	}
	if strings.HasPrefix(h.TargetUser, "-") || strings.ContainsAny(h.TargetUser, " \t\n@") {
		errs = append(errs, fmt.Errorf("%s: deployment.targetUser: %q is not a user name", name, h.TargetUser))
	}
	for k, v := range fields {
		h.Extra[k] = v
	}
	if len(errs) > 0 {
		return nil, &OptionError{errors.Join(errs...)}
	}
	return h, nil
}

func typeName(dst any) string {
	switch dst.(type) {
	case *string:
		return "a string"
	case *int:
		return "an integer"
	case *bool:
		return "a boolean"
	case *float64:
		return "a number"
	case *[]string:
		return "a list of strings"
	}
	return fmt.Sprintf("%T", dst)
}

func abbrev(v json.RawMessage) string {
	s := string(v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}
