package push

import (
	"crypto/rand"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/deployctl/deployctl/internal/nix"
)

// Signer signs store paths with a Nix secret key (as `nix store sign`
// does), for targets that accept only paths signed by a key they trust.
type Signer struct{ key signature.SecretKey }

// LoadSigner reads a Nix secret key file (name:base64, as
// nix-store --generate-binary-cache-key writes it).
func LoadSigner(file string) (*Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	key, err := signature.LoadSecretKey(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &Signer{key: key}, nil
}

// Sign returns info with its signature added.
func (s *Signer) Sign(info nix.PathInfo) (nix.PathInfo, error) {
	fp, err := fingerprint(info)
	if err != nil {
		return info, err
	}
	sig, err := s.key.Sign(rand.Reader, fp)
	if err != nil {
		return info, fmt.Errorf("sign %s: %w", info.Path, err)
	}
	out := info
	out.Signatures = append(slices.Clone(info.Signatures), sig.String())
	return out, nil
}

// fingerprint is what Nix signs of a path: 1;path;narHash;narSize;refs.
func fingerprint(info nix.PathInfo) (string, error) {
	algo := nixhash.SHA256
	h, err := nixhash.ParseAny(info.NarHash, &algo)
	if err != nil {
		return "", fmt.Errorf("%s: nar hash %q: %w", info.Path, info.NarHash, err)
	}
	refs := slices.Sorted(slices.Values(info.References))
	return "1;" + info.Path + ";" + h.Format(nixhash.NixBase32, true) + ";" + strconv.FormatInt(info.NarSize, 10) + ";" + strings.Join(refs, ","), nil
}

// unsignedAdvice is added to a refusal for want of a signature.
const unsignedAdvice = "the target's Nix accepts paths from this user only when signed by a key it trusts: " +
	"deploy as root (deployment.targetUser = \"root\", or keep the privilege escalation), " +
	"make the user trusted (nix.settings.trusted-users, which is root-equivalent), " +
	"or sign with --sign-key FILE using a key in the target's trusted-public-keys"

// unsigned matches Nix's refusal of a path for want of a signature: "lacks
// a valid signature" (Nix 2.8), "lacks a signature by a trusted key"
// (later Nix).
var unsigned = regexp.MustCompile(`lacks a (valid )?signature`)

// withAdvice adds unsignedAdvice to an error that is a refusal of an
// unsigned path.
func withAdvice(err error) error {
	if err != nil && unsigned.MatchString(err.Error()) {
		return fmt.Errorf("%w\n%s", err, unsignedAdvice)
	}
	return err
}
