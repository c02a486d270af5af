// Package keys uploads a host's secrets (deployment.keys, Colmena's shape):
// read on the deploying machine into memory, streamed over the host's SSH
// session into a file that is never wider than its final mode.
package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/shell"
)

// When a key goes up.
const (
	PreActivation  = "pre-activation"
	PostActivation = "post-activation"
)

// Key is one deployment.keys entry, its defaults applied.
type Key struct {
	// Attr is the attribute name; Name the file's name (default Attr).
	Attr, Name string
	// Exactly one of Text, KeyFile and KeyCommand is set.
	Text       *string
	KeyFile    string
	KeyCommand []string
	DestDir    string
	User       string
	Group      string
	// Permissions is the file's mode.
	Permissions os.FileMode
	UploadAt    string
}

// Path is where the key goes on the host.
func (k Key) Path() string { return path.Join(k.DestDir, k.Name) }

// spec is a key as Nix gives it.
type spec struct {
	Text        *string  `json:"text"`
	KeyFile     *string  `json:"keyFile"`
	KeyCommand  []string `json:"keyCommand"`
	DestDir     *string  `json:"destDir"`
	Name        *string  `json:"name"`
	User        *string  `json:"user"`
	Group       *string  `json:"group"`
	Permissions *string  `json:"permissions"`
	UploadAt    *string  `json:"uploadAt"`
}

// Parse reads deployment.keys (nil or null: none) with Colmena's defaults
// (destDir /run/keys, user and group root, permissions 0600,
// pre-activation), sorted by name, and rejects what cannot be uploaded.
func Parse(raw json.RawMessage) ([]Key, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var specs map[string]json.RawMessage
	if err := json.Unmarshal(raw, &specs); err != nil {
		return nil, fmt.Errorf("deployment.keys: expected an attribute set of keys: %w", err)
	}
	var keys []Key
	var errs []error
	for attr, rawSpec := range specs {
		where := "deployment.keys." + attr
		var s spec
		dec := json.NewDecoder(bytes.NewReader(rawSpec))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		or := func(p *string, def string) string {
			if p == nil {
				return def
			}
			return *p
		}
		k := Key{Attr: attr, Name: or(s.Name, attr), Text: s.Text, KeyFile: or(s.KeyFile, ""), KeyCommand: s.KeyCommand,
			DestDir: or(s.DestDir, "/run/keys"), User: or(s.User, "root"), Group: or(s.Group, "root"), UploadAt: or(s.UploadAt, PreActivation)}
		sources := 0
		for _, set := range []bool{s.Text != nil, k.KeyFile != "", len(k.KeyCommand) > 0} {
			if set {
				sources++
			}
		}
		if sources != 1 {
			errs = append(errs, fmt.Errorf("%s: set exactly one of text, keyFile and keyCommand", where))
		}
		if strings.HasPrefix(k.KeyFile, "/nix/store/") {
			errs = append(errs, fmt.Errorf("%s: keyFile %s is in the Nix store, readable by anyone: give the path as a string (\"/path\"), not a Nix path", where, k.KeyFile))
		}
		mode, err := strconv.ParseUint(or(s.Permissions, "0600"), 8, 32)
		if err != nil || mode > 0o777 {
			errs = append(errs, fmt.Errorf("%s: permissions %q is not an octal file mode", where, or(s.Permissions, "")))
		}
		k.Permissions = os.FileMode(mode)
		if k.UploadAt != PreActivation && k.UploadAt != PostActivation {
			errs = append(errs, fmt.Errorf("%s: uploadAt %q: want %q or %q", where, k.UploadAt, PreActivation, PostActivation))
		}
		if !path.IsAbs(k.DestDir) || k.Name == "" || strings.Contains(k.Name, "/") || k.Name == "." || k.Name == ".." {
			errs = append(errs, fmt.Errorf("%s: destDir %q and name %q do not make a file path", where, k.DestDir, k.Name))
		}
		for _, id := range []string{k.User, k.Group} {
			if id == "" || strings.ContainsAny(id, " \t:/\n") || strings.HasPrefix(id, "-") {
				errs = append(errs, fmt.Errorf("%s: %q is not a user or group name", where, id))
			}
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Attr < keys[j].Attr })
	return keys, errors.Join(errs...)
}

// Content reads the key on this machine, into memory only: the text, the
// file, or what the command prints (its standard error, when it fails,
// goes into the error).
func (k Key) Content(ctx context.Context, env []string) ([]byte, error) {
	switch {
	case k.Text != nil:
		return []byte(*k.Text), nil
	case k.KeyFile != "":
		b, err := os.ReadFile(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key %s: keyFile: %w", k.Attr, err)
		}
		return b, nil
	}
	cmd := exec.CommandContext(ctx, k.KeyCommand[0], k.KeyCommand[1:]...)
	cmd.Env = env
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("key %s: keyCommand %s: %w: %s", k.Attr, shell.Join(k.KeyCommand), err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// Target runs commands on the host; *remote.Conn is one.
type Target interface {
	Run(ctx context.Context, cmd remote.Cmd) error
}

// uploadScript ($1 dir, $2 name, $3 user, $4 group, $5 mode, $6 its
// owner's part; the content
// on standard input) writes the key to a temporary file in the directory,
// root's and 0600 while it is written, then gives it its owner with no
// permissions at all, then its mode (so that no one but its owner, its
// group and root can ever read it), and renames it into place. An owner
// that does not exist yet leaves it root's with only its owner's bits, and
// says so.
const uploadScript = checkKeyArgs + `check_name "$2"; check_owner "$3"; check_owner "$4"; check_mode "$5"; check_mode "$6"
umask 077
d=$1; f=$1/$2
[ -d "$d" ] || { mkdir -p "$d" && chmod 0711 "$d"; } || exit 1
` + safeDirFn + `safe_dir "$d" || exit 1
[ ! -L "$f" ] && [ ! -d "$f" ] || { echo "$f is a symlink or a directory" >&2; exit 1; }
t=$(mktemp "$d/.deployctl-key.XXXXXX") || exit 1
trap 'rm -f "$t"' EXIT
cat > "$t" || exit 1
if id -u "$3" >/dev/null 2>&1 && getent group "$4" >/dev/null 2>&1; then
  chmod 0000 "$t" && chown -h "$3:$4" "$t" && chmod "$5" "$t" || exit 1
else
  chmod "$6" "$t" || exit 1
  echo "owner-missing"
fi
mv -fT "$t" "$f" && trap - EXIT
`

// checkKeyArgs defines the checks of the keys' steps' arguments, each
// ending the step (exit 64) when its argument is not: a file name (no
// "/", not . or ..), a user or group name (not empty, no ":" or "/" or
// blank, not starting with "-"), or a mode of four octal digits.
const checkKeyArgs = `bad() { echo "$1" >&2; exit 64; }
check_name() { case $1 in ''|.|..|*/*) bad "not a key file name: $1" ;; esac; }
check_owner() { case $1 in ''|-*|*[:/\ \	]*) bad "not a user or group name: $1" ;; esac; }
check_mode() { case $1 in [0-7][0-7][0-7][0-7]) ;; *) bad "not a mode: $1" ;; esac; }
`

// safeDirFn checks that directory $1 and every directory above it are
// root's and writable by no one else (a sticky one, such as /tmp, may be:
// no one can rename root's entries there): then no other user can swap a
// file in it for a symlink between the steps root does on it.
const safeDirFn = `safe_dir() {
  p=$(readlink -f "$1")
  while :; do
    if [ "$(stat -c %u "$p")" != 0 ] || [ -n "$(find "$p" -maxdepth 0 -perm /022 ! -perm -1000 2>/dev/null)" ]; then
      echo "$p is not root's alone (owner $(stat -c %U "$p"), mode $(stat -c %a "$p")): a key cannot safely go under it" >&2
      return 1
    fi
    [ "$p" != / ] || return 0
    p=$(dirname "$p")
  done
}
`

// reownScript ($1 path, $2 user, $3 group, $4 mode) gives an uploaded key
// its owner, which must exist, and then its mode.
const reownScript = checkKeyArgs + safeDirFn + `check_name "${1##*/}"; check_owner "$2"; check_owner "$3"; check_mode "$4"
safe_dir "$(dirname "$1")" || exit 1
[ -f "$1" ] && [ ! -L "$1" ] || { echo "$1 is not a plain file" >&2; exit 1; }
id -u "$2" >/dev/null 2>&1 || { echo "user $2 does not exist" >&2; exit 1; }
getent group "$3" >/dev/null 2>&1 || { echo "group $3 does not exist" >&2; exit 1; }
chmod 0000 "$1" && chown -h "$2:$3" "$1" && chmod "$4" "$1"`

// The keys' steps on the host.
var (
	uploadStep = &remote.Step{Name: "key-upload", Body: uploadScript}
	reownStep  = &remote.Step{Name: "key-reown", Body: reownScript}
)

// Steps are the keys' steps, for deployctl-remote.
func Steps() []*remote.Step { return []*remote.Step{uploadStep, reownStep} }

// UploadCmd is the command (run as root on the host) that writes the
// key's content, given on its standard input, to its path there.
func (k Key) UploadCmd() remote.Cmd {
	mode := fmt.Sprintf("%04o", k.Permissions)
	return uploadStep.Cmd(k.DestDir, k.Name, k.User, k.Group, mode, fmt.Sprintf("%04o", k.Permissions&0o700))
}

// Producer is a shell line that prints the key's content on this machine,
// as Content reads it, without the content itself: the command, or cat of
// the file; a text key is read from textAttr, its flake attribute, with
// nix eval.
func (k Key) Producer(textAttr string) string {
	switch {
	case k.Text != nil:
		return shell.Join(nix.NixArgs("eval", "--raw", textAttr))
	case k.KeyFile != "":
		return shell.Join([]string{"cat", "--", k.KeyFile})
	}
	return shell.Join(k.KeyCommand)
}

// Upload writes content to the key's path on the host. ownerMissing says
// the user or group does not exist there (yet): the file is root's.
func Upload(ctx context.Context, t Target, k Key, content []byte) (ownerMissing bool, err error) {
	var out bytes.Buffer
	cmd := k.UploadCmd()
	cmd.Stdin, cmd.Stdout = bytes.NewReader(content), &out
	err = t.Run(ctx, cmd)
	if err != nil {
		return false, fmt.Errorf("key %s: upload to %s: %w", k.Attr, k.Path(), err)
	}
	return strings.TrimSpace(out.String()) == "owner-missing", nil
}

// ReownCmd is the command (run as root on the host) that gives the
// uploaded key its owner, which must exist, and then its mode.
func (k Key) ReownCmd() remote.Cmd {
	return reownStep.Cmd(k.Path(), k.User, k.Group, fmt.Sprintf("%04o", k.Permissions))
}

// Reown gives an uploaded key its owner, which must exist now, and then
// its mode.
func Reown(ctx context.Context, t Target, k Key) error {
	cmd := k.ReownCmd()
	cmd.Stdout = io.Discard
	err := t.Run(ctx, cmd)
	if err != nil {
		return fmt.Errorf("key %s: give %s to %s:%s: %w", k.Attr, k.Path(), k.User, k.Group, err)
	}
	return nil
}
