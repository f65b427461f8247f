# The Strata package: the four binaries and the unit files from systemd/.
# Called by flake.nix (packages, overlays.default); usable as
# `pkgs.callPackage ./package.nix { }` without flakes as well.
{
  lib,
  rustPlatform,
}:

let
  workspace = (lib.importTOML ./Cargo.toml).workspace.package;
in
rustPlatform.buildRustPackage {
  pname = "strata";
  inherit (workspace) version;

  # The Rust workspace and the units; not the Nix files, docs and scripts
  # around them, so that editing those does not rebuild the package.
  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.difference ./. (
      lib.fileset.unions [
        (lib.fileset.fileFilter (file: file.hasExt "nix") ./.)
        (lib.fileset.maybeMissing ./flake.lock)
        (lib.fileset.maybeMissing ./.git)
        (lib.fileset.maybeMissing ./target)
        (lib.fileset.maybeMissing ./result)
        (lib.fileset.maybeMissing ./docs)
        (lib.fileset.maybeMissing ./scripts)
        (lib.fileset.maybeMissing ./.ci)
        (lib.fileset.maybeMissing ./README.md)
      ]
    );
  };

  cargoLock.lockFile = ./Cargo.lock;

  # checkPhase runs `cargo test` over the whole workspace inside the build
  # sandbox: no root, no systemd as PID 1, no network. The tests that need
  # root or a running systemd detect that and skip themselves; nothing has to
  # be excluded here by name.
  doCheck = true;

  postInstall = ''
    install -Dm444 -t $out/lib/systemd/system \
      systemd/*.service systemd/*.socket systemd/*.target
    install -Dm444 systemd/strata-tmpfiles.conf $out/lib/tmpfiles.d/strata.conf
    install -Dm444 systemd/strata-sysusers.conf $out/lib/sysusers.d/strata.conf

    # The units are written for a distribution layout (/usr/bin); point them
    # at this package instead.
    for unit in $out/lib/systemd/system/*; do
      if grep -q /usr/bin/ "$unit"; then
        substituteInPlace "$unit" --replace-fail /usr/bin/ "$out/bin/"
      fi
    done
  '';

  # Every program a unit starts must be one this package installs.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck

    for bin in strata-identity strata-fs strata-supervisor strata-ctl; do
      test -x "$out/bin/$bin" || { echo "$bin was not installed" >&2; exit 1; }
    done

    sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' $out/lib/systemd/system/* |
      while read -r exe; do
        case $exe in
          "$out"/bin/*)
            test -x "$exe" || { echo "a unit starts $exe, which is not installed" >&2; exit 1; }
            ;;
          *)
            echo "a unit starts $exe, outside this package" >&2
            exit 1
            ;;
        esac
      done

    runHook postInstallCheck
  '';

  meta = {
    description = "Capability-based service runtime for one Linux host, native to systemd";
    license = lib.licenses.asl20;
    mainProgram = "strata-ctl";
    platforms = lib.platforms.linux;
  };
}
