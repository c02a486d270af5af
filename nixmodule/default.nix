# deployctl's deployment options, declared inside each host's own NixOS
# configuration. The names and shapes are Colmena's, so an existing
# `deployment` block evaluates unchanged. deployctl applies the same defaults
# itself when a configuration does not import this module.
{ config, lib, ... }:

let
  inherit (lib) mkOption types literalExpression;
  cfg = config.deployment;
  # Each health check is tried every `period` seconds, each try for at most
  # `timeout` seconds, until it passes or `--probe-timeout` ends.
  timing = {
    period = mkOption { type = types.number; default = 2; description = "Seconds between tries."; };
    timeout = mkOption { type = types.number; default = 5; description = "Seconds one try may take."; };
  };
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
      default = if cfg.deployUser.enable then cfg.deployUser.name else "root";
      defaultText = literalExpression ''if config.deployment.deployUser.enable then config.deployment.deployUser.name else "root"'';
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

    # Colmena's options.
    allowLocalDeployment = mkOption {
      type = types.bool;
      default = false;
      description = "Colmena's option: allow `deployctl deploy --local` to deploy this host on the machine deployctl runs on (this host itself).";
    };
    replaceUnknownProfiles = mkOption {
      type = types.bool;
      default = true;
      description = "Colmena's option. Not acted on yet.";
    };
    keys = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          text = mkOption { type = types.nullOr types.str; default = null; description = "The secret itself (it ends up in the Nix store of whoever evaluates: prefer keyCommand)."; };
          keyFile = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/home/me/secrets/db";
            description = "A file on the deploying machine, read at deploy time. A string, not a Nix path: a Nix path would copy the secret into the store.";
          };
          keyCommand = mkOption {
            type = types.nullOr (types.listOf types.str);
            default = null;
            example = [ "pass" "show" "db" ];
            description = "A command (argv) run on the deploying machine at deploy time; its standard output is the secret. Any secrets manager with a CLI works.";
          };
          destDir = mkOption { type = types.str; default = "/run/keys"; description = "The directory the key goes to on the host."; };
          name = mkOption { type = types.str; default = name; defaultText = literalExpression "<name>"; description = "The key file's name."; };
          user = mkOption { type = types.str; default = "root"; description = "The key file's owner."; };
          group = mkOption { type = types.str; default = "root"; description = "The key file's group."; };
          permissions = mkOption { type = types.str; default = "0600"; description = "The key file's mode, in octal."; };
          uploadAt = mkOption {
            type = types.enum [ "pre-activation" "post-activation" ];
            default = "pre-activation";
            description = "Upload before the switch, or after a successful one (for an owner the new system creates, pre-activation works too: the key is re-owned after the switch).";
          };
        };
      }));
      default = { };
      description = "Secrets to upload, in Colmena's shape: set exactly one of text, keyFile and keyCommand. They never enter a Nix store or a command line.";
    };
  };

  # The activation phase's options (deployctl activate): health checks in
  # morph's shape, with a tcp kind added, and the dead-man's switch.
  options.deployment.healthChecks = {
    cmd = mkOption {
      type = types.listOf (types.submodule {
        options = {
          description = mkOption { type = types.str; default = ""; description = "What the check proves, for the report."; };
          cmd = mkOption {
            type = types.nonEmptyListOf types.str;
            example = [ "systemctl" "is-active" "nginx" ];
            description = "A command (argv) run on the host as `targetUser`; exit status 0 is healthy.";
          };
        } // timing;
      });
      default = [ ];
      description = "Commands run on the host after each switch or test activation.";
    };
    http = mkOption {
      type = types.listOf (types.submodule {
        options = {
          description = mkOption { type = types.str; default = ""; description = "What the check proves, for the report."; };
          scheme = mkOption { type = types.enum [ "http" "https" ]; default = "http"; description = "http or https."; };
          host = mkOption { type = types.nullOr types.str; default = null; description = "The host to ask; `null` is the target host (its SSH HostName)."; };
          port = mkOption { type = types.port; description = "The port to ask."; };
          path = mkOption { type = types.str; default = "/"; description = "The path to ask for."; };
          headers = mkOption { type = types.attrsOf types.str; default = { }; description = "Request headers."; };
          insecureSSL = mkOption { type = types.bool; default = false; description = "Accept any TLS certificate."; };
        } // timing;
      });
      default = [ ];
      description = "HTTP GET requests made from the deploying machine; any 2xx status is healthy.";
    };
    tcp = mkOption {
      type = types.listOf (types.submodule {
        options = {
          description = mkOption { type = types.str; default = ""; description = "What the check proves, for the report."; };
          host = mkOption { type = types.nullOr types.str; default = null; description = "The host to connect to; `null` is the target host."; };
          port = mkOption { type = types.port; description = "The port to connect to."; };
        } // timing;
      });
      default = [ ];
      description = "TCP connections made from the deploying machine; one accepted is healthy.";
    };
  };
  options.deployment.confirmTimeout = mkOption {
    type = types.ints.unsigned;
    default = 30;
    description = ''
      The dead-man's switch: after a switch or test activation, deployctl
      must reach the host over a new SSH connection within this many
      seconds, or the host rolls itself back to the system it ran before.
      `deployctl activate --no-magic-rollback` disarms it.
    '';
  };

  options.deployment.deployUser = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Create a system user for deployctl to log in as (and make it the
        default `targetUser`), with `authorizedKeys`, and install
        deployctl-remote as `/etc/deployctl/remote` with a sudo rule that
        lets the user run that alone as root, without a password.

        deployctl-remote (`deployctl remote-helper` prints it) holds every
        step deployctl runs as root on the host: the store write
        (`nix-store --serve --write`), the lock, the switch (the system
        profile, then `switch-to-configuration`), the dead-man's switch and
        the rollback, the journal, key upload and GC roots. Each is chosen
        by name, its arguments are checked, and none takes code to run, so
        the sudo log shows each step by name. deployctl uses it when the
        host's copy speaks its protocol, and otherwise sends each step's
        script through `sudo sh -c` (or the one command a step is), which
        this rule refuses. The deploy that first brings this module to a
        host needs root or full sudo up to its switch; the steps after it
        go through the deployctl-remote it installed.

        The rule limits what the user runs, not what it can do: whoever may
        write the Nix store and switch the system can make any closure the
        running system, so the user is root's equal either way. The
        alternative, `nix.settings.trusted-users`, lets a user write the
        store without sudo (the push), but activating still needs root,
        and it is as root-equivalent. Not covered: target-side hooks
        (`hooks.*.on = "target"`) run as root through sudo and need rules
        of their own.
      '';
    };
    name = mkOption {
      type = types.str;
      default = "deploy";
      description = "The deploy user's name.";
    };
    authorizedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ssh-ed25519 AAAA... ci@example.org" ];
      description = "The SSH public keys that may log in as the deploy user.";
    };
  };

  config = lib.mkIf cfg.deployUser.enable {
    users.users.${cfg.deployUser.name} = {
      isSystemUser = true;
      group = cfg.deployUser.name;
      description = "deployctl deploys";
      home = "/var/lib/${cfg.deployUser.name}";
      createHome = true;
      useDefaultShell = true;
      openssh.authorizedKeys.keys = cfg.deployUser.authorizedKeys;
    };
    users.groups.${cfg.deployUser.name} = { };
    # A copy, not a link into the store: the rule names a file of root's
    # that stays at one path.
    environment.etc."deployctl/remote" = {
      source = ./deployctl-remote;
      mode = "0555";
    };
    security.sudo.extraRules = [{
      users = [ cfg.deployUser.name ];
      commands = [{ command = "/etc/deployctl/remote"; options = [ "NOPASSWD" ]; }];
    }];
  };

  options.deployment.hooks = lib.genAttrs [ "preBuild" "postBuild" "prePush" "postPush" "preActivate" "postActivate" "postRollback" ] (point: mkOption {
    type = types.listOf (types.submodule {
      options = {
        command = mkOption { type = types.nonEmptyListOf types.str; description = "The command (argv)."; };
        on = mkOption {
          type = types.enum [ "local" "target" ];
          default = "local";
          description = "Run it on the deploying machine, or on the host (over its SSH session, as root; as `targetUser` when it has no `privilegeEscalationCommand`).";
        };
      };
    });
    default = [ ];
    description = ''
      Commands run at ${point}, in order, with DEPLOYCTL_HOST,
      DEPLOYCTL_TARGET_HOST, DEPLOYCTL_TOPLEVEL, DEPLOYCTL_PREVIOUS,
      DEPLOYCTL_ACTION and DEPLOYCTL_PHASE set. A failing pre hook stops the
      host there; a failing post hook fails the host without undoing the
      phase, except postActivate, which counts as a failed health check and
      rolls the host back.
    '';
  });
}
