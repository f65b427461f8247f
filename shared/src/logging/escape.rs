//! Text a client controls, made safe for any log sink: escaped and bounded.
//!
//! journald stores field values as given (newlines and all) and
//! `journalctl -o cat` prints them raw, so escaping cannot be left to a
//! sink: a client's path must be escaped before it is logged at all. This
//! is the one escaper: the audit records ([`crate::audit`]) and every log
//! line that quotes a client's value apply it before the event is emitted.
//!
//! The escaped form is the inside of a double-quoted string, unambiguous:
//! `\` → `\\`, `"` → `\"`, newline, carriage return and tab → `\n`, `\r`,
//! `\t`, every other [special](is_special) character → `\u{…}` (hex);
//! everything else as is. So it holds no control character, no line or
//! paragraph separator, no bidirectional control, no raw quote. A value
//! longer than its bound is cut (at a character boundary of the escaped
//! text) and ends with [`…[+N bytes]`](write_marker), N the bytes of the
//! original left out.

use std::borrow::Cow;
use std::io::Write as _;

/// The longest cut marker: `…[+` (5 bytes), up to 20 digits, ` bytes]`.
pub const MARKER_MAX: usize = 5 + 20 + 7;

/// Characters written as `\u{…}` escapes: every control character (C0,
/// DEL, C1 — U+009B starts terminal sequences on some terminals), the
/// Unicode line and paragraph separators that some log readers split on,
/// and the bidirectional-text controls that make a line display otherwise
/// than it reads.
pub fn is_special(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c == '"' || is_special(c)
}

/// `text` escaped and cut so that it is at most `max` bytes plus a
/// [`MARKER_MAX`]-byte marker. Borrowed when there is nothing to change
/// (the common case: a plain path).
pub fn escape(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len().min(max) + 16);
    escape_into(&mut out, text, max);
    // Only whole UTF-8 sequences and ASCII escapes were written.
    Cow::Owned(String::from_utf8(out).expect("escape writes UTF-8"))
}

/// Appends `text`, escaped, to `out`: at most `max` bytes of escaped text,
/// then the marker if anything was left out.
pub fn escape_into(out: &mut Vec<u8>, text: &str, max: usize) {
    let start = out.len();
    for (i, c) in text.char_indices() {
        let mut utf8 = [0u8; 4];
        let mut esc = [0u8; 10];
        let piece: &[u8] = match c {
            '\\' => b"\\\\",
            '"' => b"\\\"",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            c if is_special(c) => {
                let mut w = &mut esc[..];
                let _ = write!(w, "\\u{{{:x}}}", c as u32);
                let n = 10 - w.len();
                &esc[..n]
            }
            c => c.encode_utf8(&mut utf8).as_bytes(),
        };
        if out.len() - start + piece.len() > max {
            write_marker(out, text.len() - i);
            return;
        }
        out.extend_from_slice(piece);
    }
}

/// `…[+N bytes]`: N bytes of the original were left out.
fn write_marker(out: &mut Vec<u8>, dropped: usize) {
    let _ = write!(out, "…[+{dropped} bytes]");
}

/// Whether `text` is in the form [`escape`] writes: no character that
/// needs escaping except `\`, and every `\` the start of one of its
/// escapes. The tests' oracle for `escape`.
#[cfg(test)]
fn is_escaped(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\' | '"' | 'n' | 'r' | 't') => {}
                Some('u') => {
                    if chars.next() != Some('{') {
                        return false;
                    }
                    let mut digits = 0;
                    loop {
                        match chars.next() {
                            Some('}') if (1..=6).contains(&digits) => break,
                            Some(d) if d.is_ascii_hexdigit() && digits < 6 => digits += 1,
                            _ => return false,
                        }
                    }
                }
                _ => return false,
            },
            c if needs_escape(c) => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape("/srv/data/a b.txt", 64), Cow::Borrowed(_)));
        assert!(matches!(escape("é€", 64), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_quotes_and_backslashes_are_escaped() {
        let evil =
            "/x\nDec 01 14:02:00 vm strata-fs[1]: allow\r\t\"\\\x1b[2J\u{7f}\u{9b}\u{2028}\u{202e}";
        let got = escape(evil, 1024);
        assert_eq!(
            got,
            r#"/x\nDec 01 14:02:00 vm strata-fs[1]: allow\r\t\"\\\u{1b}[2J\u{7f}\u{9b}\u{2028}\u{202e}"#
        );
        assert!(!got.chars().any(is_special));
        assert!(is_escaped(&got));
    }

    /// Unambiguous: a literal backslash-n and a newline come out different.
    #[test]
    fn a_literal_escape_is_not_confused_with_the_character() {
        assert_eq!(escape("a\\nb", 64), r"a\\nb");
        assert_eq!(escape("a\nb", 64), r"a\nb");
    }

    #[test]
    fn long_text_is_cut_with_the_count_of_bytes_left_out() {
        let path = "a".repeat(1 << 20);
        let got = escape(&path, 256);
        assert_eq!(
            got,
            format!("{}…[+{} bytes]", "a".repeat(256), (1 << 20) - 256)
        );
        assert!(got.len() <= 256 + MARKER_MAX);
    }

    /// The bound is on the escaped text: a path of control characters (5
    /// bytes each once escaped) stays within it too, and an escape is never
    /// cut in half.
    #[test]
    fn the_bound_holds_after_escaping() {
        let path = "\u{1}".repeat(1000);
        let got = escape(&path, 256);
        let kept = 256 / 5;
        assert_eq!(
            got,
            format!("{}…[+{} bytes]", r"\u{1}".repeat(kept), 1000 - kept)
        );
        let mut multibyte = "b".repeat(9);
        multibyte.push('é');
        assert_eq!(
            escape(&multibyte, 10),
            format!("{}…[+2 bytes]", "b".repeat(9))
        );
    }

    #[test]
    fn every_output_is_within_bound_and_recognized_as_escaped() {
        let samples = [
            "",
            "plain",
            "\\",
            "\"",
            "\\u{",
            "\u{10ffff}\u{0}",
            "ünïcödé\n",
            "\\\\\"\"",
        ];
        for s in samples {
            for max in [0, 1, 2, 5, 7, 64] {
                let got = escape(s, max);
                assert!(got.len() <= max + MARKER_MAX, "{s:?} {max}: {got:?}");
                assert!(is_escaped(&got), "{s:?} {max}: {got:?}");
            }
        }
    }

    #[test]
    fn is_escaped_rejects_raw_and_malformed_text() {
        for s in [
            "a\nb",
            "say \"hi\"",
            r"back\slash",
            "end\\",
            r"\u{}",
            r"\u{1234567}",
            r"\u12",
            "\u{202e}",
        ] {
            assert!(!is_escaped(s), "{s:?}");
        }
        for s in [r"a\nb", r#"say \"hi\""#, r"\\", r"\u{1b}", "é", ""] {
            assert!(is_escaped(s), "{s:?}");
        }
    }
}
