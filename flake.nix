{
  description = "deployctl: build, push and activate NixOS systems across a fleet";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.1.0-" + (self.shortRev or self.dirtyShortRev or "dirty");

      # The package, for any package set (the overlay builds it with the
      # user's own).
      deployctl = pkgs:
        let
          # go.mod asks for Go 1.26.
          buildGoModule = pkgs.buildGoModule.override { go = pkgs.go_1_26; };
        in
        buildGoModule {
          pname = "deployctl";
          inherit version;
          src = lib.cleanSource self;
          # The hash of `go mod vendor`'s output; nixmodule's
          # TestFlakeVendorHash fails when go.mod changes without it.
          vendorHash = "sha256-Kk6JlNAg2amOpoiUxJgkONNcE0bv6H09GdWhxqrFwvA=";
          subPackages = [ "cmd/deployctl" ];
          ldflags = [ "-s" "-w" "-X github.com/deployctl/deployctl/internal/cli.Version=${version}" ];
          nativeBuildInputs = [ pkgs.installShellFiles ];
          # The tests need root, sshd and a Nix store of their own: the
          # checks output runs the ones that do not (`go test -short`).
          doCheck = false;
          postInstall = lib.optionalString (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
            installShellCompletion --cmd deployctl \
              --bash <($out/bin/deployctl completion bash) \
              --zsh <($out/bin/deployctl completion zsh) \
              --fish <($out/bin/deployctl completion fish)
          '';
          meta = {
            description = "Build, push and activate NixOS systems across a fleet, with health checks and rollback";
            mainProgram = "deployctl";
            platforms = lib.platforms.unix;
          };
        };
    in
    {
      packages = forAllSystems (pkgs:
        let package = deployctl pkgs; in {
          deployctl = package;
          default = package;
        });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });

      overlays.default = final: prev: { deployctl = deployctl final; };

      nixosModules.default = import ./nixmodule;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.go_1_26 pkgs.gopls pkgs.nix pkgs.openssh ];
        };
      });

      checks = forAllSystems (pkgs: {
        # The Go tests that need neither root nor a fleet (the fleet tests
        # skip, saying why).
        unit = (deployctl pkgs).overrideAttrs (old: {
          pname = "deployctl-unit-tests";
          doCheck = true;
          checkFlags = [ "-short" ];
          subPackages = [ ];
        });
      });
    };
}
