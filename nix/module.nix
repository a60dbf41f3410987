# firn's NixOS module:
#   services.firn        the binary cache (`firn serve`), for the cache box
#   services.firn.hook   Nix's post-build-hook: every build is queued for upload, at once
#   services.firn.drain  the daemon that uploads what the hook queued (`firn drain`)
#
# Import it next to the per-host modules that `firn gen nixos` writes, which switch these on by
# role:
#   imports = [ /path/to/firn/nix/module.nix ./firn/opi01.nix ];
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  cfg = config.services.firn;
  firn = cfg.package;
  # "0.0.0.0:5000" and "[::]:5000" both end in the port.
  listenPort = builtins.fromJSON (builtins.head (builtins.match ".*:([0-9]+)" cfg.listen));
  # Nix runs the hook without arguments: a script passes the spool along.
  hookScript = pkgs.writeShellScript "firn-hook" ''
    exec ${firn}/bin/firn hook --spool ${lib.escapeShellArg cfg.hook.spool}
  '';
in
{
  options.services.firn = {
    enable = mkEnableOption "the firn binary cache (firn serve)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The firn package.";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:5000";
      example = "0.0.0.0:5000";
      description = "HOST:PORT that firn serve listens on.";
    };

    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/firn";
      description = ''
        The cache's data: index, NARs and the signing key (keys/cache.secret, created on the
        first start; it never leaves this machine).
      '';
    };

    keyName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "cache.example.org-1";
      description = ''
        Name of the signing key, chosen before the first start (default: <hostname>-1).
        Renaming it later needs a new key and every client's trusted-public-keys with it.
      '';
    };

    private = mkOption {
      type = types.bool;
      default = false;
      description = "Reads need a token with read scope, too (clients put it in their netrc).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the port of `listen` in the firewall.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--max-nar-size" "16G" ];
      description = "More arguments for firn serve.";
    };

    hook = {
      enable = mkEnableOption ''
        firn's post-build-hook: the paths of every build are queued in the spool and the build
        goes on at once (services.firn.drain uploads them)'';

      spool = mkOption {
        type = types.str;
        default = "/var/spool/firn";
        description = "The spool directory the hook fills and the drain empties.";
      };
    };

    drain = {
      enable = mkEnableOption "the drain daemon, which uploads what the hook queued, with retries";

      cache = mkOption {
        type = types.str;
        example = "http://ser5.internal:5000";
        description = "URL of the cache to push to.";
      };

      netrcFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/nix/netrc";
        description = ''
          netrc file with the push token (`machine HOST login firn password TOKEN`); default:
          Nix's, /etc/nix/netrc. Keep it out of the Nix store.
        '';
      };

      tokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "A file holding only the push token; used instead of the netrc file.";
      };

      jobs = mkOption {
        type = types.ints.positive;
        default = 4;
        description = "NARs uploaded at once.";
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "More arguments for firn drain.";
      };
    };
  };

  config = mkMerge [
    (mkIf cfg.enable {
      users.users.firn = {
        isSystemUser = true;
        group = "firn";
        home = cfg.dataDir;
      };
      users.groups.firn = { };

      systemd.tmpfiles.rules = [ "d ${cfg.dataDir} 0750 firn firn - -" ];

      systemd.services.firn = {
        description = "firn binary cache";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        serviceConfig = {
          ExecStart = lib.escapeShellArgs (
            [ "${firn}/bin/firn" "serve" "--listen" cfg.listen "--data" cfg.dataDir ]
            ++ lib.optionals (cfg.keyName != null) [ "--key-name" cfg.keyName ]
            ++ lib.optional cfg.private "--private"
            ++ cfg.extraArgs
          );
          User = "firn";
          Group = "firn";
          Restart = "on-failure";
          # firn finishes the requests in flight on SIGTERM.
          KillSignal = "SIGTERM";
          TimeoutStopSec = 60;
          AmbientCapabilities = lib.optionals (listenPort < 1024) [ "CAP_NET_BIND_SERVICE" ];
          NoNewPrivileges = true;
          PrivateTmp = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          ReadWritePaths = [ cfg.dataDir ];
        };
      };

      networking.firewall.allowedTCPPorts = lib.optionals cfg.openFirewall [ listenPort ];
    })

    (mkIf cfg.hook.enable {
      nix.settings.post-build-hook = "${hookScript}";
      systemd.tmpfiles.rules = [ "d ${cfg.hook.spool} 0700 root root - -" ];
    })

    (mkIf cfg.drain.enable {
      systemd.services.firn-drain = {
        description = "firn drain: upload the builds the post-build-hook queued";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        # It reads path metadata with nix when it cannot read the store database itself.
        path = [ config.nix.package ];
        environment =
          {
            FIRN_SPOOL = cfg.hook.spool;
            FIRN_CACHE = cfg.drain.cache;
          }
          // lib.optionalAttrs (cfg.drain.netrcFile != null) { FIRN_NETRC_FILE = cfg.drain.netrcFile; }
          // lib.optionalAttrs (cfg.drain.tokenFile != null) { FIRN_TOKEN_FILE = cfg.drain.tokenFile; };
        serviceConfig = {
          ExecStart = lib.escapeShellArgs (
            [ "${firn}/bin/firn" "drain" "--jobs" (toString cfg.drain.jobs) ] ++ cfg.drain.extraArgs
          );
          # Root: the spool is root's (the hook runs as root) and so is the netrc file.
          Restart = "always";
          RestartSec = 5;
          KillSignal = "SIGTERM";
          NoNewPrivileges = true;
          PrivateTmp = true;
        };
      };
    })
  ];
}
