//! The guest command line: whitespace-separated `key=value` words.

/// Iterates the `key=value` (or bare `key`) words of a command line.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    cmdline.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).map(|w| {
        match w.iter().position(|&b| b == b'=') {
            Some(i) => (&w[..i], Some(&w[i + 1..])),
            None => (w, None),
        }
    })
}

/// The value of the last `key=value` word for `key`.
pub fn get<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    words(cmdline).filter(|(k, _)| *k == key.as_bytes()).filter_map(|(_, v)| v).last()
}

/// `key=<decimal or 0x-hex>` as a number.
pub fn get_u64(cmdline: &[u8], key: &str) -> Option<u64> {
    parse_u64(get(cmdline, key)?)
}

/// Parses a decimal or `0x`-prefixed hexadecimal number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(radix)? as u64;
        acc.checked_mul(radix as u64)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_words_numbers_and_last_wins() {
        let c = b"  test=uart n=0x10 quiet n=12 bad=1z ";
        assert_eq!(get(c, "test"), Some(&b"uart"[..]));
        assert_eq!(get_u64(c, "n"), Some(12));
        assert_eq!(get_u64(c, "bad"), None);
        assert_eq!(get(c, "quiet"), None);
        assert!(words(c).any(|(k, v)| k == b"quiet" && v.is_none()));
        assert_eq!(parse_u64(b"0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"0x"), None);
    }
}
