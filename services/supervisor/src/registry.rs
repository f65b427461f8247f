//! `registry.*`: the v0.3.2 service registry, answered from Strata's fixed
//! socket layout.
//!
//! In the prototype, services registered their endpoints at run time. In
//! Strata every service is declared as systemd units (a `.socket` and a
//! `.service`), so the layout is known before anything runs: the registry
//! only reports it, and `registry.register` is refused (code 3).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_shared::wire::Error;

/// The protocol version every endpoint speaks (`api_v` in v0.3.2).
pub const API_VERSION: u64 = 1;

/// One service of the layout.
pub struct Declared {
    pub service: &'static str,
    /// The socket unit that owns `$STRATA_RUNTIME_DIR/<service>.sock`.
    pub socket_unit: &'static str,
    /// The methods it serves, as its unknown-method message lists them.
    pub methods: &'static [&'static str],
}

/// Every service a client can reach, in the order `registry.list` gives.
pub const LAYOUT: &[Declared] = &[
    Declared {
        service: "identity",
        socket_unit: "strata-identity.socket",
        methods: &[
            "identity.issue",
            "identity.delegate",
            "identity.revoke",
            "identity.verify",
            "identity.introspect",
            "identity.pubkey",
            "identity.revocations",
            "identity.health",
            "identity.revoke_unit",
        ],
    },
    Declared {
        service: "fs",
        socket_unit: "strata-fs.socket",
        methods: &[
            "fs.open",
            "fs.read",
            "fs.list",
            "fs.stat",
            "fs.close",
            "fs.health",
        ],
    },
    Declared {
        service: "supervisor",
        socket_unit: "strata-supervisor.socket",
        methods: crate::status::SUPERVISOR_METHODS,
    },
    Declared {
        service: "registry",
        socket_unit: "strata-registry.socket",
        methods: crate::status::REGISTRY_METHODS,
    },
];

/// One endpoint, as `registry.resolve` answers it and `registry.list`
/// lists it: v0.3.2's `service`, `endpoint` and `api_v`, then what Strata
/// adds.
#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub service: &'static str,
    /// `unix://` and the socket's absolute path.
    pub endpoint: String,
    pub api_v: u64,
    /// The socket's path alone.
    pub socket: PathBuf,
    /// The systemd unit that owns the socket.
    pub unit: &'static str,
    pub methods: &'static [&'static str],
}

impl Endpoint {
    fn of(d: &Declared, runtime_dir: &Path) -> Self {
        let socket = runtime_dir.join(format!("{}.sock", d.service));
        Self {
            service: d.service,
            endpoint: format!("unix://{}", socket.display()),
            api_v: API_VERSION,
            socket,
            unit: d.socket_unit,
            methods: d.methods,
        }
    }
}

/// `registry.list`'s result.
#[derive(Debug, Serialize)]
pub struct List {
    pub services: Vec<Endpoint>,
}

/// Every endpoint of the layout under `runtime_dir`.
pub fn list(runtime_dir: &Path) -> List {
    List {
        services: LAYOUT
            .iter()
            .map(|d| Endpoint::of(d, runtime_dir))
            .collect(),
    }
}

/// `registry.resolve`'s parameters: v0.3.2 names the service `service`;
/// `name` (as `supervisor.svc.*` call it) is accepted too.
#[derive(Debug, Deserialize)]
pub struct ResolveParams {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The endpoint of the service named in `params`.
///
/// # Errors
/// Code 1 when no name (or two different names) is given, code 4 when no
/// service has that name.
pub fn resolve(params: ResolveParams, runtime_dir: &Path) -> Result<Endpoint, Error> {
    let name = match (params.service, params.name) {
        (Some(s), Some(n)) if s != n => {
            return Err(Error::invalid(format!(
                "registry.resolve: `service` ({s:?}) and `name` ({n:?}) differ; give one"
            )))
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            return Err(Error::invalid(
                "registry.resolve needs `service` (a string), e.g. {\"service\": \"fs\"}",
            ))
        }
    };
    LAYOUT
        .iter()
        .find(|d| d.service == name)
        .map(|d| Endpoint::of(d, runtime_dir))
        .ok_or_else(|| Error::not_found(format!("no service named {name:?}; {}", known())))
}

/// Why `registry.register` is refused.
pub fn register_refused() -> Error {
    Error::denied(format!(
        "registry.register is not supported: Strata services are declared as systemd units \
         (a .socket and a .service under strata.target), not registered at run time; \
         install a unit instead. {}",
        known()
    ))
}

fn known() -> String {
    let names: Vec<&str> = LAYOUT.iter().map(|d| d.service).collect();
    format!("the services are {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::wire::ErrorCode;

    fn by(service: Option<&str>, name: Option<&str>) -> ResolveParams {
        ResolveParams {
            service: service.map(String::from),
            name: name.map(String::from),
        }
    }

    #[test]
    fn resolve_gives_the_socket_under_the_runtime_dir() {
        let e = resolve(by(Some("fs"), None), Path::new("/run/strata")).unwrap();
        assert_eq!(e.endpoint, "unix:///run/strata/fs.sock");
        assert_eq!(e.socket, Path::new("/run/strata/fs.sock"));
        assert_eq!(e.unit, "strata-fs.socket");
        assert!(e.methods.contains(&"fs.read"));
        let e = resolve(by(None, Some("registry")), Path::new("/tmp/x")).unwrap();
        assert_eq!(e.endpoint, "unix:///tmp/x/registry.sock");
    }

    #[test]
    fn bad_names_are_code_1_or_4() {
        let dir = Path::new("/run/strata");
        assert_eq!(
            resolve(by(Some("nope"), None), dir).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            resolve(by(None, None), dir).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            resolve(by(Some("fs"), Some("identity")), dir)
                .unwrap_err()
                .code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn list_names_every_socket_once() {
        let l = list(Path::new("/run/strata"));
        let names: Vec<_> = l.services.iter().map(|e| e.service).collect();
        assert_eq!(names, ["identity", "fs", "supervisor", "registry"]);
        assert_eq!(register_refused().code, ErrorCode::PermissionDenied);
    }
}
