package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestMigratingDocNamesRealFlags: every flag and command the deployctl
// column of docs/migrating.md names exists.
func TestMigratingDocNamesRealFlags(t *testing.T) {
	doc, err := os.ReadFile("../../docs/migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	root := newRootCommand(&globals{})
	flagRe := regexp.MustCompile("(?:^|[ `/])(--[a-z][a-z-]*|-[a-z])\\b")
	cmdRe := regexp.MustCompile("`deployctl ([a-z-]+)")
	checked := 0
	for _, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		ours := cells[2]
		for _, m := range cmdRe.FindAllStringSubmatch(ours, -1) {
			if c, _, err := root.Find([]string{m[1]}); err != nil || c == root {
				t.Errorf("docs/migrating.md names a command deployctl lacks: %s", m[1])
			}
			checked++
		}
		for _, m := range flagRe.FindAllStringSubmatch(ours, -1) {
			name := strings.TrimLeft(m[1], "-")
			found := root.PersistentFlags().Lookup(name) != nil || len(name) == 1 && root.PersistentFlags().ShorthandLookup(name) != nil
			for _, c := range root.Commands() {
				if c.Flags().Lookup(name) != nil || (len(name) == 1 && c.Flags().ShorthandLookup(name) != nil) {
					found = true
				}
			}
			if !found {
				t.Errorf("docs/migrating.md names a flag no command has: %s", m[1])
			}
			checked++
		}
	}
	if checked < 20 {
		t.Errorf("only %d names checked: the test reads the tables wrong", checked)
	}
}
