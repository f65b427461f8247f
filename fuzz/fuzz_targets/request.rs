//! Request-envelope parsing (`wire::Request::parse`) and the step after it,
//! `Request::params` into the parameter types the services use (imported
//! from strata-identity and strata-fs, so they cannot drift).
//!
//! Invariants: no panic on any bytes; an accepted request's `req_id` is
//! echoed verbatim into a response frame that is itself valid JSON with the
//! same `req_id`; `params` is always a JSON object; whatever is accepted is
//! JSON that serde_json accepts too, no deeper than 128 levels.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use strata_fs::params::{HandleParams, OpenParams, PathParams, ReadParams};
use strata_identity::params::{IssueParams, RevocationsParams, RevokeParams, VerifyParams};
use strata_shared::wire::{self, Error, ParseError, Request, Response, ResponseBuf, MAX_NESTING};

fn check_echo(req_id: &serde_json::value::RawValue, frame: &[u8]) {
    assert_eq!(
        wire::frame_len(frame).unwrap(),
        Some(frame.len() - 4),
        "response frame has a wrong length"
    );
    let text = std::str::from_utf8(&frame[4..]).expect("response is UTF-8");
    assert!(text.contains(req_id.get()), "req_id not echoed verbatim");
    // serde_json's Value cannot hold every number RawValue accepts (1e400),
    // so compare only where the id itself parses as a Value.
    if let Ok(id) = serde_json::from_str::<Value>(req_id.get()) {
        let resp = Response::parse(&frame[4..]).expect("response parses");
        assert_eq!(resp.req_id, id);
    }
}

fuzz_target!(|data: &[u8]| {
    match Request::parse(data) {
        Ok(req) => {
            // Accepted only if it is JSON serde_json agrees on, within depth.
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok());
            assert!(!wire::nesting_exceeds(data, MAX_NESTING));
            assert!(req.raw_params().starts_with('{'));
            // The services' own parameter types, not copies of them.
            let _ = req.params::<OpenParams>();
            let _ = req.params::<PathParams>();
            let _ = req.params::<HandleParams>();
            let _ = req.params::<ReadParams>();
            let _ = req.params::<IssueParams>();
            let _ = req.params::<RevokeParams>();
            let _ = req.params::<VerifyParams>();
            let _ = req.params::<RevocationsParams>();
            let v: Result<Value, Error> = req.params();
            if let Ok(v) = v {
                assert!(v.is_object());
            }
            let mut out = ResponseBuf::new();
            out.begin_ok(req.req_id);
            out.write_result(&serde_json::json!({"method": req.method, "token": req.token}))
                .unwrap();
            out.finish_ok(req.req_id);
            check_echo(req.req_id, out.frame());
            out.error(req.req_id, &Error::denied("no"));
            check_echo(req.req_id, out.frame());
        }
        Err(ParseError::Invalid { req_id, error }) => {
            assert_eq!(error.code, wire::ErrorCode::InvalidRequest);
            let mut out = ResponseBuf::new();
            match req_id {
                Some(id) => {
                    out.error(&id, &error);
                    check_echo(&id, out.frame());
                }
                None => out.error_no_id(&error),
            }
        }
        Err(ParseError::Unreadable(msg)) => {
            let mut out = ResponseBuf::new();
            out.error_no_id(&Error::invalid(msg));
            let resp = Response::parse(&out.frame()[4..]).expect("error response parses");
            assert_eq!(resp.req_id, "");
        }
    }
});
