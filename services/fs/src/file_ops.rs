//! `fs.open`, `fs.read` and `fs.close`: the I/O on files held open as
//! handles. Everything was decided before these run ([`crate::policy`]):
//! they get the file already open, or the handle already found to be the
//! caller's.
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
use serde::Deserialize;
use strata_shared::capability::Capability;
use strata_shared::ids::format_handle;
use strata_shared::peer::PeerCred;
use strata_shared::wire::{Error, ResponseBuf};

use crate::handles::{self, Handle};
use crate::{json, Done, FsService};

/// Default `size` of `fs.read`.
pub const DEFAULT_READ: u64 = 4096;
/// Largest `size` of `fs.read`: base64 of it, with the envelope, fits in a
/// 1 MiB frame with room to spare.
pub const MAX_READ: u64 = 131_072;

#[derive(Deserialize)]
pub struct OpenParams<'a> {
    #[serde(borrow)]
    pub path: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct HandleParams<'a> {
    #[serde(borrow)]
    pub handle: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct ReadParams<'a> {
    #[serde(borrow)]
    pub handle: Cow<'a, str>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, borrow)]
    pub encoding: Option<Cow<'a, str>>,
}

/// An `fs.read`'s range and encoding, checked.
#[derive(Debug, Clone, Copy)]
pub struct ReadRange {
    pub offset: u64,
    pub size: usize,
    pub base64: bool,
}

impl ReadParams<'_> {
    /// The range and encoding asked for, with the defaults applied.
    ///
    /// # Errors
    /// Code 1 for a size over [`MAX_READ`], an offset out of range, or an
    /// unknown encoding.
    pub fn range(&self) -> Result<ReadRange, Error> {
        let offset = self.offset.unwrap_or(0);
        let size = self.size.unwrap_or(DEFAULT_READ);
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
        let base64 = match self.encoding.as_deref() {
            None | Some("utf8") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "encoding {other:?} is not \"utf8\" or \"base64\""
                )))
            }
        };
        Ok(ReadRange {
            offset,
            size: size as usize,
            base64,
        })
    }
}

thread_local! {
    /// Where `fs.read` puts the bytes before encoding them into the
    /// response: one buffer per worker thread, grown once to the largest read
    /// and reused, instead of an allocation per request.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl FsService {
    /// `fs.open {path}` → `{handle}`: keeps `file`, which the policy
    /// opened, as a new handle of `cap`.
    ///
    /// # Errors
    /// Code 6 at a handle limit.
    pub fn open(
        &self,
        cap: &Capability,
        file: File,
        path: &str,
        opener: PeerCred,
        out: &mut ResponseBuf,
    ) -> Result<Done, Error> {
        let id = self.handles.insert(cap, file, path, opener)?;
        let w = out.result_writer();
        w.extend_from_slice(b"{\"handle\":\"");
        w.extend_from_slice(format_handle(id).as_bytes());
        w.extend_from_slice(b"\"}");
        Ok(Done::Opened(id))
    }

    /// `fs.read {handle, offset?, size?, encoding?}` →
    /// `{bytes_read, eof, data | data_b64}`: one `pread` on the handle's
    /// file, counted in its tally.
    ///
    /// # Errors
    /// Code 5 when the read fails.
    pub fn read(
        &self,
        handle: &Handle,
        range: ReadRange,
        out: &mut ResponseBuf,
    ) -> Result<Done, Error> {
        let n = read_into(
            &handle.file,
            range.offset,
            range.size,
            range.base64,
            out.result_writer(),
        )
        .map_err(|e| Error::internal(format!("cannot read {:?}: {e}", handle.path)))?;
        Ok(if handle.tally(range.offset, n as u64) {
            Done::Tallied
        } else {
            Done::Answered
        })
    }

    /// `fs.close {handle}` → `{status:"closed"}`: ends handle `id` and
    /// returns what was read through it.
    ///
    /// # Errors
    /// Code 4 when a concurrent close or sweep ended it first.
    pub fn close(&self, id: u128, out: &mut ResponseBuf) -> Result<Done, Error> {
        let handle = self.handles.remove(id).ok_or_else(handles::missing)?;
        out.result_writer()
            .extend_from_slice(b"{\"status\":\"closed\"}");
        Ok(Done::Closed(handle.end()))
    }
}

/// Reads up to `size` bytes at `offset`, writes the `fs.read` result
/// object to `out` and returns how many bytes it holds.
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
) -> io::Result<usize> {
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
        Ok(data.len())
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
