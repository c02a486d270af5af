package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deployctl/deployctl/internal/remote"
)

// transcript returns ctx under which the commands run for host's step are
// recorded in full in --log-dir's DIR/HOST/STEP.log (appended to, below a
// line naming the run), and the function that closes the file (once the
// commands under way have ended). Without --log-dir it returns ctx.
func (g *globals) transcript(ctx context.Context, host, step string) (context.Context, func(), error) {
	if g.logDir == "" {
		return ctx, func() {}, nil
	}
	dir := filepath.Join(g.logDir, logName(host))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ctx, func() {}, fmt.Errorf("--log-dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, logName(step)+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return ctx, func() {}, fmt.Errorf("--log-dir: %w", err)
	}
	fmt.Fprintf(f, "==== deployctl %s: %s of %s, %s\n", strings.Join(g.inv.Args, " "), step, host, time.Now().Format(time.RFC3339))
	t := remote.NewTranscript(f)
	return remote.WithTranscript(ctx, t), func() { t.Close() }, nil
}

// logName is name as one file name: characters other than letters,
// digits, '.', '-' and '_' become '_', and it never begins with a dot.
func logName(name string) string {
	b := []byte(name)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		if !ok || i == 0 && c == '.' {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
