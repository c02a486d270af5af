# Evaluates the project's flake.nix outputs against a stub nixpkgs: its
# own logic (what it builds, with which hash and flags, which outputs it
# has), without nixpkgs, which this machine lacks.
let
  lib = {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    cleanSource = src: src;
    optionalString = cond: s: if cond then s else "";
    getExe = p: "${p.outPath}/bin/${p.meta.mainProgram}";
    platforms.unix = [ ];
  };
  pkgsFor = system: {
    stdenv = {
      hostPlatform = { inherit system; };
      buildPlatform.canExecute = _: true;
    };
    go_1_26 = "go-1.26";
    gopls = "gopls";
    nix = "nix";
    openssh = "openssh";
    installShellFiles = "installShellFiles";
    mkShell = args: args;
    # buildGoModule.override { go } records the Go it was given.
    buildGoModule.override = { go }: args: args // {
      inherit go;
      outPath = "/nix/store/stub-${args.pname}";
      overrideAttrs = f: args // f args;
    };
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] pkgsFor;
  };
  flake = import ../../flake.nix;
  self = outputs // { outPath = ./../..; shortRev = "abc1234"; };
  outputs = flake.outputs { inherit self nixpkgs; };
  sys = "x86_64-linux";
  pkg = outputs.packages.${sys}.default;
in
{
  inputs = builtins.attrNames flake.inputs;
  package = { inherit (pkg) pname version vendorHash subPackages ldflags doCheck go; mainProgram = pkg.meta.mainProgram; completions = pkg.postInstall; };
  same = outputs.packages.${sys}.deployctl == pkg;
  app = outputs.apps.${sys}.default;
  module = builtins.isFunction outputs.nixosModules.default;
  overlay = (outputs.overlays.default (pkgsFor sys) { }).deployctl.pname;
  devShell = outputs.devShells.${sys}.default.packages;
  check = { inherit (outputs.checks.${sys}.unit) doCheck checkFlags; };
  systems = builtins.attrNames outputs.packages;
}
