# deployctl: `make demo` and `make test` set up everything they need
# (scripts/setup.sh installs Nix and OpenSSH on Debian as root).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/deployctl/deployctl/internal/cli.Version=$(VERSION)
# The race detector needs cgo, so a C compiler: use it where there is one.
RACE    ?= $(shell command -v gcc >/dev/null 2>&1 && echo -race)

.PHONY: build setup test test-quick demo bench lint docs clean

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/deployctl ./cmd/deployctl

setup:
	@bash scripts/setup.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...

# Everything, the fleet tests included (they need root; as root they run).
test: setup lint
	$(GO) test $(RACE) -count=1 -timeout 30m ./...

# Unit tests only: no fleet, no root needed.
test-quick: lint
	$(GO) test -short -count=1 ./...

# Starts a 3-host local fleet, deploys to it, shows what runs, stops it.
demo: setup build
	$(GO) run ./integration/cmd/fleet -hosts alpha,beta,gamma -- bash scripts/demo.sh

# Benchmarks, measured on this machine in one run: evaluation of 1 host vs
# 20 hosts together, then deployctl push against nix copy and tar|ssh on a
# local fleet (results in bench/RESULTS.md).
bench: setup build
	$(GO) test -run '^$$' -bench . -benchtime 5x -count 1 ./integration/
	$(GO) run ./integration/cmd/bench -deployctl bin/deployctl -out bench/RESULTS.md

# docs/options.md, generated from nixmodule/default.nix with nixpkgs' lib:
# NIXPKGS_LIB names a checkout (nix-community/nixpkgs.lib).
docs:
	@test -n "$(NIXPKGS_LIB)" || { echo "make docs: set NIXPKGS_LIB to a nixpkgs lib checkout (git clone https://github.com/nix-community/nixpkgs.lib)"; exit 1; }
	NIXPKGS_LIB="$(NIXPKGS_LIB)" $(GO) test -count=1 ./nixmodule -run 'TestOptionsDoc|TestRemoteHelperFile' -update

clean:
	rm -rf bin
