{
  description = "Strata: a capability-based service runtime for systemd and NixOS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # pkgs.strata, for configurations that prefer an overlay.
      overlays.default = final: _prev: {
        strata = final.callPackage ./package.nix { };
      };

      packages = forAllSystems (pkgs: {
        strata = pkgs.callPackage ./package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.strata;
      });

      # `imports = [ strata.nixosModules.default ];` then
      # `services.strata.enable = true;`. The package is built from the
      # configuration's own pkgs (`pkgs.callPackage ./package.nix { }`), so
      # a missing `inputs.strata.inputs.nixpkgs.follows` costs no second
      # nixpkgs.
      nixosModules.default = {
        # Imported more than once (say as .default and as .strata), it
        # counts once.
        key = "${toString ./flake.nix}#nixosModules.default";
        _file = "${toString ./flake.nix}#nixosModules.default";
        imports = [ ./modules/strata.nix ];
      };
      nixosModules.strata = self.nixosModules.default;

      # `nix flake check`: the package (its checkPhase runs the workspace's
      # tests) and every VM test of nixos-tests/ (its passthru.tests).
      checks = forAllSystems (
        pkgs:
        let
          strata = self.packages.${pkgs.stdenv.hostPlatform.system}.strata;
        in
        {
          package = strata;
        }
        // strata.passthru.tests
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            rust-analyzer
            jq
          ];
          # For rust-analyzer's view of the standard library.
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });

      # nixfmt (RFC 166 style); nixfmt-tree formats the whole tree on a bare
      # `nix fmt`, older nixpkgs only have nixfmt-rfc-style.
      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree or pkgs.nixfmt-rfc-style);
    };
}
