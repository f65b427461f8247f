//! `fs.open`, `fs.read` and `fs.close`: files held open as handles.
//!
//! File system calls are made inline on the runtime thread rather than on
//! tokio's blocking pool: on the page-cached files fs serves, an `openat2`
//! or a `pread` takes a few microseconds, less than the hop to another
//! thread would cost. A slow disk would stall one worker for that long.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustix::fs::{FileType, OFlags};
use serde::Deserialize;
use strata_shared::capability::InvalidToken;
use strata_shared::paths::{self, OpenFileError};
use strata_shared::server::CallContext;
use strata_shared::wire::{Error, Request, ResponseBuf};

use crate::{json, FsService};

/// Default `size` of `fs.read`.
pub const DEFAULT_READ: u64 = 4096;
/// Largest `size` of `fs.read`: base64 of it, with the envelope, fits in a
/// 1 MiB frame with room to spare.
pub const MAX_READ: u64 = 131_072;

#[derive(Deserialize)]
pub struct OpenParams<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct HandleParams<'a> {
    #[serde(borrow)]
    handle: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct ReadParams<'a> {
    #[serde(borrow)]
    handle: Cow<'a, str>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, borrow)]
    encoding: Option<Cow<'a, str>>,
}

thread_local! {
    /// Where `fs.read` puts the bytes before encoding them into the
    /// response: one buffer per worker thread, grown once to the largest read
    /// and reused, instead of an allocation per request.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl FsService {
    /// `fs.open {path}` → `{handle}`.
    pub async fn open(
        &self,
        ctx: &CallContext,
        req: &Request<'_>,
        out: &mut ResponseBuf,
    ) -> Result<(), Error> {
        let p: OpenParams = req.params()?;
        let path: &str = &p.path;
        let cap = self.authorize(ctx, req, Some("open"), Some(path)).await?;
        let result = self.open_file(&cap, path);
        self.audit(ctx, "fs.open", &cap, Some(path), &result);
        let file = result?;
        let handle = self.handles.insert(&cap, file, path)?;
        let w = out.result_writer();
        w.extend_from_slice(b"{\"handle\":\"");
        w.extend_from_slice(handle.as_bytes());
        w.extend_from_slice(b"\"}");
        Ok(())
    }

    /// Resolves `path` under the capability's prefix and opens it, if it is
    /// a regular file fs may hand out.
    fn open_file(&self, cap: &crate::auth::Cap, path: &str) -> Result<File, Error> {
        let (dir, rel) = self.resolve(cap, path)?;
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
        // refused as not a regular file), and an open that would break
        // another process's lease fails at once instead of waiting for the
        // holder.
        let fd = paths::open_file_beneath(
            &*dir,
            &rel,
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
        )
        .map_err(|e| match e {
            OpenFileError::Leased => Error::exhausted(format!(
                "{path:?} is leased by another process (fcntl F_SETLEASE), which has not \
                 given it up; try again later"
            )),
            // open(2) of a Unix socket: not a file fs hands out (code 1, like
            // a FIFO or a device), not an internal error.
            OpenFileError::Kernel(rustix::io::Errno::NXIO) => Error::invalid(format!(
                "{path:?} is a socket; fs.open opens regular files only"
            )),
            OpenFileError::Kernel(other) => paths::errno_to_error(other, &format!("{path:?}")),
        })?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| Error::internal(format!("cannot stat {path:?}: {e}")))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => {
                return Err(Error::invalid(format!(
                    "{path:?} is a directory; use fs.list"
                )))
            }
            other => {
                return Err(Error::invalid(format!(
                    "{path:?} is not a regular file ({other:?}); fs.open opens regular files only"
                )))
            }
        }
        // A hard link inside the prefix to a file outside it is the same
        // inode, and no path resolution can tell: refuse files that have
        // more than one name unless the operator vouches for the tree.
        if !self.config.allow_hardlinks && st.st_nlink > 1 {
            return Err(Error::denied(format!(
                "{path:?}: file has multiple hard links ({}); fs refuses them because a link \
                 can name a file outside the prefix (set STRATA_FS_ALLOW_HARDLINKS=1 to allow)",
                st.st_nlink
            )));
        }
        Ok(File::from(fd))
    }

    /// `fs.read {handle, offset?, size?, encoding?}` →
    /// `{bytes_read, eof, data | data_b64}`.
    pub async fn read(
        &self,
        ctx: &CallContext,
        req: &Request<'_>,
        out: &mut ResponseBuf,
    ) -> Result<(), Error> {
        let p: ReadParams = req.params()?;
        let offset = p.offset.unwrap_or(0);
        let size = p.size.unwrap_or(DEFAULT_READ);
        if size > MAX_READ {
            return Err(Error::invalid(format!(
                "size {size} is over the limit of {MAX_READ} bytes per fs.read; read in pieces"
            )));
        }
        // pread refuses offsets whose end does not fit in a signed 64-bit
        // file position; say so instead of answering code 5.
        if offset > (i64::MAX as u64) - MAX_READ - 1 {
            return Err(Error::invalid(format!("offset {offset} is out of range")));
        }
        let base64 = match p.encoding.as_deref() {
            None | Some("utf8") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "encoding {other:?} is not \"utf8\" or \"base64\""
                )))
            }
        };
        let cap = self.authorize(ctx, req, Some("read"), None).await?;
        let handle = match self.handles.get(&p.handle, cap.id) {
            Ok(h) => h,
            Err(e) => {
                let e = self.revoked_meanwhile(&cap, e);
                self.audit(ctx, "fs.read", &cap, None, &Err::<(), _>(e.clone()));
                return Err(e);
            }
        };
        self.audit(ctx, "fs.read", &cap, Some(&handle.path), &Ok(()));
        read_into(
            &handle.file,
            offset,
            size as usize,
            base64,
            out.result_writer(),
        )
        .map_err(|e| Error::internal(format!("cannot read {:?}: {e}", handle.path)))
    }

    /// A handle also disappears when identity_sync closes the handles of a
    /// capability revoked after this request's `authorize`: answer that
    /// (code 2), not "no such handle" (code 4).
    fn revoked_meanwhile(&self, cap: &crate::auth::Cap, missing: Error) -> Error {
        if self.authority.revocations.contains(cap.id) {
            InvalidToken::Revoked(cap.cap_id().to_string()).into()
        } else {
            missing
        }
    }

    /// `fs.close {handle}` → `{status:"closed"}`. Any valid fs token of the
    /// owning capability may close it.
    pub async fn close(
        &self,
        ctx: &CallContext,
        req: &Request<'_>,
        out: &mut ResponseBuf,
    ) -> Result<(), Error> {
        let p: HandleParams = req.params()?;
        let cap = self.authorize(ctx, req, None, None).await?;
        let result = self
            .handles
            .close(&p.handle, cap.id)
            .map_err(|e| self.revoked_meanwhile(&cap, e));
        self.audit(ctx, "fs.close", &cap, None, &result);
        result?;
        out.result_writer()
            .extend_from_slice(b"{\"status\":\"closed\"}");
        Ok(())
    }
}

/// Reads up to `size` bytes at `offset` and writes the `fs.read` result
/// object to `out`.
///
/// One byte more than asked is read: if it arrives, the file goes on and
/// `eof` is false, with no extra `fstat`; if the read comes up short, the
/// end was reached.
pub fn read_into(
    file: &File,
    offset: u64,
    size: usize,
    base64: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    READ_BUF.with_borrow_mut(|buf| {
        if buf.len() < size + 1 {
            buf.resize(size + 1, 0);
        }
        let dst = &mut buf[..size + 1];
        let mut got = 0;
        while got < dst.len() {
            match file.read_at(&mut dst[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let eof = got <= size;
        let data = &dst[..got.min(size)];
        out.extend_from_slice(b"{\"bytes_read\":");
        json::write_u64(out, data.len() as u64);
        out.extend_from_slice(b",\"eof\":");
        json::write_bool(out, eof);
        match std::str::from_utf8(data) {
            Ok(text) if !base64 => {
                out.extend_from_slice(b",\"data\":");
                json::write_str(out, text);
            }
            _ => {
                out.extend_from_slice(b",\"data_b64\":\"");
                let start = out.len();
                out.resize(start + data.len().div_ceil(3) * 4, 0);
                let n = STANDARD
                    .encode_slice(data, &mut out[start..])
                    .map_err(io::Error::other)?;
                out.truncate(start + n);
                out.push(b'"');
            }
        }
        out.push(b'}');
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read(content: &[u8], offset: u64, size: usize, b64: bool) -> serde_json::Value {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        let mut out = Vec::new();
        read_into(&f, offset, size, b64, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn utf8_is_data_and_binary_is_base64() {
        let v = read("héllo\n\"q\"".as_bytes(), 0, 4096, false);
        assert_eq!(v["data"], "héllo\n\"q\"");
        assert_eq!(v["bytes_read"], 10);
        assert_eq!(v["eof"], true);
        assert!(v.get("data_b64").is_none());

        let bin: Vec<u8> = (0..=255u8).collect();
        let v = read(&bin, 0, 4096, false);
        assert_eq!(
            STANDARD.decode(v["data_b64"].as_str().unwrap()).unwrap(),
            bin
        );
        assert!(v.get("data").is_none());

        let v = read(b"plain", 0, 4096, true);
        assert_eq!(v["data_b64"], STANDARD.encode("plain"));
    }

    #[test]
    fn eof_is_exact() {
        let v = read(b"0123456789", 0, 4, false);
        assert_eq!(
            (v["data"].as_str(), v["eof"].as_bool()),
            (Some("0123"), Some(false))
        );
        let v = read(b"0123456789", 6, 4, false);
        assert_eq!(
            (v["data"].as_str(), v["eof"].as_bool()),
            (Some("6789"), Some(true))
        );
        let v = read(b"0123456789", 20, 4, false);
        assert_eq!(
            (v["bytes_read"].as_u64(), v["eof"].as_bool()),
            (Some(0), Some(true))
        );
        assert_eq!(v["data"], "");
        let v = read(b"0123456789", 0, 0, false);
        assert_eq!(
            (v["bytes_read"].as_u64(), v["eof"].as_bool()),
            (Some(0), Some(false))
        );
    }

    #[test]
    fn a_split_multibyte_character_falls_back_to_base64() {
        let v = read("é".as_bytes(), 0, 1, false);
        assert_eq!(
            STANDARD.decode(v["data_b64"].as_str().unwrap()).unwrap(),
            [0xc3]
        );
    }
}
