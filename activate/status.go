package activate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// HostStatus is what a host runs and what deployctl last did there.
type HostStatus struct {
	// Running is /run/current-system, Booted /run/booted-system, Profile
	// the system profile's store path and Generation its number: "" or 0
	// when missing.
	Running    string `json:"running"`
	Booted     string `json:"booted"`
	Profile    string `json:"profile"`
	Generation int    `json:"generation,omitempty"`
	// RebootRequired says the running system's kernel, initrd or kernel
	// modules are not the booted ones.
	RebootRequired bool `json:"rebootRequired"`
	// Lock is the lock's holder while a deploy holds it.
	Lock *Holder `json:"lock"`
	// LastDeploy is the journal's last line.
	LastDeploy *JournalEntry `json:"lastDeploy"`
}

// statusScript prints a host's state as "key value" lines (printf, not
// echo: dash's echo would turn a journal line's \n into a line break).
const statusScript = `printf 'running %s\n' "$(readlink /run/current-system)"
printf 'booted %s\n' "$(readlink /run/booted-system)"
p=` + SystemProfile + `
if [ -e "$p" ]; then printf 'profile %s\nprofile-link %s\n' "$(readlink -f "$p")" "$(readlink "$p")"; fi
if [ -e /run/current-system ] && [ -e /run/booted-system ]; then
  for f in kernel initrd kernel-modules; do
    [ "$(readlink -f /run/booted-system/$f)" = "$(readlink -f /run/current-system/$f)" ] || echo "reboot $f"
  done
fi
l=` + Dir + `/lock
if [ -s "$l" ] && ! flock -n "$l" true; then printf 'lock %s\n' "$(cat "$l")"; fi
[ ! -s ` + Journal + ` ] || printf 'journal %s\n' "$(tail -n 1 ` + Journal + `)"
`

// Status reads a host's state: running, booted and profile systems, the
// lock's holder, the last journal line.
func Status(ctx context.Context, t Target) (*HostStatus, error) {
	var out bytes.Buffer
	cmd := statusStep.Cmd()
	cmd.Stdout = &out
	if err := t.Run(ctx, cmd); err != nil {
		return nil, fmt.Errorf("read the host's state: %w", err)
	}
	st := &HostStatus{}
	lines := bufio.NewScanner(&out)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		key, val, _ := strings.Cut(lines.Text(), " ")
		switch key {
		case "running":
			st.Running = val
		case "booted":
			st.Booted = val
		case "profile":
			st.Profile = val
		case "profile-link":
			// system-42-link
			if n, ok := strings.CutSuffix(strings.TrimPrefix(val, "system-"), "-link"); ok {
				st.Generation, _ = strconv.Atoi(n)
			}
		case "reboot":
			st.RebootRequired = true
		case "lock":
			var h Holder
			if err := json.Unmarshal([]byte(val), &h); err != nil {
				h = Holder{User: "unknown", Machine: strings.TrimSpace(val)}
			}
			st.Lock = &h
		case "journal":
			var e JournalEntry
			if err := json.Unmarshal([]byte(val), &e); err != nil {
				return nil, fmt.Errorf("the journal's last line %q: %w", val, err)
			}
			st.LastDeploy = &e
		}
	}
	return st, nil
}
