//! The two pieces of JSON output on fs's hot path, written straight into the
//! response buffer: strings and unsigned integers.
//!
//! `fs.read` answers with up to 128 KiB of text as one JSON string, and
//! escaping it byte by byte was most of the cost of a large read. Here 16
//! bytes are checked at a time (SSE2, which every x86-64 has; 8 at a time
//! elsewhere) for anything that needs escaping (a control character, `"` or
//! `\`), and runs of plain text are copied whole. The output is the same as
//! serde_json's (the tests compare them).

/// Bytes that must be escaped inside a JSON string: `None` for plain ones.
const fn escape_of(b: u8) -> Option<u8> {
    match b {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        0x08 => Some(b'b'),
        0x0c => Some(b'f'),
        0..=0x1f => Some(b'u'),
        _ => None,
    }
}

/// How many bytes [`first_special`] looks at.
#[cfg(target_arch = "x86_64")]
const WORD: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
const WORD: usize = 8;

/// Where, in the [`WORD`] bytes at `bytes[i..]`, the first byte that needs
/// escaping is, if any.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn first_special(bytes: &[u8], i: usize) -> Option<usize> {
    use std::arch::x86_64::*;
    assert!(i + WORD <= bytes.len());
    // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics are
    // always available; the load reads 16 bytes at `i`, inside the slice by
    // the assertion above, and tolerates any alignment.
    let mask = unsafe {
        let v = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // v <= 0x1f, unsigned: min(v, 0x1f) == v.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    };
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn first_special(bytes: &[u8], i: usize) -> Option<usize> {
    first_special_swar(bytes, i)
}

/// The portable [`first_special`], eight bytes in a `u64`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn first_special_swar(bytes: &[u8], i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let w = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    // Per byte: below 0x20, or equal to `"` or `\`. The lowest flagged byte
    // is exact (borrows only run upwards), and it is the only one used.
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mask =
        (w.wrapping_sub(LO * 0x20) & !w & HI) | zero(w ^ (LO * 0x22)) | zero(w ^ (LO * 0x5c));
    (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize)
}

#[inline]
fn push_escape(out: &mut Vec<u8>, b: u8, kind: u8) {
    if kind == b'u' {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 15) as usize],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', kind]);
    }
}

/// Appends `s` to `out` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut plain_from = 0;
    let mut i = 0;
    while i + WORD <= bytes.len() {
        match first_special(bytes, i) {
            None => i += WORD,
            Some(at) => {
                let at = i + at;
                let b = bytes[at];
                out.extend_from_slice(&bytes[plain_from..at]);
                push_escape(out, b, escape_of(b).expect("a special byte"));
                plain_from = at + 1;
                i = at + 1;
            }
        }
    }
    for (j, &b) in bytes[i..].iter().enumerate() {
        if let Some(kind) = escape_of(b) {
            out.extend_from_slice(&bytes[plain_from..i + j]);
            push_escape(out, b, kind);
            plain_from = i + j + 1;
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// Appends `true` or `false`.
pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_match_serde_json() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        let mut cases = vec![
            String::new(),
            "plain".into(),
            "exactly8".into(),
            "quote\" back\\slash".into(),
            "héllo wörld ✓ 𝄞".into(),
            "\u{7f}\u{80}\u{2028}".into(),
            every_ascii.clone(),
            every_ascii.repeat(3),
        ];
        // Every special byte at every offset within a word.
        for special in ['"', '\\', '\n', '\0', '\u{1f}', ' ', '!', '#', '['] {
            for pos in 0..17 {
                let mut s = "abcdefghijklmnopq".to_string();
                s.replace_range(pos..pos + 1, &special.to_string());
                cases.push(s);
            }
        }
        for s in &cases {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn both_scanners_find_the_first_special_byte() {
        for special in [b'"', b'\\', b'\n', 0u8, 0x1f] {
            for pos in 0..16 {
                let mut block = *b"abcdefghijklmnop";
                block[pos] = special;
                if pos < 8 {
                    block[pos + 1..].fill(b'"');
                }
                assert_eq!(first_special(&block, 0), Some(pos));
                let swar = first_special_swar(&block, 0)
                    .or_else(|| first_special_swar(&block, 8).map(|p| p + 8));
                assert_eq!(swar, Some(pos), "{special} at {pos}");
            }
        }
        for plain in [
            *b"abcdefghijklmnop",
            [0x20; 16],
            [0x7f; 16],
            [0xe9; 16],
            [0x5b; 16],
            [0x21; 16],
            [0x23; 16],
        ] {
            assert_eq!(first_special(&plain, 0), None);
            assert_eq!(first_special_swar(&plain, 0), None);
            assert_eq!(first_special_swar(&plain, 8), None);
        }
    }

    #[test]
    fn integers_and_bools() {
        for n in [0, 1, 9, 10, 4096, 131_072, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut out = Vec::new();
        write_bool(&mut out, true);
        write_bool(&mut out, false);
        assert_eq!(out, b"truefalse");
    }
}
