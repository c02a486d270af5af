# The NixOS options the module reads and sets, loosely: enough to evaluate
# it with nixpkgs' lib alone.
{ lib, ... }:
{
  options.networking.hostName = lib.mkOption { type = lib.types.str; default = "nixos"; };
  options.users.users = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  options.users.groups = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  options.environment.etc = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  options.security.sudo.extraRules = lib.mkOption { type = lib.types.listOf lib.types.anything; default = [ ]; };
}
