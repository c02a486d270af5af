# Evaluates the module with nixpkgs' lib: an unchanged Colmena-style
# deployment block, and a host that sets nothing.
{ lib }:
let
  eval = extra: lib.evalModules {
    modules = [
      ../default.nix
      # The one NixOS option the module reads.
      { options.networking.hostName = lib.mkOption { type = lib.types.str; default = "nixos"; }; }
      extra
    ];
  };
in
{
  colmena = (eval {
    networking.hostName = "web-1";
    deployment = {
      targetHost = "web-1.example.org";
      targetPort = 2222;
      targetUser = "deploy";
      tags = [ "web" "eu" ];
      buildOnTarget = true;
      allowLocalDeployment = false;
      replaceUnknownProfiles = true;
      privilegeEscalationCommand = [ "doas" ];
      sshOptions = [ "-J" "bastion" ];
      keys."db-password" = { keyCommand = [ "pass" "db" ]; destDir = "/run/keys"; user = "postgres"; permissions = "0400"; };
    };
  }).config.deployment;
  plain = (eval { networking.hostName = "db-1"; }).config.deployment;
  morph = (eval {
    networking.hostName = "app-1";
    deployment = {
      healthChecks = {
        cmd = [ { description = "nginx runs"; cmd = [ "systemctl" "is-active" "nginx" ]; } ];
        http = [ { scheme = "https"; port = 443; path = "/health"; headers.Host = "app.example.org"; period = 1; timeout = 2.5; insecureSSL = true; } ];
        tcp = [ { port = 5432; } ];
      };
      confirmTimeout = 45;
    };
  }).config.deployment;
}
