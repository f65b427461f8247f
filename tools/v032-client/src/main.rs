//! `strata-v032 SOCKET METHOD [PARAMS-JSON]`: one request as a client of
//! the prototype's v0.3.2 protocol would send it, and its response printed
//! as one JSON line.
//!
//! Written from v0.3.2's `api/protocol.md` alone (Gao-OS/StrataOS at
//! 32f3985) and deliberately sharing no code with Strata: a 4-byte
//! big-endian length and a JSON payload of at most 1 MiB, the envelope
//! `{v, req_id, method, auth?, params}`, and sockets under
//! `$STRATA_RUNTIME_DIR` (default `/run/strata`) named after the service.
//! The token, when there is one, comes from `$STRATA_TOKEN`. Exits 0 when a
//! response arrived (even an error response), 1 otherwise.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

/// v0.3.2's maximum frame size.
const MAX_FRAME: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, method, params) = match args.as_slice() {
        [socket, method] => (socket, method, json!({})),
        [socket, method, params] => match serde_json::from_str(params) {
            Ok(p) => (socket, method, p),
            Err(e) => fail(&format!("PARAMS is not JSON: {e}")),
        },
        _ => fail("usage: strata-v032 SOCKET METHOD [PARAMS-JSON]  (SOCKET: identity, fs, supervisor, registry, or a path)"),
    };
    match call(&socket_path(socket), method, params) {
        Ok(response) => println!("{response}"),
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("strata-v032: {msg}");
    std::process::exit(1)
}

/// `$STRATA_RUNTIME_DIR/<name>.sock`, or `name` itself when it is a path.
fn socket_path(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let dir = std::env::var_os("STRATA_RUNTIME_DIR").unwrap_or_else(|| "/run/strata".into());
    PathBuf::from(dir).join(format!("{name}.sock"))
}

/// Sends one request and reads one response frame.
fn call(socket: &PathBuf, method: &str, params: Value) -> Result<Value, String> {
    let mut request = json!({"v": 1, "req_id": "v032-1", "method": method, "params": params});
    if let Ok(token) = std::env::var("STRATA_TOKEN") {
        request["auth"] = json!({ "token": token });
    }
    let payload = request.to_string().into_bytes();
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    s.write_all(&frame).map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| format!("read: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("response frame of {len} bytes exceeds 1 MiB"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("response is not JSON: {e}"))
}
