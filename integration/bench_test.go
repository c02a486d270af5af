package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// BenchmarkEvaluation times the inventory evaluation of 1 host and of 20
// hosts of the fixture flake evaluated together, and reports the ratio of
// the 20-host evaluation to 20 one-host evaluations (below 1: cheaper
// together). Each run uses a fresh flake copy, so Nix's evaluation cache
// cannot answer.
func BenchmarkEvaluation(b *testing.B) {
	nixtest.Require(b, "nix")
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.NewTextHandler(io.Discard, nil)))
	var specs []fixture.Host
	for i := 0; i < 20; i++ {
		specs = append(specs, fixture.Host{Name: fmt.Sprintf("host-%02d", i), Deployment: map[string]any{"tags": []string{"bench"}}})
	}
	eval := func(selector string) time.Duration {
		dir := b.TempDir()
		if err := fixture.Write(dir, specs); err != nil {
			b.Fatal(err)
		}
		sels, err := inventory.ParseSelectors([]string{selector})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		inv, err := inventory.Load(context.Background(), n, "path:"+dir, inventory.LoadOptions{Selectors: sels, Toplevel: true})
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if want := map[string]int{"host-00": 1, "@bench": 20}[selector]; len(inv.Selected) != want {
			b.Fatalf("%s selected %d hosts, want %d", selector, len(inv.Selected), want)
		}
		return took
	}
	var one, twenty time.Duration
	for i := 0; i < b.N; i++ {
		one += eval("host-00")
		twenty += eval("@bench")
	}
	per := float64(b.N)
	b.ReportMetric(float64(one.Milliseconds())/per, "ms/1-host")
	b.ReportMetric(float64(twenty.Milliseconds())/per, "ms/20-hosts")
	b.ReportMetric(float64(twenty)/(20*float64(one)), "20-hosts/(20×1-host)")
}
