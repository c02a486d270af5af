# deployctl's deployment options, declared inside each host's own NixOS
# configuration. The names and shapes are Colmena's, so an existing
# `deployment` block evaluates unchanged. deployctl applies the same defaults
# itself when a configuration does not import this module.
{ config, lib, ... }:

let
  inherit (lib) mkOption types literalExpression;
in
{
  options.deployment = {
    targetHost = mkOption {
      type = types.nullOr types.str;
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = ''
        The SSH destination of this host: an address, a host name, or an
        alias from the SSH configuration. `null` makes the host build-only:
        deployctl builds it but never deploys it.
      '';
    };
    targetPort = mkOption {
      type = types.nullOr types.port;
      default = null;
      description = "The SSH port. `null` leaves it to the SSH configuration, else 22.";
    };
    targetUser = mkOption {
      type = types.nullOr types.str;
      default = "root";
      description = ''
        The user deployctl logs in as. `null` leaves it to the SSH
        configuration. A user other than root runs deployctl's commands
        through `privilegeEscalationCommand`.
      '';
    };
    tags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "web" "eu" ];
      description = "Tags to select hosts by: `deployctl deploy @web`.";
    };
    buildOnTarget = mkOption {
      type = types.bool;
      default = false;
      description = "Build this host's system on the host itself rather than on the deploying machine.";
    };
    buildHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "builder-1";
      description = ''
        Build this host's system on another machine: the name of a host of
        the same flake (reached with its deployment options) or an SSH
        destination (`[user@]host`, read with the SSH configuration). The
        system stays there and is pushed from there to the host. `null`
        builds on the deploying machine (or on the target, with
        `buildOnTarget`).
      '';
    };
    privilegeEscalationCommand = mkOption {
      type = types.listOf types.str;
      default = [ "sudo" "-H" "--" ];
      description = "The command prefix that runs a command as root when `targetUser` is not root.";
    };
    sshOptions = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "-J" "bastion" "-o" "ServerAliveInterval=5" ];
      description = ''
        Extra OpenSSH options for this host: `-o Key=Value`, `-p`, `-l`,
        `-i` and `-J`. They override the SSH configuration.
      '';
    };

    # Declared so that an existing Colmena or morph `deployment` block
    # evaluates unchanged. deployctl does not act on these yet; their exact
    # shapes come with the phases that use them.
    allowLocalDeployment = mkOption {
      type = types.bool;
      default = false;
      description = "Colmena's option: allow deploying to the machine deployctl runs on. Not acted on yet.";
    };
    replaceUnknownProfiles = mkOption {
      type = types.bool;
      default = true;
      description = "Colmena's option. Not acted on yet.";
    };
    keys = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "Secrets to upload, in Colmena's shape. Not acted on yet.";
    };
    healthChecks = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "Health checks, in morph's shape (`cmd`, `http`). Not acted on yet.";
    };
  };
}
