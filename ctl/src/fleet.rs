//! `strata-ctl fleet init|endorse|verify`: a fleet's offline root key and
//! the endorsements it signs (docs/fleet.md). No service is asked: the root
//! key belongs on a machine that runs no Strata node at all. (`fleet
//! status` is the exception: it asks this node's fs.)
//!
//! The root key file is one JSON object,
//! `{"fleet","seed","public_key","kid"}`: the 32-byte seed (standard
//! base64, as identity's own `signing.key`) is the whole secret; the fleet
//! name binds the key to its fleet so that `endorse` cannot sign for
//! another one by mistake, and the public key and key id let an operator
//! tell files apart (`jq .kid`) and let the loader notice a damaged file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_compact::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_shared::capability::now;
use strata_shared::fleet::{self, FLEET_NAME_RULE};
use strata_shared::{random, token};

use crate::args::{FleetCommand, FleetEndorseArgs};
use crate::commands::{print_json, print_line};
use crate::failure::Failure;

/// Longest `--ttl`: ten years. An endorsement meant to last longer should
/// have none (it then lasts until revoked).
pub const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;
/// Largest root key file read; a real one is under 200 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// The root key file's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootKeyFile {
    fleet: String,
    seed: String,
    public_key: String,
    kid: String,
}

/// A root key loaded from its file, checked.
struct RootKey {
    fleet: String,
    keys: KeyPair,
}

/// Runs one `fleet` subcommand.
///
/// # Errors
/// A usage failure (exit 2) for bad arguments or an unusable key file,
/// [`Failure::File`] (exit 1) when a file cannot be read or written,
/// [`Failure::Refused`] (exit 3) when `verify` refuses the endorsement.
pub fn run(cmd: FleetCommand, pretty: bool) -> Result<(), Failure> {
    match cmd {
        FleetCommand::Init { out, fleet } => init(&out, &fleet, pretty),
        FleetCommand::Endorse(a) => endorse(&a),
        FleetCommand::Status => crate::commands::fleet_status_command(pretty),
        FleetCommand::Verify {
            root_public_key,
            fleet,
            endorsement,
        } => verify(&root_public_key, &fleet, &endorsement, pretty),
    }
}

fn check_fleet(name: &str) -> Result<(), Failure> {
    if fleet::is_fleet_name(name) {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "--fleet {name:?}: {FLEET_NAME_RULE}"
        )))
    }
}

/// `fleet init`: a fresh root key in a new file, created 0600 and never
/// over an existing file.
fn init(out: &Path, fleet_name: &str, pretty: bool) -> Result<(), Failure> {
    check_fleet(fleet_name)?;
    let seed = random::seed();
    let keys = token::keypair_from_seed(&seed);
    let content = RootKeyFile {
        fleet: fleet_name.into(),
        seed: STANDARD.encode(seed),
        public_key: fleet::encode_public_key(&keys.pk),
        kid: token::key_id(&keys.pk),
    };
    let text = format!(
        "{}\n",
        serde_json::to_string(&content).expect("the key file serializes")
    );
    write_new(out, text.as_bytes()).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Failure::Usage(format!(
            "--out {}: the file exists; fleet init never overwrites a root key: choose \
             another path, or move the old key away first if you really mean to replace it \
             (every endorsement it signed then stops verifying with the new key)",
            out.display()
        )),
        _ => Failure::File(format!("fleet init: cannot write {}: {e}", out.display())),
    })?;
    eprintln!(
        "strata-ctl: fleet init: wrote the root key of fleet {fleet_name:?} to {}; keep it \
         offline and backed up: whoever holds it can endorse any node",
        out.display()
    );
    print_json(
        &json!({
            "fleet": content.fleet,
            "public_key": content.public_key,
            "kid": content.kid,
            "file": out.display().to_string(),
        }),
        pretty,
    )
}

/// Creates `path` (O_EXCL, mode 0600 whatever the umask), writes `bytes`
/// and makes both the file and its directory entry durable. A file that
/// could not be written whole is removed.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = (|| {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Reads and checks a root key file: readable by its owner only (as ssh
/// demands of private keys), well formed, and consistent.
fn load_root_key(path: &Path) -> Result<RootKey, Failure> {
    let shown = path.display();
    let file = File::open(path)
        .map_err(|e| Failure::File(format!("--root-key {shown}: cannot open it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Failure::File(format!("--root-key {shown}: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Failure::Usage(format!(
            "--root-key {shown} has mode {mode:03o}: group or others can read the fleet root \
             key; run `chmod 600 {shown}` if it was never exposed, otherwise make a new root \
             (fleet init) and endorse every node again"
        )));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Failure::File(format!("--root-key {shown}: cannot read it: {e}")))?;
    let bad = |why: &str| {
        Failure::Usage(format!(
            "--root-key {shown} is not a fleet root key made by `strata-ctl fleet init` ({why})"
        ))
    };
    let content: RootKeyFile = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    if !fleet::is_fleet_name(&content.fleet) {
        return Err(bad("its fleet name is invalid"));
    }
    let seed: [u8; 32] = STANDARD
        .decode(content.seed.trim())
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("seed is not standard base64 of 32 bytes"))?;
    let keys = token::keypair_from_seed(&seed);
    if fleet::encode_public_key(&keys.pk) != content.public_key
        || token::key_id(&keys.pk) != content.kid
    {
        return Err(bad(
            "its public_key or kid does not match its seed: the file is damaged",
        ));
    }
    Ok(RootKey {
        fleet: content.fleet,
        keys,
    })
}

/// `fleet endorse`: prints the endorsement token on its own line.
fn endorse(a: &FleetEndorseArgs) -> Result<(), Failure> {
    let root = load_root_key(&a.root_key)?;
    if let Some(name) = &a.fleet {
        check_fleet(name)?;
        if *name != root.fleet {
            return Err(Failure::Usage(format!(
                "--fleet {name:?}, but {} is the root key of fleet {:?}: each fleet has its \
                 own root key",
                a.root_key.display(),
                root.fleet
            )));
        }
    }
    let node_pk = fleet::parse_public_key(&a.node_key)
        .map_err(|e| Failure::Usage(format!("--node-key: {e}")))?;
    if node_pk == root.keys.pk {
        return Err(Failure::Usage(
            "--node-key is the fleet's root public key: a node signs with its own key \
             (identity.pubkey), never with the root's"
                .into(),
        ));
    }
    let issued = now();
    let expires = match a.ttl {
        None => None,
        Some(ttl) if (1..=MAX_TTL_SECS).contains(&ttl) => Some(issued + ttl as i64),
        Some(_) => {
            return Err(Failure::Usage(format!(
                "--ttl must be from 1 to {MAX_TTL_SECS} seconds (ten years); leave it out \
                 for an endorsement that lasts until revoked"
            )))
        }
    };
    let token = fleet::endorse(
        &root.keys.sk,
        &root.fleet,
        &a.node_id,
        &node_pk,
        issued,
        expires,
    )
    .map_err(|e| Failure::Usage(format!("--node-id: {e}")))?;
    print_line(&token)
}

/// `fleet verify`: prints what the endorsement vouches for, or refuses.
fn verify(root_pk: &str, fleet_name: &str, file: &Path, pretty: bool) -> Result<(), Failure> {
    let root_pk = fleet::parse_public_key(root_pk)
        .map_err(|e| Failure::Usage(format!("--root-public-key: {e}")))?;
    check_fleet(fleet_name)?;
    let text = read_endorsement(file)?;
    let e = fleet::verify_endorsement(&root_pk, fleet_name, &text, now())
        .map_err(|e| Failure::Refused(e.to_string()))?;
    print_json(
        &json!({
            "fleet": e.fleet,
            "node_id": e.node_id,
            "kid": e.kid,
            "public_key": fleet::encode_public_key(&e.public_key),
            "issued": e.issued,
            "expires": e.expires,
        }),
        pretty,
    )
}

/// The endorsement in `file` (`-`: standard input), bounded.
fn read_endorsement(file: &Path) -> Result<String, Failure> {
    let limit = token::MAX_TOKEN_LEN as u64 + 64;
    let mut text = String::new();
    let read = if file == Path::new("-") {
        io::stdin().take(limit).read_to_string(&mut text)
    } else {
        File::open(file).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    read.map_err(|e| {
        Failure::File(format!(
            "fleet verify: cannot read the endorsement from {}: {e}",
            file.display()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(Failure::Usage(format!(
            "{} holds no endorsement: give the file `fleet endorse` wrote, or - for standard \
             input",
            file.display()
        )));
    }
    Ok(text)
}
