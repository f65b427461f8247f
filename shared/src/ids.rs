//! The two kinds of 128-bit identifier on the wire, parsed in one place:
//! capability ids (`cap_id`, a token's `jti`) are 32 lowercase hex digits,
//! and fs handles are `h-` followed by the same 32 digits.
//!
//! Parsing is strict (no uppercase, no sign, no other length), so that one
//! number has exactly one spelling and a text that differs from the one fs
//! or identity wrote never names the same capability or handle.

/// What every handle id starts with.
pub const HANDLE_PREFIX: &str = "h-";

/// Parses a capability id (exactly 32 lowercase hex digits) into its 128
/// bits.
pub fn parse_cap_id(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// True for a well-formed capability id (see [`parse_cap_id`]).
pub fn is_cap_id(s: &str) -> bool {
    parse_cap_id(s).is_some()
}

/// Formats a capability id the way tokens spell it: 32 lowercase hex
/// digits.
pub fn format_cap_id(id: u128) -> String {
    format!("{id:032x}")
}

/// Parses a handle id: [`HANDLE_PREFIX`] and a capability id's 32 digits.
pub fn parse_handle(s: &str) -> Option<u128> {
    parse_cap_id(s.strip_prefix(HANDLE_PREFIX)?)
}

/// Formats a handle id the way clients see it.
pub fn format_handle(id: u128) -> String {
    format!("{HANDLE_PREFIX}{}", format_cap_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn cap_ids_parse_strictly() {
        assert_eq!(parse_cap_id(CAP), Some(0x00112233445566778899aabbccddeeff));
        assert_eq!(format_cap_id(0x00112233445566778899aabbccddeeff), CAP);
        assert_eq!(parse_cap_id(&format_cap_id(7)), Some(7));
        assert!(is_cap_id(CAP));
        for bad in [
            "00112233445566778899AABBCCDDEEFF",
            "+0112233445566778899aabbccddeeff",
            "0123",
            "",
            "00112233445566778899aabbccddeeff0",
        ] {
            assert_eq!(parse_cap_id(bad), None, "{bad:?}");
            assert!(!is_cap_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn handles_round_trip_and_parse_strictly() {
        for id in [0, 12345, u128::MAX] {
            let h = format_handle(id);
            assert_eq!(h.len(), 34, "{h}");
            assert_eq!(parse_handle(&h), Some(id));
        }
        assert_eq!(
            parse_handle(&format!("h-{CAP}")),
            Some(0x00112233445566778899aabbccddeeff)
        );
        for bad in [
            "h-nope",
            CAP,
            "H-00112233445566778899aabbccddeeff",
            "h-",
            "",
        ] {
            assert_eq!(parse_handle(bad), None, "{bad:?}");
        }
    }
}
