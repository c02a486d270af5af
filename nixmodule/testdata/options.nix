# The module's options as NixOS documents them (lib.optionAttrSetToDocList):
# what docs/options.md is generated from.
{ lib }:
let
  eval = lib.evalModules { modules = [ ../default.nix ./nixos-options.nix ]; };
  text = v: if v == null then null else v.text or (builtins.toJSON v);
in
map
  (o: {
    inherit (o) name type description readOnly;
    default = text (o.default or null);
    example = text (o.example or null);
  })
  (builtins.filter (o: lib.hasPrefix "deployment." o.name && o.visible && !o.internal)
    (lib.optionAttrSetToDocList eval.options))
