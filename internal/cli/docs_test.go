package cli

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
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

// TestDocsLinksResolve: every relative link in README.md and docs/ names
// a file that exists, and an #anchor a heading in it.
func TestDocsLinksResolve(t *testing.T) {
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	linkRe := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	checked := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRe.FindAllStringSubmatch(string(text), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := f
			if path != "" {
				file = filepath.Join(filepath.Dir(f), path)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Errorf("%s links to %s: %v", filepath.Base(f), target, err)
				continue
			}
			if anchor != "" && !slices.Contains(anchors(string(data)), anchor) {
				t.Errorf("%s links to %s: no such heading in %s", filepath.Base(f), target, filepath.Base(file))
			}
			checked++
		}
	}
	if checked < 20 {
		t.Errorf("only %d links checked", checked)
	}
}

// anchors are the ids GitHub gives a Markdown file's headings.
func anchors(md string) []string {
	var out []string
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// TestPhaseDocsNameRealOptions: the options each phase's page says it
// reads are options the module declares (docs/options.md, generated from
// it, an option or a group of them); a name after the first of a cell is
// its sibling
// (`deployment.hooks.preBuild`, `postBuild`).
func TestPhaseDocsNameRealOptions(t *testing.T) {
	ref, err := os.ReadFile("../../docs/options.md")
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^## `(deployment\\.[^`]+)`").FindAllStringSubmatch(string(ref), -1) {
		declared[m[1]] = true
	}
	nameRe := regexp.MustCompile("`([a-zA-Z.]+)`")
	checked := 0
	for _, page := range []string{"build", "push", "activate"} {
		text, err := os.ReadFile("../../docs/" + page + ".md")
		if err != nil {
			t.Fatal(err)
		}
		_, section, ok := strings.Cut(string(text), "## Options it reads\n")
		if !ok {
			t.Errorf("docs/%s.md has no section \"Options it reads\"", page)
			continue
		}
		section, _, _ = strings.Cut(section, "\n## ")
		for _, line := range strings.Split(section, "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[1]) == "option" {
				continue
			}
			parent := ""
			for _, m := range nameRe.FindAllStringSubmatch(cells[1], -1) {
				name := m[1]
				if strings.HasPrefix(name, "deployment.") {
					parent = name[:strings.LastIndexByte(name, '.')]
				} else {
					name = parent + "." + name
				}
				group := slices.ContainsFunc(slices.Collect(maps.Keys(declared)), func(d string) bool { return strings.HasPrefix(d, name+".") })
				if !declared[name] && !group {
					t.Errorf("docs/%s.md reads %s, which the module does not declare", page, name)
				}
				checked++
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d option names checked", checked)
	}
}
