package inventory

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Selector is one positional argument: a host name, a shell glob over host
// names ("web-*"), or a tag or tag glob ("@db", "@edge-*").
type Selector struct {
	Raw string
	Tag bool
	// Literal is a selector without glob characters: it is compared as a
	// string, so any host name can be selected exactly.
	Literal bool
	// Regex is a POSIX extended / RE2 expression (the common subset) that
	// matches the whole name or tag. Nix's builtins.match and Go's regexp
	// read it the same way.
	Regex string
	re    *regexp.Regexp
}

// ParseSelectors parses the positional arguments of a command.
func ParseSelectors(args []string) ([]Selector, error) {
	sels := make([]Selector, 0, len(args))
	for _, a := range args {
		s := Selector{Raw: a}
		pat := a
		if strings.HasPrefix(a, "@") {
			s.Tag = true
			pat = a[1:]
		}
		if pat == "" {
			return nil, fmt.Errorf("selector %q: empty name", a)
		}
		if strings.HasPrefix(pat, "-") {
			return nil, fmt.Errorf("selector %q: names may not begin with '-'", a)
		}
		if !strings.ContainsAny(pat, "*?[") {
			s.Literal = true
			sels = append(sels, s)
			continue
		}
		re, err := globRegex(pat)
		if err != nil {
			return nil, fmt.Errorf("selector %q: %w", a, err)
		}
		s.Regex = re
		s.re, err = regexp.Compile("^(?:" + re + ")$")
		if err != nil {
			return nil, fmt.Errorf("selector %q: %w", a, err)
		}
		sels = append(sels, s)
	}
	return sels, nil
}

// globRegex turns a shell glob (*, ?, [class], [!class]) into a regular
// expression in the subset that POSIX ERE and RE2 agree on: literal
// punctuation is written as a one-character bracket expression. Globs are
// ASCII, and Go matches them against bytes (see bytewise), as Nix does.
func globRegex(glob string) (string, error) {
	for _, r := range glob {
		if r > 0x7e {
			return "", fmt.Errorf("glob patterns must be ASCII (%q is not); name such a host exactly", r)
		}
	}
	var b strings.Builder
	for i := 0; i < len(glob); i++ {
		c := glob[i]
		switch {
		case c == '*':
			b.WriteString(".*")
		case c == '?':
			b.WriteString(".")
		case c == '[':
			end := strings.IndexByte(glob[i+1:], ']')
			if end < 0 {
				return "", fmt.Errorf("unclosed '[' in %q", glob)
			}
			class := glob[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			if class == "" || class == "^" || strings.ContainsAny(class, `\[`) {
				return "", fmt.Errorf("unsupported character class [%s] in %q", glob[i+1:i+1+end], glob)
			}
			b.WriteString("[" + class + "]")
			i += end + 1
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			b.WriteByte(c)
		case c == '\\' || c == ']' || c == '^' || c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("unsupported character %q in %q", c, glob)
		default:
			b.WriteString("[" + string(c) + "]")
		}
	}
	return b.String(), nil
}

func (s Selector) matches(h *Host) bool {
	if !s.Tag {
		return s.match(h.Name)
	}
	for _, t := range h.Tags {
		if s.match(t) {
			return true
		}
	}
	return false
}

func (s Selector) match(v string) bool {
	if s.Literal {
		return v == strings.TrimPrefix(s.Raw, "@")
	}
	return s.re.MatchString(bytewise(v))
}

// bytewise turns each byte of s into one character, so that Go's regexp
// matches bytes, as Nix's builtins.match does: "?" is one byte in both.
func bytewise(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// Select returns the hosts that any selector matches, in name order; with
// all set, every host (every deployable one with deployableOnly). A
// selector that matches nothing is an error that lists close matches, and
// so is an --all that finds nothing.
func Select(hosts []*Host, sels []Selector, all, deployableOnly bool) ([]*Host, error) {
	var out []*Host
	if all {
		for _, h := range hosts {
			if h.Deployable() || !deployableOnly {
				out = append(out, h)
			}
		}
		if len(out) == 0 {
			what := "hosts"
			if deployableOnly {
				what = "deployable hosts (every one has deployment.targetHost = null)"
			}
			return nil, &SelectionError{Problems: []string{"--all: the flake has no " + what}}
		}
		return out, nil
	}
	picked := map[string]bool{}
	var problems []string
	for _, s := range sels {
		n := 0
		for _, h := range hosts {
			if s.matches(h) {
				n++
				picked[h.Name] = true
			}
		}
		if n == 0 {
			problems = append(problems, noMatch(s, hosts))
		}
	}
	if len(problems) > 0 {
		return nil, &SelectionError{Problems: problems}
	}
	for _, h := range hosts {
		if picked[h.Name] {
			out = append(out, h)
		}
	}
	return out, nil
}

// SelectionError is a selection that names something the flake lacks.
type SelectionError struct{ Problems []string }

func (e *SelectionError) Error() string { return strings.Join(e.Problems, "; ") }

func noMatch(s Selector, hosts []*Host) string {
	var candidates []string
	kind, prefix := "host", ""
	if s.Tag {
		kind, prefix = "tag", "@"
		seen := map[string]bool{}
		for _, h := range hosts {
			for _, t := range h.Tags {
				if !seen[t] {
					seen[t] = true
					candidates = append(candidates, t)
				}
			}
		}
	} else {
		for _, h := range hosts {
			candidates = append(candidates, h.Name)
		}
	}
	word := strings.TrimPrefix(s.Raw, "@")
	var close []string
	for _, c := range candidates {
		if isClose(word, c) {
			close = append(close, prefix+c)
		}
	}
	sort.Strings(close)
	msg := fmt.Sprintf("no %s matches %q", kind, s.Raw)
	if len(close) > 0 {
		if len(close) > 5 {
			close = close[:5]
		}
		msg += " (did you mean " + strings.Join(close, ", ") + "?)"
	}
	return msg
}

// isClose reports whether candidate is a likely intended match for word: a
// small edit distance, or one containing the other (glob characters aside).
func isClose(word, candidate string) bool {
	w := strings.ToLower(strings.Trim(word, "*?"))
	c := strings.ToLower(candidate)
	if w == "" {
		return false
	}
	if strings.Contains(c, w) || strings.Contains(w, c) {
		return true
	}
	limit := 2
	if len(w) < 3 {
		limit = 1
	}
	return editDistance(w, c) <= limit
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
