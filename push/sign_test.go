package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/nixtest"
)

// TestSignAsNixDoes: deployctl's signature of a path is the one Nix's own
// `nix store sign` makes with the same key (ed25519 signatures are
// deterministic), over a path with a reference.
func TestSignAsNixDoes(t *testing.T) {
	nixtest.Require(t, "nix", "nix-store", "nix-build")
	n := nix.New(append(os.Environ(), "NIX_CONFIG=substituters ="), slog.New(slog.DiscardHandler))
	ctx := context.Background()
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if _, err := n.Run(ctx, nil, "nix-store", "--generate-binary-cache-key", "deployctl-test-1", sk, pk); err != nil {
		t.Fatal(err)
	}
	expr := fmt.Sprintf(`let mk = name: script: derivation { inherit name; system = %q; builder = "/bin/sh"; args = [ "-c" script ]; salt = %q; };
	  dep = mk "sign-dep" "echo dep > $out"; in mk "sign-top" "echo ${dep} > $out"`, nixtest.System(), fmt.Sprint(time.Now().UnixNano()))
	out, err := n.Run(ctx, nil, "nix-build", "--no-out-link", "--expr", expr)
	if err != nil {
		t.Fatal(err)
	}
	top := strings.TrimSpace(string(out))
	before, err := n.PathInfos(ctx, false, top)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(sk)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := s.Sign(before[top])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Nix(ctx, "store", "sign", "--key-file", sk, top); err != nil {
		t.Fatal(err)
	}
	after, err := n.PathInfos(ctx, false, top)
	if err != nil {
		t.Fatal(err)
	}
	if len(before[top].References) == 0 {
		t.Fatal("the test path has no references")
	}
	mine := ours.Signatures[len(ours.Signatures)-1]
	if !slices.Contains(after[top].Signatures, mine) {
		t.Errorf("our signature %s is not among Nix's %v", mine, after[top].Signatures)
	}
}

func TestUnsignedAdvice(t *testing.T) {
	// Nix 2.8's wording (seen on the fleet) and later Nix's.
	for _, msg := range []string{"lacks a valid signature", "lacks a signature by a trusted key"} {
		refused := errors.New("add /nix/store/x: error: cannot add path '/nix/store/x' because it " + msg)
		if err := withAdvice(refused); !strings.Contains(err.Error(), "--sign-key") || !errors.Is(err, refused) {
			t.Errorf("withAdvice = %v", err)
		}
	}
	other := errors.New("disk full")
	if err := withAdvice(other); err != other {
		t.Errorf("advice added to an unrelated error: %v", err)
	}
}
