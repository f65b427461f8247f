//! Wire protocol v1: frames, the request and response envelopes, error codes.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON
//! (see `api/protocol.md`). Requests are parsed without copying: the fields
//! stay borrowed from the frame buffer and `params` is kept as raw JSON until
//! the method that owns it deserializes it into its own type.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Largest frame payload, in bytes, accepted or sent.
pub const MAX_FRAME: usize = 1 << 20;
/// The only protocol version this code speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Deepest JSON nesting accepted anywhere in a frame.
pub const MAX_NESTING: usize = 128;

/// True when `json` nests arrays and objects deeper than `limit`. One pass
/// over the bytes, brackets inside strings ignored. serde_json only bounds
/// the depth of what it builds, not of what it skips, so this is what keeps
/// a JSON bomb from costing more than one scan.
pub fn nesting_exceeds(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The protocol's error codes. 1 to 5 keep the Go prototype's meaning; 6 to
/// 8 are numbered as in its v0.3.2 table.
///
/// The Rust names say what Strata means by a code; [`ErrorCode::name`] is
/// the `name` sent beside it on the wire, v0.3.2's. They differ for 6:
/// Strata answered 6 for "a limit was hit, retry later" before v0.3.2
/// named it `UNAVAILABLE`, and that meaning is kept (a v0.3.2 client reads
/// it as "retry later" too). Rate limits are 7, [`ErrorCode::RateLimited`],
/// whose wire name is `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Malformed frame or request. Wire name `INVALID_ARGUMENT`.
    InvalidRequest = 1,
    /// Missing, malformed, expired or revoked token. `UNAUTHENTICATED`.
    AuthenticationRequired = 2,
    /// Valid credentials that do not allow this request. `PERMISSION_DENIED`.
    PermissionDenied = 3,
    /// Path, handle or other target does not exist. `NOT_FOUND`.
    NotFound = 4,
    /// The service failed. `INTERNAL`.
    Internal = 5,
    /// A limit was hit (handles, connections, a leased file): retry later.
    /// `UNAVAILABLE`.
    ResourceExhausted = 6,
    /// A rate limit or quota of the capability was exceeded: slow down.
    /// `RESOURCE_EXHAUSTED`.
    RateLimited = 7,
    /// The request conflicts with the target's state. `CONFLICT`.
    Conflict = 8,
}

impl ErrorCode {
    /// Every code, in order.
    pub const ALL: [ErrorCode; 8] = [
        Self::InvalidRequest,
        Self::AuthenticationRequired,
        Self::PermissionDenied,
        Self::NotFound,
        Self::Internal,
        Self::ResourceExhausted,
        Self::RateLimited,
        Self::Conflict,
    ];

    /// The number sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number received on the wire, if it is one we know.
    pub fn from_u16(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_u16() == n)
    }

    /// The symbolic name sent beside the code (`"PERMISSION_DENIED"`), as
    /// in the prototype's v0.3.2 table. The only place names are made.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_ARGUMENT",
            Self::AuthenticationRequired => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::Internal => "INTERNAL",
            Self::ResourceExhausted => "UNAVAILABLE",
            Self::RateLimited => "RESOURCE_EXHAUSTED",
            Self::Conflict => "CONFLICT",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

/// An error answered to a request: a code, a message for humans and,
/// where a client can act on it, structured `details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("code {}: {message}", code.as_u16())]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// A JSON object sent as `details`; boxed so that `Result<_, Error>`
    /// stays small on the paths that never set it.
    pub details: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AuthenticationRequired, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// Code 6: a limit of the service was hit; retry later.
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, message)
    }
    /// Code 7: the capability's rate limit was exceeded; slow down.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }
    /// Code 8: the request conflicts with the target's current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// The same error with `details`, sent as the error's `details` object.
    /// A value that is not a JSON object is sent as `{"value": …}`, since
    /// the protocol promises an object.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        let map = match details {
            serde_json::Value::Object(map) => map,
            other => serde_json::Map::from_iter([("value".to_string(), other)]),
        };
        self.details = Some(Box::new(map));
        self
    }
}

/// Why a frame could not be read. Any of these ends the connection, because
/// the byte stream can no longer be trusted to be in step with the framing.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame too large: {0} bytes announced, at most {MAX_FRAME}")]
    TooLarge(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks a buffer for one whole frame. Returns the payload length when
/// `buf` holds the 4-byte header and the whole payload, `None` when more
/// bytes are needed, and an error as soon as the header announces more than
/// [`MAX_FRAME`] — before anything is allocated for it.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok((buf.len() >= 4 + len).then_some(len))
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads one frame from a blocking reader. `Ok(None)` means the peer closed
/// the connection cleanly between frames.
pub fn read_frame_blocking(r: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(payload))
}

/// Writes one frame to a blocking writer with a single `write_all`.
pub fn write_frame_blocking(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes is over the {MAX_FRAME}-byte limit",
                payload.len()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    encode_frame(payload, &mut buf);
    w.write_all(&buf)
}

/// The envelope as it arrives. Every field is optional and untyped here so
/// that a well-formed JSON object always parses; the checks that lead to a
/// code-1 answer on a connection that stays open happen in [`Request::parse`].
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    v: Option<&'a RawValue>,
    #[serde(borrow, default)]
    req_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    auth: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawAuth<'a> {
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

/// Why a payload could not be turned into a request.
#[derive(Debug)]
pub enum ParseError {
    /// Not UTF-8, not JSON, or not an object: answer code 1 and close.
    Unreadable(String),
    /// A readable envelope with a bad field: answer code 1 and keep going.
    Invalid {
        req_id: Option<Box<RawValue>>,
        error: Error,
    },
}

const EMPTY_REQ_ID: &str = "\"\"";
const EMPTY_PARAMS: &str = "{}";

/// One request, borrowed from the frame it came in.
#[derive(Debug)]
pub struct Request<'a> {
    /// Echoed back verbatim, as raw JSON.
    pub req_id: &'a RawValue,
    pub method: Cow<'a, str>,
    pub token: Option<Cow<'a, str>>,
    params: &'a RawValue,
}

impl<'a> Request<'a> {
    /// Parses and checks an envelope.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| ParseError::Unreadable("frame is not valid UTF-8".into()))?;
        // serde would read a JSON array into the struct field by field.
        if !text.trim_start().starts_with('{') {
            return Err(ParseError::Unreadable("frame is not a JSON object".into()));
        }
        if nesting_exceeds(payload, MAX_NESTING) {
            return Err(ParseError::Unreadable(format!(
                "JSON is nested deeper than {MAX_NESTING} levels"
            )));
        }
        let raw: RawEnvelope<'a> = serde_json::from_str(text)
            .map_err(|e| ParseError::Unreadable(format!("frame is not a JSON object: {e}")))?;
        let req_id = raw.req_id.unwrap_or_else(|| empty_raw(EMPTY_REQ_ID));
        let invalid = |message: String| ParseError::Invalid {
            req_id: Some(req_id.to_owned()),
            error: Error::invalid(message),
        };
        match raw.v.map(|v| v.get()) {
            Some("1") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "unsupported protocol version {other}: this server speaks v=1"
                )))
            }
            None => return Err(invalid("missing \"v\": send \"v\":1".into())),
        }
        let method: Cow<'a, str> = match raw.method {
            Some(m) => serde_json::from_str(m.get())
                .map_err(|_| invalid("\"method\" must be a string".into()))?,
            None => return Err(invalid("missing \"method\"".into())),
        };
        let token = match raw.auth {
            None => None,
            Some(a) if a.get() == "null" => None,
            // serde reads a struct from a JSON array too, field by field:
            // `"auth":["v2.public…"]` must not pass for an object.
            Some(a) if !a.get().starts_with('{') => {
                return Err(invalid(
                    "\"auth\" must be an object {\"token\": string}".into(),
                ))
            }
            Some(a) => {
                let auth: RawAuth<'a> = serde_json::from_str(a.get()).map_err(|_| {
                    invalid("\"auth\" must be an object {\"token\": string}".into())
                })?;
                auth.token
            }
        };
        let params = match raw.params {
            Some(p) if p.get() == "null" => empty_raw(EMPTY_PARAMS),
            Some(p) if p.get().starts_with('{') => p,
            Some(_) => return Err(invalid("\"params\" must be an object".into())),
            None => empty_raw(EMPTY_PARAMS),
        };
        Ok(Request {
            req_id,
            method,
            token,
            params,
        })
    }

    /// Deserializes `params` into the method's own parameter type. Missing or
    /// mistyped parameters become a code-1 error naming the problem.
    pub fn params<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        serde_json::from_str(self.params.get())
            .map_err(|e| Error::invalid(format!("bad params for {}: {e}", self.method)))
    }

    /// The raw `params` JSON.
    pub fn raw_params(&self) -> &'a str {
        self.params.get()
    }
}

fn empty_raw(text: &'static str) -> &'static RawValue {
    // Both constants are valid JSON, so this cannot fail.
    serde_json::from_str(text).expect("constant JSON")
}

/// Longest error message sent, in bytes. Messages may quote what the
/// client sent; this keeps an error response small whatever the request.
pub const MAX_ERROR_MESSAGE: usize = 2048;

/// Longest `details` object sent, in bytes of JSON; a larger one is left
/// out (the message still says what was wrong).
pub const MAX_ERROR_DETAILS: usize = 4096;

/// `message`, cut at a character boundary to [`MAX_ERROR_MESSAGE`] bytes.
fn bounded_message(message: &str) -> &str {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Builds response frames in a reusable buffer, so that a response costs no
/// allocation once the buffer has grown, and goes out in a single write.
#[derive(Default)]
pub struct ResponseBuf {
    buf: Vec<u8>,
}

impl ResponseBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a response frame: header placeholder and envelope up to the
    /// result. The caller appends the result JSON with [`Self::result_writer`]
    /// and then calls [`Self::finish_ok`].
    pub fn begin_ok(&mut self, req_id: &RawValue) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(b"{\"v\":1,\"req_id\":");
        self.buf.extend_from_slice(req_id.get().as_bytes());
        self.buf.extend_from_slice(b",\"ok\":true,\"result\":");
    }

    /// Where a handler serializes its result.
    pub fn result_writer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Serializes `value` as the result.
    pub fn write_result<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        serde_json::to_writer(&mut self.buf, value)
            .map_err(|e| Error::internal(format!("cannot encode result: {e}")))
    }

    /// Closes the envelope and fills in the length. Fails (leaving an error
    /// response in the buffer instead) when the result would not fit in a
    /// frame.
    pub fn finish_ok(&mut self, req_id: &RawValue) {
        self.buf.push(b'}');
        if self.buf.len() - 4 > MAX_FRAME {
            self.error(
                req_id,
                &Error::internal("result does not fit in one frame; ask for less"),
            );
            return;
        }
        self.patch_len();
    }

    /// Replaces whatever is in the buffer with an error response:
    /// `{"code", "name", "message", "details"?}`, the name derived from the
    /// code ([`ErrorCode::name`]), the message cut to [`MAX_ERROR_MESSAGE`]
    /// and `details` left out when it is over [`MAX_ERROR_DETAILS`].
    pub fn error(&mut self, req_id: &RawValue, err: &Error) {
        #[derive(Serialize)]
        struct Body<'a> {
            code: ErrorCode,
            name: &'static str,
            message: &'a str,
        }
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(b"{\"v\":1,\"req_id\":");
        self.buf.extend_from_slice(req_id.get().as_bytes());
        self.buf.extend_from_slice(b",\"ok\":false,\"error\":");
        serde_json::to_writer(
            &mut self.buf,
            &Body {
                code: err.code,
                name: err.code.name(),
                message: bounded_message(&err.message),
            },
        )
        .expect("error body serializes");
        // Reopen the body's object to add `details`: written in place, so
        // an error costs no allocation, and dropped again if too large.
        if let Some(details) = &err.details {
            self.buf.pop();
            let start = self.buf.len();
            self.buf.extend_from_slice(b",\"details\":");
            serde_json::to_writer(&mut self.buf, details).expect("details serialize");
            if self.buf.len() - start > MAX_ERROR_DETAILS {
                self.buf.truncate(start);
            }
            self.buf.push(b'}');
        }
        self.buf.push(b'}');
        if self.buf.len() - 4 > MAX_FRAME && req_id.get() != EMPTY_REQ_ID {
            // Only a huge req_id can do this; the response must still fit.
            return self.error_no_id(err);
        }
        self.patch_len();
    }

    /// An error response with the empty `req_id`, for unreadable frames.
    pub fn error_no_id(&mut self, err: &Error) {
        self.error(empty_raw(EMPTY_REQ_ID), err)
    }

    fn patch_len(&mut self) {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
    }

    /// The whole frame, header included.
    pub fn frame(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes the buffer holds allocated.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// When the response in the buffer is longer than `limit`, gives the
    /// buffer back, keeping `keep` bytes for the next one.
    pub fn shrink_above(&mut self, limit: usize, keep: usize) {
        if self.buf.len() > limit {
            self.buf.clear();
            self.buf.shrink_to(keep);
        }
    }
}

/// A response as a client sees it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Response {
    pub v: u64,
    #[serde(default)]
    pub req_id: serde_json::Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The `error` object of a response. `name` and `details` are optional:
/// services before v0.3.2's names, and the prototype's, send neither.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// A body for `code` as this code base would send it.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_u16(),
            name: Some(code.name().to_string()),
            message: message.into(),
            details: None,
        }
    }

    /// The error's name: the one sent, or else the one this code base
    /// gives its code (`None` for a code it does not know).
    pub fn name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or_else(|| ErrorCode::from_u16(self.code).map(ErrorCode::name))
    }
}

impl Response {
    /// The result, or the error as an [`Error`]-like value.
    pub fn into_result(self) -> Result<serde_json::Value, ErrorBody> {
        if self.ok {
            Ok(self.result.unwrap_or(serde_json::Value::Null))
        } else {
            Err(self.error.unwrap_or_else(|| {
                ErrorBody::new(ErrorCode::Internal, "response had ok:false and no error")
            }))
        }
    }

    /// Parses a response payload.
    pub fn parse(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Decodes the result into a type.
    pub fn result_as<T: DeserializeOwned>(&self) -> Option<T> {
        self.result
            .as_ref()
            .and_then(|r| serde_json::from_value(r.clone()).ok())
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "error {} {name}: {}", self.code, self.message),
            None => write!(f, "error {}: {}", self.code, self.message),
        }
    }
}

/// Builds a request payload (no frame header).
pub fn encode_request(
    req_id: &str,
    method: &str,
    token: Option<&str>,
    params: &serde_json::Value,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Auth<'a> {
        token: &'a str,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        v: u64,
        req_id: &'a str,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        auth: Option<Auth<'a>>,
        params: &'a serde_json::Value,
    }
    serde_json::to_vec(&Envelope {
        v: PROTOCOL_VERSION,
        req_id,
        method,
        auth: token.map(|token| Auth { token }),
        params,
    })
    .expect("request serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_response_fits_a_frame_whatever_the_client_sent() {
        let huge_id = serde_json::value::to_raw_value(&"i".repeat(MAX_FRAME)).unwrap();
        let mut out = ResponseBuf::new();
        out.error(
            &huge_id,
            &Error::invalid(format!(
                "unknown method {:?}",
                "\u{378}".repeat(MAX_FRAME / 2)
            )),
        );
        let frame = out.frame();
        assert!(frame.len() - 4 <= 4096, "{} bytes", frame.len());
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let r = Response::parse(&frame[4..]).unwrap();
        assert_eq!(r.req_id, "");
        assert!(r.error.unwrap().message.len() <= MAX_ERROR_MESSAGE);
    }

    use super::*;

    #[test]
    fn frame_len_waits_for_whole_frame() {
        let mut buf = Vec::new();
        encode_frame(b"{\"a\":1}", &mut buf);
        assert_eq!(frame_len(&buf[..3]).unwrap(), None);
        assert_eq!(frame_len(&buf[..8]).unwrap(), None);
        assert_eq!(frame_len(&buf).unwrap(), Some(7));
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let header = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(frame_len(&header), Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1));
        let header = u32::MAX.to_be_bytes();
        assert!(matches!(frame_len(&header), Err(FrameError::TooLarge(_))));
        let at_limit = (MAX_FRAME as u32).to_be_bytes();
        assert_eq!(frame_len(&at_limit).unwrap(), None);
    }

    #[test]
    fn blocking_codec_round_trips_and_detects_truncation() {
        let mut buf = Vec::new();
        write_frame_blocking(&mut buf, b"hello").unwrap();
        write_frame_blocking(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame_blocking(&mut r).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame_blocking(&mut r).unwrap().unwrap(), b"");
        assert!(read_frame_blocking(&mut r).unwrap().is_none());
        let mut short = &buf[..6];
        assert!(matches!(
            read_frame_blocking(&mut short),
            Err(FrameError::Truncated)
        ));
        let mut oversized = &u32::MAX.to_be_bytes()[..];
        assert!(matches!(
            read_frame_blocking(&mut oversized),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn parses_a_full_request() {
        let p = br#"{"v":1,"req_id":"7","method":"fs.read","auth":{"token":"t"},"params":{"handle":"h"},"extra":true}"#;
        let r = Request::parse(p).unwrap();
        assert_eq!(r.req_id.get(), "\"7\"");
        assert_eq!(r.method, "fs.read");
        assert_eq!(r.token.as_deref(), Some("t"));
        #[derive(Deserialize)]
        struct P {
            handle: String,
        }
        assert_eq!(r.params::<P>().unwrap().handle, "h");
    }

    #[test]
    fn defaults_missing_req_id_and_params() {
        let r = Request::parse(br#"{"v":1,"method":"fs.health"}"#).unwrap();
        assert_eq!(r.req_id.get(), "\"\"");
        assert_eq!(r.raw_params(), "{}");
        assert!(r.token.is_none());
    }

    #[test]
    fn unreadable_frames_are_distinguished_from_bad_fields() {
        for bad in [
            &b"\xff\xfe"[..],
            b"not json",
            b"[1,2]",
            b"42",
            b"{\"v\":1",
            b"",
        ] {
            assert!(
                matches!(Request::parse(bad), Err(ParseError::Unreadable(_))),
                "{:?} should be unreadable",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            &br#"{"v":2,"req_id":"a","method":"x.y"}"#[..],
            br#"{"req_id":"a","method":"x.y"}"#,
            br#"{"v":1,"req_id":"a"}"#,
            br#"{"v":1,"req_id":"a","method":5}"#,
            br#"{"v":1,"req_id":"a","method":"x.y","auth":"tok"}"#,
            br#"{"v":1,"req_id":"a","method":"x.y","params":[1]}"#,
            br#"{"v":1,"req_id":"a","method":"x.y","auth":["v2.public.x"]}"#,
        ] {
            match Request::parse(bad) {
                Err(ParseError::Invalid { req_id, error }) => {
                    assert_eq!(error.code, ErrorCode::InvalidRequest);
                    assert_eq!(req_id.unwrap().get(), "\"a\"");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn nesting_scan_ignores_brackets_in_strings() {
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[[[[[[["}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[[[["}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[[[1]]]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":[[1]]}"#, 3));
    }

    #[test]
    fn deep_nesting_is_unreadable() {
        let bomb = format!(
            "{{\"v\":1,\"params\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            Request::parse(bomb.as_bytes()),
            Err(ParseError::Unreadable(_))
        ));
    }

    #[test]
    fn response_buf_builds_ok_and_error_frames() {
        let req_id: &RawValue = serde_json::from_str("\"r1\"").unwrap();
        let mut rb = ResponseBuf::new();
        rb.begin_ok(req_id);
        rb.write_result(&serde_json::json!({"status":"ok"}))
            .unwrap();
        rb.finish_ok(req_id);
        let frame = rb.frame();
        assert_eq!(frame_len(frame).unwrap(), Some(frame.len() - 4));
        let resp = Response::parse(&frame[4..]).unwrap();
        assert!(resp.ok);
        assert_eq!(resp.req_id, "r1");
        assert_eq!(resp.result.unwrap()["status"], "ok");

        rb.error(req_id, &Error::denied("no"));
        let resp = Response::parse(&rb.frame()[4..]).unwrap();
        assert!(!resp.ok);
        assert_eq!(
            resp.error.unwrap(),
            ErrorBody::new(ErrorCode::PermissionDenied, "no")
        );
    }

    #[test]
    fn every_code_has_its_v032_name_and_round_trips() {
        let names: Vec<(u16, &str)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_u16(), c.name()))
            .collect();
        assert_eq!(
            names,
            [
                (1, "INVALID_ARGUMENT"),
                (2, "UNAUTHENTICATED"),
                (3, "PERMISSION_DENIED"),
                (4, "NOT_FOUND"),
                (5, "INTERNAL"),
                (6, "UNAVAILABLE"),
                (7, "RESOURCE_EXHAUSTED"),
                (8, "CONFLICT"),
            ]
        );
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(c));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(9), None);
        assert_eq!(Error::rate_limited("slow").code.as_u16(), 7);
        assert_eq!(Error::conflict("busy").code.as_u16(), 8);
        assert_eq!(Error::exhausted("full").code.as_u16(), 6);
    }

    #[test]
    fn error_frames_carry_name_and_details_when_given() {
        let req_id: &RawValue = serde_json::from_str("\"r\"").unwrap();
        let mut rb = ResponseBuf::new();
        rb.error(req_id, &Error::not_found("gone"));
        let text = std::str::from_utf8(&rb.frame()[4..]).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"req_id":"r","ok":false,"error":{"code":4,"name":"NOT_FOUND","message":"gone"}}"#
        );
        let e = Error::denied("no").with_details(serde_json::json!({"required": "fs.read"}));
        rb.error(req_id, &e);
        let body = Response::parse(&rb.frame()[4..]).unwrap().error.unwrap();
        assert_eq!(body.name.as_deref(), Some("PERMISSION_DENIED"));
        assert_eq!(
            body.details,
            Some(serde_json::json!({"required": "fs.read"}))
        );
        // Not an object: wrapped, since the protocol promises an object.
        let e = Error::conflict("x").with_details(serde_json::json!([1]));
        rb.error(req_id, &e);
        let body = Response::parse(&rb.frame()[4..]).unwrap().error.unwrap();
        assert_eq!(body.details, Some(serde_json::json!({"value": [1]})));
        // Too large: left out, the rest of the answer intact.
        let e = Error::invalid("big").with_details(serde_json::json!({"x": "y".repeat(5000)}));
        rb.error(req_id, &e);
        let frame = rb.frame();
        assert_eq!(frame_len(frame).unwrap(), Some(frame.len() - 4));
        let body = Response::parse(&frame[4..]).unwrap().error.unwrap();
        assert_eq!((body.code, body.details), (1, None));
    }

    #[test]
    fn clients_read_errors_with_and_without_name_and_details() {
        let old = br#"{"v":1,"req_id":"1","ok":false,"error":{"code":6,"message":"busy"}}"#;
        let body = Response::parse(old).unwrap().into_result().unwrap_err();
        assert_eq!(
            (body.name.as_deref(), body.name()),
            (None, Some("UNAVAILABLE"))
        );
        assert_eq!(body.to_string(), "error 6 UNAVAILABLE: busy");
        let new = br#"{"v":1,"req_id":"1","ok":false,"error":{"code":42,"name":"SOMETHING","message":"m","details":{"k":1}}}"#;
        let body = Response::parse(new).unwrap().into_result().unwrap_err();
        assert_eq!(body.name(), Some("SOMETHING"));
        assert_eq!(body.details, Some(serde_json::json!({"k": 1})));
        let unknown = br#"{"v":1,"ok":false,"error":{"code":42,"message":"m"}}"#;
        let body = Response::parse(unknown).unwrap().into_result().unwrap_err();
        assert_eq!(
            (body.name(), body.to_string().as_str()),
            (None, "error 42: m")
        );
    }

    #[test]
    fn oversized_result_becomes_an_error() {
        let req_id: &RawValue = serde_json::from_str("1").unwrap();
        let mut rb = ResponseBuf::new();
        rb.begin_ok(req_id);
        rb.write_result(&"x".repeat(MAX_FRAME)).unwrap();
        rb.finish_ok(req_id);
        let resp = Response::parse(&rb.frame()[4..]).unwrap();
        assert_eq!(resp.error.unwrap().code, 5);
    }
}
