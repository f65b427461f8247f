# The Strata package. Outputs:
#   bin    strata-ctl, the one program meant for PATH (the default output,
#          so `nix run` and `nix shell` give it);
#   out    the daemons (strata-identity, strata-fs, strata-supervisor), the
#          unit files from systemd/, tmpfiles.d and sysusers.d: what a host
#          needs, and what the NixOS module's systemd.packages takes; and,
#          in share/strata, the fleet drop-in strata-fleet.conf, for hosts
#          that install it by hand (docs/configuration.md, "Fleet");
#   tools  strata-bench, strata-loadgen and strata-v032 (a client of the
#          prototype's v0.3.2 protocol), for the VM tests and benchmarks.
# Called by flake.nix and by the NixOS module's default
# (`pkgs.callPackage ./package.nix { }`).
{
  lib,
  coreutils,
  makeWrapper,
  protobuf,
  rustPlatform,
  testers,
}:

let
  workspace = (lib.importTOML ./Cargo.toml).workspace.package;

  # What the build reads: editing a scenario script, the fuzz targets, the
  # docs or a .nix file does not rebuild the package.
  # scripts/nix-sandbox-test.sh copies exactly this list, read from here.
  sourcePaths = [
    ./Cargo.toml
    ./Cargo.lock
    ./shared
    ./fleet
    ./services
    ./ctl
    ./bench
    ./tests/adversarial
    ./tests/testkit
    ./tools/loadgen
    ./tools/v032-client
    ./systemd
  ];
in
rustPlatform.buildRustPackage (finalAttrs: {
  pname = "strata";
  inherit (workspace) version;

  # The workspace's crates and the units, nothing else (sourcePaths).
  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.difference (lib.fileset.unions sourcePaths) (
      lib.fileset.fileFilter (file: file.hasExt "nix") ./.
    );
  };

  cargoLock.lockFile = ./Cargo.lock;

  outputs = [
    "bin"
    "out"
    "tools"
  ];
  strictDeps = true;
  # protobuf: etcd-client (strata-fleet) compiles etcd's .proto files at
  # build time with protoc.
  nativeBuildInputs = [
    makeWrapper
    protobuf
  ];

  # checkPhase runs `cargo test --release` over the whole workspace as the
  # unprivileged build user, with no network and no systemd. The harness
  # makes that user identity's administrator. The tests that switch uids
  # need root and are #[ignore]d with that reason, so they show as ignored
  # here; the root CI run (scripts/test-all.sh) runs them.
  # scripts/nix-sandbox-test.sh reproduces these conditions in CI.
  doCheck = true;

  postInstall = ''
    moveToOutput bin/strata-ctl "$bin"
    moveToOutput bin/strata-bench "$tools"
    moveToOutput bin/strata-loadgen "$tools"
    moveToOutput bin/strata-v032 "$tools"
    # strata-bench starts the daemons it measures from its own directory by
    # default; they are in out. (tools may refer to out; bin must not.)
    wrapProgram "$tools/bin/strata-bench" --add-flags "--bin-dir $out/bin"

    install -Dm444 -t $out/lib/systemd/system \
      systemd/*.service systemd/*.socket systemd/*.target
    install -Dm444 systemd/strata-tmpfiles.conf $out/lib/tmpfiles.d/strata.conf
    install -Dm444 systemd/strata-sysusers.conf $out/lib/sysusers.d/strata.conf
    # The fleet drop-in is not a unit's drop-in here: under lib/systemd/system
    # systemd.packages would apply it on every NixOS host, fleet or not. The
    # module renders its settings from services.strata.fleet instead; other
    # hosts copy it into /etc/systemd/system/strata-{identity,fs}.service.d.
    install -Dm444 systemd/strata-fleet.conf $out/share/strata/strata-fleet.conf

    # The units are written for a distribution layout (/usr/bin); point them
    # at this package instead.
    for unit in $out/lib/systemd/system/*; do
      if grep -q /usr/bin/ "$unit"; then
        substituteInPlace "$unit" --replace-fail /usr/bin/ "$out/bin/"
      fi
      # ExecReload=/bin/kill -HUP $MAINPID (identity rereads its grants).
      if grep -q '=/bin/kill ' "$unit"; then
        substituteInPlace "$unit" --replace-fail '=/bin/kill ' '=${coreutils}/bin/kill '
      fi
    done
  '';

  # Every program a unit starts must be one this package installs.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck

    for prog in $out/bin/strata-identity $out/bin/strata-fs $out/bin/strata-supervisor \
      $bin/bin/strata-ctl $tools/bin/strata-bench $tools/bin/strata-loadgen $tools/bin/strata-v032; do
      test -x "$prog" || { echo "$prog was not installed" >&2; exit 1; }
    done
    # The fleet drop-in is shipped, and is not active by itself.
    test -f $out/share/strata/strata-fleet.conf || { echo "strata-fleet.conf was not installed" >&2; exit 1; }
    if find $out/lib/systemd -name '*fleet*' | grep -q .; then
      echo "a fleet drop-in is under lib/systemd, where every host would apply it" >&2
      exit 1
    fi
    # Only strata-ctl is meant for PATH.
    test "$(ls $bin/bin)" = strata-ctl || { echo "bin holds more than strata-ctl" >&2; exit 1; }

    sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' $out/lib/systemd/system/* |
      while read -r exe; do
        case $exe in
          "$out"/bin/*)
            test -x "$exe" || { echo "a unit starts $exe, which is not installed" >&2; exit 1; }
            ;;
          ${coreutils}/bin/kill) ;;
          *)
            echo "a unit starts $exe, outside this package" >&2
            exit 1
            ;;
        esac
      done

    runHook postInstallCheck
  '';

  # The NixOS VM tests, run on this very package (overrides included).
  passthru.tests = import ./nixos-tests {
    inherit testers;
    package = finalAttrs.finalPackage;
  };

  meta = {
    description = "Capability-based service runtime for one Linux host, native to systemd";
    homepage = "https://example.invalid/strata";
    outputsToInstall = [ "bin" ];
    license = lib.licenses.asl20;
    mainProgram = "strata-ctl";
    platforms = lib.platforms.linux;
  };
})
