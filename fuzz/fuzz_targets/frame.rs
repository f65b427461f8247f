//! The frame decoder, three ways over the same bytes: the buffer check
//! `wire::frame_len`, the blocking reader `wire::read_frame_blocking` (fed in
//! fuzzer-chosen chunk sizes), and the server's own async
//! `server::Connection::read_frame` over a real socket pair. All three must
//! agree frame by frame, never hand out a frame over 1 MiB, and never panic.

#![no_main]

use std::io::{self, Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_shared::admission::{Admission, Bounds};
use strata_shared::server::{Connection, ReadError};
use strata_shared::wire::{self, FrameError, MAX_FRAME};

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Frame(Vec<u8>),
    TooLarge(usize),
    Truncated,
    End,
}

/// A reader that returns at most `sizes[i]` bytes on its i-th call.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    call: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = match self.sizes.get(self.call % self.sizes.len().max(1)) {
            Some(&s) => (s as usize).max(1),
            None => usize::MAX,
        };
        self.call += 1;
        let n = limit.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The reference: walk the buffer with `frame_len` alone.
fn by_frame_len(data: &[u8]) -> Vec<Step> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match wire::frame_len(rest) {
            Ok(Some(len)) => {
                assert!(len <= MAX_FRAME);
                assert_eq!(
                    len,
                    u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize
                );
                out.push(Step::Frame(rest[4..4 + len].to_vec()));
                rest = &rest[4 + len..];
            }
            Ok(None) => {
                out.push(if rest.is_empty() {
                    Step::End
                } else {
                    Step::Truncated
                });
                return out;
            }
            Err(FrameError::TooLarge(n)) => {
                assert!(n > MAX_FRAME);
                out.push(Step::TooLarge(n));
                return out;
            }
            Err(e) => panic!("frame_len cannot fail with {e}"),
        }
    }
}

fn by_blocking_reader(data: &[u8], sizes: &[u8]) -> Vec<Step> {
    let mut r = Chunked {
        data,
        sizes,
        call: 0,
    };
    let mut out = Vec::new();
    loop {
        match wire::read_frame_blocking(&mut r) {
            Ok(Some(f)) => {
                assert!(f.len() <= MAX_FRAME);
                out.push(Step::Frame(f));
            }
            Ok(None) => {
                out.push(Step::End);
                return out;
            }
            Err(FrameError::TooLarge(n)) => {
                out.push(Step::TooLarge(n));
                return out;
            }
            Err(FrameError::Truncated) => {
                out.push(Step::Truncated);
                return out;
            }
            Err(e) => panic!("in-memory reader failed: {e}"),
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The server's reader, over a socket pair the input was written into.
fn by_server_connection(data: &[u8]) -> Vec<Step> {
    let (mut w, r) = std::os::unix::net::UnixStream::pair().unwrap();
    w.write_all(data).unwrap();
    w.shutdown(std::net::Shutdown::Write).unwrap();
    r.set_nonblocking(true).unwrap();
    runtime().block_on(async move {
        let stream = tokio::net::UnixStream::from_std(r).unwrap();
        // A privileged caller is held to no frame-memory budget: this target
        // is about the decoder, not admission.
        let admission = Admission::new(Bounds {
            max_connections: 1,
            per_uid: 1,
            reserved: 0,
            memory_per_uid: 0,
            memory_total: 0,
        });
        let ticket = admission.admit(0, true).expect("one privileged connection");
        let mut conn = Connection::new(stream, ticket);
        let mut out = Vec::new();
        loop {
            let t = Duration::from_secs(30);
            match conn.read_frame(t, t).await {
                Ok(Some(f)) => {
                    assert!(f.len() <= MAX_FRAME);
                    out.push(Step::Frame(f.to_vec()));
                }
                Ok(None) => {
                    out.push(Step::End);
                    break;
                }
                Err(ReadError::Frame(FrameError::TooLarge(n))) => {
                    out.push(Step::TooLarge(n));
                    break;
                }
                Err(ReadError::Frame(FrameError::Truncated)) => {
                    out.push(Step::Truncated);
                    break;
                }
                Err(e) => panic!("socket pair read failed: {e}"),
            }
        }
        drop(w);
        out
    })
}

fuzz_target!(|input: &[u8]| {
    // The first byte says how many of the next bytes are chunk sizes for the
    // blocking reader; the rest is the byte stream.
    let (sizes, data) = match input.split_first() {
        Some((&n, rest)) => rest.split_at((n as usize % 8).min(rest.len())),
        None => (&[][..], input),
    };
    let reference = by_frame_len(data);
    assert_eq!(by_blocking_reader(data, sizes), reference);
    // A socket pair's buffer holds ~200 KiB; larger inputs would block the
    // writer, and libFuzzer's inputs are far smaller anyway.
    if data.len() <= 64 * 1024 {
        assert_eq!(by_server_connection(data), reference);
    }
    // Encoding what was decoded gives the same bytes back.
    let mut again = Vec::new();
    for s in &reference {
        if let Step::Frame(f) = s {
            wire::encode_frame(f, &mut again);
        }
    }
    assert_eq!(&data[..again.len()], &again[..]);
});
