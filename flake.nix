{
  description = "deployctl: build, push and activate NixOS systems across a fleet";

  # Minimal for now: the NixOS module. The package, app, dev shell and
  # checks come with the nixmodule and flake work.
  outputs = { self }: {
    nixosModules.default = import ./nixmodule;
  };
}
