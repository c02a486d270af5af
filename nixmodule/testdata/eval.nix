# Evaluates the module with nixpkgs' lib: an unchanged Colmena-style
# deployment block, and a host that sets nothing.
{ lib }:
let
  eval = extra: lib.evalModules {
    modules = [
      ../default.nix
      ./nixos-options.nix
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
  plainUsers = (eval { networking.hostName = "db-1"; }).config.users.users;
  deployUser = let c = (eval {
    networking.hostName = "ci-1";
    deployment.deployUser = { enable = true; authorizedKeys = [ "ssh-ed25519 AAAAtest ci" ]; };
  }).config; in {
    inherit (c) deployment;
    user = c.users.users.deploy;
    group = c.users.groups ? deploy;
    sudo = c.security.sudo.extraRules;
    helper = let f = c.environment.etc."deployctl/remote"; in { inherit (f) mode; source = toString f.source; };
  };
  morph = (eval {
    networking.hostName = "app-1";
    deployment = {
      healthChecks = {
        cmd = [ { description = "nginx runs"; cmd = [ "systemctl" "is-active" "nginx" ]; } ];
        http = [ { scheme = "https"; port = 443; path = "/health"; headers.Host = "app.example.org"; period = 1; timeout = 2.5; insecureSSL = true; } ];
        tcp = [ { port = 5432; } ];
      };
      confirmTimeout = 45;
      hooks.preActivate = [ { command = [ "systemctl" "is-system-running" ]; on = "target"; } ];
    };
  }).config.deployment;
}
