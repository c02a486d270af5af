// Package shell quotes argument vectors for POSIX shells.
package shell

import "strings"

// Quote returns s quoted so that a POSIX shell reads it back as one word.
// Words made only of safe characters are returned as they are.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	if isSafe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes each element of argv and joins them with spaces, giving a
// command line that a POSIX shell splits back into argv.
func Join(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = Quote(a)
	}
	return strings.Join(quoted, " ")
}

func isSafe(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("@%+=:,./-_^", r):
		default:
			return false
		}
	}
	return true
}
