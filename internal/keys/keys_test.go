package keys

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseColmenaDefaults: Colmena's shape with its defaults; what cannot
// be uploaded is refused naming the key.
func TestParseColmenaDefaults(t *testing.T) {
	keys, err := Parse(json.RawMessage(`{"db":{"keyCommand":["pass","db"],"user":"postgres","permissions":"0440"},"a":{"text":"x","name":"a.key","destDir":"/etc/keys","uploadAt":"post-activation"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Attr != "a" || keys[0].Path() != "/etc/keys/a.key" || keys[0].UploadAt != PostActivation || keys[0].Permissions != 0o600 ||
		keys[1].Path() != "/run/keys/db" || keys[1].User != "postgres" || keys[1].Group != "root" || keys[1].Permissions != 0o440 || keys[1].UploadAt != PreActivation {
		t.Errorf("parsed %+v", keys)
	}
	for raw, want := range map[string]string{
		`{"k":{}}`:                                  "deployment.keys.k: set exactly one of text, keyFile and keyCommand",
		`{"k":{"text":"a","keyFile":"/x"}}`:         "set exactly one",
		`{"k":{"keyFile":"/nix/store/abc-secret"}}`: "is in the Nix store",
		`{"k":{"text":"a","permissions":"rw"}}`:     `permissions "rw" is not an octal file mode`,
		`{"k":{"text":"a","uploadAt":"later"}}`:     `uploadAt "later"`,
		`{"k":{"text":"a","name":"../x"}}`:          "do not make a file path",
		`{"k":{"text":"a","user":"-oops"}}`:         `"-oops" is not a user or group name`,
		`{"k":{"text":"a","unknown":1}}`:            `unknown field "unknown"`,
	} {
		if _, err := Parse(json.RawMessage(raw)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", raw, err, want)
		}
	}
}

// TestContentStaysInMemory: a keyCommand's output is the key, and its
// failure says why, with its standard error.
func TestContentStaysInMemory(t *testing.T) {
	ctx := context.Background()
	k := Key{Attr: "k", KeyCommand: []string{"sh", "-c", "printf 's3cret'; echo 'noise' >&2"}}
	if b, err := k.Content(ctx, nil); err != nil || string(b) != "s3cret" {
		t.Errorf("keyCommand: %q, %v", b, err)
	}
	k.KeyCommand = []string{"sh", "-c", "echo 'vault: permission denied' >&2; exit 3"}
	if _, err := k.Content(ctx, nil); err == nil || !strings.Contains(err.Error(), "vault: permission denied") || !strings.Contains(err.Error(), "key k: keyCommand") {
		t.Errorf("a failing keyCommand: %v", err)
	}
	f := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(f, []byte("from a file"), 0o600)
	if b, err := (Key{Attr: "k", KeyFile: f}).Content(ctx, nil); err != nil || string(b) != "from a file" {
		t.Errorf("keyFile: %q, %v", b, err)
	}
}

// TestUploadScriptModes runs the upload script here, as the user running
// the test, with its owner: the file gets the mode, and a missing owner
// leaves it with the owner's bits only, said so.
func TestUploadScriptModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	me := strings.TrimSpace(run(t, "id", "-un"))
	group := strings.TrimSpace(run(t, "id", "-gn"))
	out := runIn(t, "the secret", "sh", "-c", uploadScript, "k", dir, "a", me, group, "0640", "0600")
	if out != "" {
		t.Errorf("the script printed %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a")); string(b) != "the secret" {
		t.Errorf("content %q", b)
	}
	if st, _ := os.Stat(filepath.Join(dir, "a")); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode())
	}
	out = runIn(t, "x", "sh", "-c", uploadScript, "k", dir, "b", "no-such-user-here", group, "0640", "0600")
	if strings.TrimSpace(out) != "owner-missing" {
		t.Errorf("a missing owner is not said: %q", out)
	}
	if st, _ := os.Stat(filepath.Join(dir, "b")); st.Mode().Perm() != 0o600 {
		t.Errorf("mode with a missing owner: %v", st.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".deployctl-key.*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// A directory another user could write to is refused: root's chown
	// and chmod could be sent through a symlink there.
	if os.Geteuid() != 0 {
		t.Skip("the unsafe-directory cases need root (to own the directories checked)")
	}
	for name, setup := range map[string]func(string) error{
		"someone else's": func(d string) error { return os.Chown(d, 65534, 65534) },
		"group-writable": func(d string) error { return os.Chmod(d, 0o775) },
	} {
		d := filepath.Join(t.TempDir(), "unsafe")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := setup(d); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", uploadScript, "k", filepath.Join(d, "sub"), "a", me, group, "0640", "0600")
		cmd.Stdin = strings.NewReader("x")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "is not root's alone") {
			t.Errorf("%s directory: %v %s", name, err, out)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runIn(t, "", name, args...)
}

func runIn(t *testing.T, stdin, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}
