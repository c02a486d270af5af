package cli

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestCompletionFallsBackToNames: host names complete with their tags
// when the deployment options evaluate in time, and alone when they do
// not (nothing is cached, so a slow flake must still complete names).
func TestCompletionFallsBackToNames(t *testing.T) {
	nixtest.Require(t, "nix")
	dir := t.TempDir()
	if err := fixture.Write(dir, []fixture.Host{
		{Name: "web-1", Deployment: map[string]any{"tags": []string{"web"}}},
		{Name: "db-1", Deployment: map[string]any{"tags": []string{"db"}}},
	}); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "NIX_CONFIG=substituters =")
	complete := func(within time.Duration, args []string, prefix string) []string {
		g := &globals{inv: Invocation{Env: env}, flake: "path:" + dir, tagsWithin: within}
		cmd := &cobra.Command{}
		cmd.SetContext(context.Background())
		got, _ := g.completeHosts(cmd, args, prefix)
		return got
	}
	if got, want := complete(time.Minute, nil, ""), []string{"@db", "@web", "db-1", "web-1"}; !slices.Equal(got, want) {
		t.Errorf("in time: %q, want %q", got, want)
	}
	if got, want := complete(time.Minute, []string{"web-1"}, "w"), []string(nil); !slices.Equal(got, want) {
		t.Errorf("web-1 given, prefix w: %q, want none", got)
	}
	if got, want := complete(0, nil, ""), []string{"db-1", "web-1"}; !slices.Equal(got, want) {
		t.Errorf("too slow for the tags: %q, want %q", got, want)
	}
}
