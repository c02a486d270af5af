package inventory

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func hosts(t *testing.T, specs map[string]string) []*Host {
	t.Helper()
	var out []*Host
	for _, name := range []string{"db-1", "db-2", "web-1", "web-2", "web-10", "builder"} {
		d, ok := specs[name]
		if !ok {
			continue
		}
		h, err := Decode(name, json.RawMessage(d))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

func names(hs []*Host) string {
	var n []string
	for _, h := range hs {
		n = append(n, h.Name)
	}
	return strings.Join(n, ",")
}

func TestSelect(t *testing.T) {
	hs := hosts(t, map[string]string{
		"db-1":    `{"tags":["db","eu"]}`,
		"db-2":    `{"tags":["db","us"]}`,
		"web-1":   `{"tags":["web","edge-eu"]}`,
		"web-2":   `{"tags":["web","edge-us"]}`,
		"web-10":  `{}`,
		"builder": `{"targetHost":null,"tags":["infra"]}`,
	})
	for _, tc := range []struct {
		args []string
		all  bool
		want string
	}{
		{[]string{"db-1"}, false, "db-1"},
		{[]string{"web-*"}, false, "web-1,web-2,web-10"},
		{[]string{"web-?"}, false, "web-1,web-2"},
		{[]string{"web-[12]"}, false, "web-1,web-2"},
		{[]string{"web-[!1]"}, false, "web-2"},
		{[]string{"@db"}, false, "db-1,db-2"},
		{[]string{"@edge-*"}, false, "web-1,web-2"},
		{[]string{"@eu", "web-10", "db-1"}, false, "db-1,web-10"},
		{[]string{"@*eu"}, false, "db-1,web-1"},
		{[]string{"builder"}, false, "builder"},
		{nil, true, "db-1,db-2,web-1,web-2,web-10"}, // deployable only
	} {
		sels, err := ParseSelectors(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		got, err := Select(hs, sels, tc.all, true)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if names(got) != tc.want {
			t.Errorf("Select(%v, all=%v) = %s, want %s", tc.args, tc.all, names(got), tc.want)
		}
	}
}

func TestSelectAll(t *testing.T) {
	hs := hosts(t, map[string]string{"web-1": `{}`, "builder": `{"targetHost":null}`})
	if got, _ := Select(hs, nil, true, false); names(got) != "web-1,builder" {
		t.Errorf("--all for build = %s, want build-only hosts too", names(got))
	}
	only := hosts(t, map[string]string{"builder": `{"targetHost":null}`})
	if _, err := Select(only, nil, true, true); err == nil || !strings.Contains(err.Error(), "no deployable hosts") {
		t.Errorf("--all with nothing deployable = %v", err)
	}
}

func TestDefaultsAreNotShared(t *testing.T) {
	// Decoding one host's list must not write into another's default.
	a, err := Decode("a", json.RawMessage(`{"privilegeEscalationCommand":["doas"]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Decode("b", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode("c", json.RawMessage(`{"privilegeEscalationCommand":["run0"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.PrivilegeEscalationCommand, " ") != "doas" || strings.Join(b.PrivilegeEscalationCommand, " ") != "sudo -H --" ||
		strings.Join(c.PrivilegeEscalationCommand, " ") != "run0" || strings.Join(DefaultPrivilegeEscalation, " ") != "sudo -H --" {
		t.Errorf("escalation commands leaked between hosts: a=%v b=%v c=%v default=%v",
			a.PrivilegeEscalationCommand, b.PrivilegeEscalationCommand, c.PrivilegeEscalationCommand, DefaultPrivilegeEscalation)
	}
}

func TestSelectNoMatchSuggests(t *testing.T) {
	hs := hosts(t, map[string]string{"web-1": `{"tags":["web"]}`, "web-2": `{}`, "db-1": `{}`})
	for arg, want := range map[string]string{
		"web-3": `no host matches "web-3" (did you mean web-1, web-2?)`,
		"@wbe":  `no tag matches "@wbe" (did you mean @web?)`,
		"zzz*":  `no host matches "zzz*"`,
	} {
		sels, err := ParseSelectors([]string{arg})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Select(hs, sels, false, true)
		if err == nil || err.Error() != want {
			t.Errorf("Select(%s) error = %v, want %s", arg, err, want)
		}
	}
}

func TestParseSelectorsRejects(t *testing.T) {
	for _, bad := range []string{"-oProxyCommand=x", "@", "web[", `a\b*`, "@-x"} {
		if _, err := ParseSelectors([]string{bad}); err == nil {
			t.Errorf("ParseSelectors(%q) accepted it", bad)
		}
	}
}

func TestNonASCII(t *testing.T) {
	sels, err := ParseSelectors([]string{"café", "@été"})
	if err != nil {
		t.Fatal(err)
	}
	if !sels[0].matches(&Host{Name: "café"}) || !sels[1].matches(&Host{Name: "x", Tags: []string{"été"}}) {
		t.Error("exact non-ASCII names and tags must select")
	}
	q, err := ParseSelectors([]string{"caf?", "caf??"})
	if err != nil {
		t.Fatalf("an ASCII glob was refused: %v", err)
	}
	// As in Nix, "?" is one byte: "é" is two.
	if q[0].matches(&Host{Name: "café"}) || !q[1].matches(&Host{Name: "café"}) {
		t.Error("globs must match bytes, as Nix's builtins.match does")
	}
	if _, err := ParseSelectors([]string{"caf*é"}); err == nil || !strings.Contains(err.Error(), "must be ASCII") {
		t.Errorf("a non-ASCII glob = %v, want a refusal", err)
	}
}

func TestGlobRegexEscapesPunctuation(t *testing.T) {
	sels, err := ParseSelectors([]string{"a.b+c*"})
	if err != nil {
		t.Fatal(err)
	}
	h := &Host{Name: "a.b+cd"}
	if !sels[0].matches(h) {
		t.Errorf("%s does not match itself (regex %s)", h.Name, sels[0].Regex)
	}
	if sels[0].matches(&Host{Name: "aXb+cd"}) {
		t.Errorf("'.' in a glob matched any character (regex %s)", sels[0].Regex)
	}
}

func TestDecodeHostDefaults(t *testing.T) {
	h, err := Decode("h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.TargetHost != "h1" || h.TargetUser != "root" || h.TargetPort != 0 || !h.Deployable() ||
		strings.Join(h.PrivilegeEscalationCommand, " ") != "sudo -H --" || h.ConfirmTimeout != 30*time.Second || h.AllowLocalDeployment {
		t.Errorf("defaults wrong: %+v", h)
	}
	h, err = Decode("h2", json.RawMessage(`{"targetHost":null,"targetUser":null,"targetPort":2222,"healthChecks":{"cmd":[]},"keys":{},"confirmTimeout":2.5,"allowLocalDeployment":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if h.Deployable() || h.TargetUser != "" || h.TargetPort != 2222 || h.ConfirmTimeout != 3*time.Second || !h.AllowLocalDeployment {
		t.Errorf("explicit values wrong: %+v", h)
	}
	if h, err := Decode("h3", json.RawMessage(`{"confirmTimeout":0}`)); err != nil || h.ConfirmTimeout != 0 {
		t.Errorf("confirmTimeout 0 (disarmed): %+v, %v", h, err)
	}
	if _, ok := h.Extra["healthChecks"]; !ok {
		t.Errorf("unknown option healthChecks was dropped: %v", h.Extra)
	}
}

func TestDecodeHostTypeErrorsNameHostAndOption(t *testing.T) {
	for raw, want := range map[string]string{
		`{"targetPort":"22"}`:                 `web-1: deployment.targetPort: expected an integer, got "22"`,
		`{"confirmTimeout":-1}`:               `web-1: deployment.confirmTimeout: -1 is not a number of seconds`,
		`{"allowLocalDeployment":"yes"}`:      `web-1: deployment.allowLocalDeployment: expected a boolean, got "yes"`,
		`{"tags":"web"}`:                      `web-1: deployment.tags: expected a list of strings, got "web"`,
		`{"buildOnTarget":1}`:                 `web-1: deployment.buildOnTarget: expected a boolean, got 1`,
		`{"targetHost":"-oProxyCommand=x"}`:   `web-1: deployment.targetHost: "-oProxyCommand=x" is not a host name`,
		`{"privilegeEscalationCommand":null}`: `web-1: deployment.privilegeEscalationCommand: expected a list of strings, got null`,
		`{"targetHost":""}`:                   `web-1: deployment.targetHost is "" (use null to make the host build-only)`,
		`[1]`:                                 `web-1: deployment: expected an attribute set, got [1]`,
		`{"buildHost":""}`:                    `web-1: deployment.buildHost: "" is not a host name (use null to build locally)`,
		`{"buildHost":"-oProxyCommand=x"}`:    `web-1: deployment.buildHost: "-oProxyCommand=x" is not a host name (use null to build locally)`,
		`{"buildHost":true}`:                  `web-1: deployment.buildHost: expected a string, got true`,
	} {
		_, err := Decode("web-1", json.RawMessage(raw))
		if err == nil || err.Error() != want {
			t.Errorf("Decode(%s) error = %v, want %s", raw, err, want)
		}
	}
}
