//! Tags of the fast path: where a tag ends, and the few attributes the fast
//! path acts on (`id`, `nonce`, `charset`, `http-equiv`), read by lol_html's
//! attribute states.

/// `memchr`, with a word-at-a-time scan over the first bytes: between tags
/// and inside them the distances are mostly short, where memchr's set-up
/// dominates and a byte loop costs four or five instructions a byte.
#[inline]
pub(super) fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    const SHORT: usize = 32;
    let head = &hay[..hay.len().min(SHORT)];
    if let Some(i) = first_of(head, |w| matches(w, needle)) {
        return Some(i);
    }
    if hay.len() <= SHORT {
        return None;
    }
    memchr::memchr(needle, &hay[SHORT..]).map(|i| i + SHORT)
}

/// The first byte of `hay` that may be a `>`, a quote or `=`. Two byte
/// classes are tested, `<=>?` and `"#&'` (each one compare after masking two
/// bits), rather than four bytes: that cut a 64 KB page's scan time by about
/// 7 %. The caller passes over the `<`, `?`, `#` and `&` it also finds.
#[inline]
fn find_special(hay: &[u8]) -> Option<usize> {
    first_of(hay, |w| {
        matches(w & !(LOW * 3), b'<') | matches(w & !(LOW * 5), b'"')
    })
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` equal to `b`. Bits above the first match
/// may be false (a borrow runs on), but the lowest set bit is always a true
/// match, and that is the only one read; so an OR of such masks finds the
/// first byte that matches any of them.
#[inline]
fn matches(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW * u64::from(b));
    x.wrapping_sub(LOW) & !x & HIGH
}

/// The index of the first byte that `mask` flags, eight bytes at a time
/// (little-endian words, so the lowest flagged byte comes first).
#[inline]
fn first_of(hay: &[u8], mask: impl Fn(u64) -> u64) -> Option<usize> {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hay[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let n = hay.len();
    let mut at = 0;
    while at + 8 <= n {
        let m = mask(word(at));
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at == n {
        return None;
    }
    if n >= 8 {
        // The last eight bytes, overlapping bytes already seen: none of those
        // matched, so the lowest flag is still the first match.
        let m = mask(word(n - 8));
        return (m != 0).then(|| n - 8 + (m.trailing_zeros() / 8) as usize);
    }
    let mut w = [0u8; 8];
    w[..n].copy_from_slice(hay);
    // Bytes past the end are zero, which no needle (`<`, `>`, `=`, quotes) is.
    let m = mask(u64::from_le_bytes(w));
    let i = (m.trailing_zeros() / 8) as usize;
    (m != 0 && i < n).then_some(i)
}

// Byte classes for the tag states' inner loops (quotes count as `OTHER`:
// they only mean something right after `=`).
pub(super) const OTHER: u8 = 0;
const SPACE: u8 = 1;
const SLASH: u8 = 2;
const GT: u8 = 3;
pub(super) const EQ: u8 = 4;

pub(super) static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    t[b' ' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[0x0C] = SPACE;
    t[b'/' as usize] = SLASH;
    t[b'>' as usize] = GT;
    t[b'=' as usize] = EQ;
    t
};

/// The first index from `p` whose byte class fails `keep` (or the end).
#[inline]
pub(super) fn skip(buf: &[u8], p: usize, keep: impl Fn(u8) -> bool) -> usize {
    buf[p.min(buf.len())..]
        .iter()
        .position(|&b| !keep(CLASS[usize::from(b)]))
        .map_or(buf.len(), |i| p + i)
}

/// A complete tag: where it ends, how, and its first `id`.
pub(super) struct Tag {
    /// Index after the closing `>`.
    pub(super) end: usize,
    pub(super) self_closing: bool,
    /// Closed by `>` right after `=`: lol_html then stays in the data state
    /// even after a raw-text start tag.
    pub(super) ended_before_value: bool,
    /// Value of the first `id` attribute (empty range when it has none).
    pub(super) id: Option<(usize, usize)>,
    /// Value of the first `charset` attribute.
    pub(super) charset: Option<(usize, usize)>,
    /// Has a `nonce` attribute.
    pub(super) nonce: bool,
    /// Has an `http-equiv` attribute.
    pub(super) http_equiv: bool,
}

impl Tag {
    fn ending_at(end: usize) -> Tag {
        Tag {
            end,
            self_closing: false,
            ended_before_value: false,
            id: None,
            charset: None,
            nonce: false,
            http_equiv: false,
        }
    }

    /// Note one attribute (`name` and `value` as byte ranges of `buf`).
    fn attribute(&mut self, buf: &[u8], name: (usize, usize), value: (usize, usize)) {
        let name = &buf[name.0..name.1];
        if name.eq_ignore_ascii_case(b"id") {
            self.id.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"nonce") {
            self.nonce = true;
        } else if name.eq_ignore_ascii_case(b"charset") {
            self.charset.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"http-equiv") {
            self.http_equiv = true;
        }
    }
}

pub(super) enum Parsed {
    Incomplete,
    Tag(Tag),
}

/// The rest of a tag whose name ends at `p`: with `detailed`, by lol_html's
/// attribute states, noting the attributes; otherwise only where it ends.
// Always inlined, like the two below: the SVG steps call them too, and with a
// second caller LLVM stopped inlining them into `Scanner::tag`, the hot path
// (callgrind: about 16 % more instructions on the bench page).
#[inline(always)]
pub(super) fn finish_tag(buf: &[u8], p: usize, detailed: bool) -> Parsed {
    if detailed {
        parse_attributes(buf, p)
    } else {
        skip_attributes(buf, p)
    }
}

/// Where a tag ends, from the end of its name at `p`: the common shape from
/// byte masks of the bytes ahead ([`super::mask`]), anything else jump by jump.
#[inline(always)]
fn skip_attributes(buf: &[u8], p: usize) -> Parsed {
    // Most tags have no attributes (every end tag): nothing to classify.
    if buf.get(p) == Some(&b'>') {
        return Parsed::Tag(Tag::ending_at(p + 1));
    }
    match super::mask::tag_end(buf, p) {
        Some(end) => Parsed::Tag(Tag::ending_at(end)),
        None => skip_attributes_carefully(buf, p),
    }
}

/// Where a tag ends, from the end of its name at `p`, jumping from one `>`,
/// quote or `=` to the next rather than reading every attribute byte: only a
/// quoted value can hold a `>`, and a quote opens a value only right after
/// an `=` that separates a name from its value (give or take spaces). That
/// `=` is a separator unless it is where an attribute name starts: first in
/// the run since the last value, or after a `/` (which puts lol_html back in
/// the before-attribute-name state). Everything else in a run (names, stray
/// quotes inside names) is passed over. `mask.rs`'s tests hold the masks'
/// reading to this one.
#[inline(always)]
pub(super) fn skip_attributes_carefully(buf: &[u8], mut p: usize) -> Parsed {
    // Start of the current run without a value, and whether a name has
    // begun in it at a `=` or quote already passed over.
    let (mut run, mut named) = (p, false);
    loop {
        let Some(i) = find_special(&buf[p..]) else {
            return Parsed::Incomplete;
        };
        let at = p + i;
        match buf[at] {
            b'>' => return Parsed::Tag(Tag::ending_at(at + 1)),
            b'=' => {
                let separator = match buf[run..at].iter().rposition(|&b| !is_space(b)) {
                    Some(j) => buf[run + j] != b'/',
                    None => named,
                };
                if !separator {
                    (run, named) = (at + 1, true);
                    p = at + 1;
                    continue;
                }
                // Before the attribute value.
                let v = skip(buf, at + 1, |c| c == SPACE);
                let Some(&b) = buf.get(v) else {
                    return Parsed::Incomplete;
                };
                p = match b {
                    b'"' | b'\'' => match find(b, &buf[v + 1..]) {
                        Some(j) => v + 1 + j + 1,
                        None => return Parsed::Incomplete,
                    },
                    b'>' => return Parsed::Tag(Tag::ending_at(v + 1)),
                    // Unquoted: up to a space or `>`.
                    _ => skip(buf, v, |c| c != SPACE && c != GT),
                };
                (run, named) = (p, false);
            }
            // Found with `>`, `=` and the quotes (see `find_special`); text here.
            b'<' | b'?' | b'#' | b'&' => p = at + 1,
            // A quote not after a separator is part of a name.
            _ => {
                (run, named) = (at + 1, true);
                p = at + 1;
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    CLASS[usize::from(b)] == SPACE
}

/// lol_html's attribute states (`syntax/tag`), from the end of the tag name at
/// `p`, written as one loop per attribute rather than a state per byte: the
/// before-name, name, after-name, before-value and value states follow each
/// other in that order, so each becomes a step with a tight inner loop.
#[inline(always)]
fn parse_attributes(buf: &[u8], mut p: usize) -> Parsed {
    let mut tag = Tag::ending_at(0);
    loop {
        // Before attribute name.
        p = skip(buf, p, |c| c == SPACE);
        let Some(&b) = buf.get(p) else {
            return Parsed::Incomplete;
        };
        match b {
            b'>' => break,
            b'/' => {
                // Self-closing start tag, or reconsume in before-attribute-name.
                match buf.get(p + 1) {
                    None => return Parsed::Incomplete,
                    Some(b'>') => {
                        tag.self_closing = true;
                        p += 1;
                        break;
                    }
                    Some(_) => {
                        p += 1;
                        continue;
                    }
                }
            }
            _ => {}
        }
        // Attribute name: its first byte whatever it is (`=` and quotes included).
        let name_start = p;
        p = skip(buf, p + 1, |c| c == OTHER);
        let name = (name_start, p);
        // After attribute name.
        p = skip(buf, p, |c| c == SPACE);
        let Some(&b) = buf.get(p) else {
            return Parsed::Incomplete;
        };
        if b != b'=' {
            // No value: `>` ends the tag, `/` and anything else are read by
            // the before-attribute-name step.
            tag.attribute(buf, name, (p, p));
            if b == b'>' {
                break;
            }
            continue;
        }
        // Before attribute value.
        p = skip(buf, p + 1, |c| c == SPACE);
        let Some(&b) = buf.get(p) else {
            return Parsed::Incomplete;
        };
        match b {
            b'"' | b'\'' => {
                let Some(i) = find(b, &buf[p + 1..]) else {
                    return Parsed::Incomplete;
                };
                tag.attribute(buf, name, (p + 1, p + 1 + i));
                p += i + 2;
            }
            b'>' => {
                tag.attribute(buf, name, (p, p));
                tag.ended_before_value = true;
                break;
            }
            _ => {
                let start = p;
                p = skip(buf, p, |c| c == OTHER || c == EQ || c == SLASH);
                let Some(&b) = buf.get(p) else {
                    return Parsed::Incomplete;
                };
                tag.attribute(buf, name, (start, p));
                if b == b'>' {
                    break;
                }
            }
        }
    }
    tag.end = p + 1;
    Parsed::Tag(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes near the needles and on both sides of 0x80, where a word-at-a-time
    /// compare could go wrong (borrows, sign bits).
    fn hay() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(b'<'),
            Just(b'>'),
            Just(b'"'),
            Just(b'\''),
            Just(b'='),
            Just(b' '),
            Just(0u8),
            Just(0x3b),
            Just(0x3d),
            Just(0x7f),
            Just(0x80),
            Just(0xbc),
            Just(0xbe),
            Just(0xff),
            any::<u8>(),
        ];
        proptest::collection::vec(byte, 0..80)
    }

    /// Every length across the word loop, its overlapping last word and the
    /// hand-over to memchr, with the needle at every place (or nowhere) among
    /// bytes that differ from it by one bit or in the sign bit only.
    #[test]
    fn find_at_every_length_and_place() {
        for needle in [b'<', b'>', b'"'] {
            let near = [needle ^ 1, needle ^ 0x80, needle.wrapping_sub(1), 0xff];
            for len in 0..100usize {
                let hay: Vec<u8> = (0..len).map(|i| near[i % near.len()]).collect();
                assert_eq!(find(needle, &hay), None, "len {len}");
                for at in 0..len {
                    let mut hay = hay.clone();
                    hay[at] = needle;
                    // A second one after it must not be taken for the first.
                    hay[len - 1] = needle;
                    assert_eq!(find(needle, &hay), Some(at), "len {len}, at {at}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn find_is_position(hay in hay(), needle in prop_oneof![Just(b'<'), Just(b'>'), Just(b'"'), Just(b'\'')]) {
            prop_assert_eq!(find(needle, &hay), hay.iter().position(|&b| b == needle));
        }

        #[test]
        fn find_special_is_position(hay in hay()) {
            prop_assert_eq!(
                find_special(&hay),
                hay.iter().position(|&b| matches!(b, b'>' | b'"' | b'\'' | b'=' | b'<' | b'?' | b'#' | b'&'))
            );
        }
    }
}
