//! Tags of the fast path: where a tag ends, and the few attributes the fast
//! path acts on (`id`, `nonce`, `charset`, `http-equiv`), read by lol_html's
//! attribute states.

/// `memchr`, with a plain loop over the first bytes: between tags and inside
/// them the distances are mostly short, where memchr's set-up dominates.
#[inline]
pub(super) fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    match hay.iter().take(SHORT).position(|&b| b == needle) {
        Some(i) => Some(i),
        None if hay.len() <= SHORT => None,
        None => memchr::memchr(needle, &hay[SHORT..]).map(|i| i + SHORT),
    }
}

// Byte classes for the tag states' inner loops (quotes count as `OTHER`:
// they only mean something right after `=`).
pub(super) const OTHER: u8 = 0;
const SPACE: u8 = 1;
const SLASH: u8 = 2;
const GT: u8 = 3;
pub(super) const EQ: u8 = 4;

static CLASS: [u8; 256] = {
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

/// The rest of a tag whose name ends at `p`. Without quotes in it, the first
/// `>` closes the tag whatever the attributes look like (only a quoted value
/// can contain `>`); otherwise, and when `detailed`, lol_html's states decide.
pub(super) fn finish_tag(buf: &[u8], p: usize, detailed: bool) -> Parsed {
    if !detailed {
        for (i, &b) in buf[p..].iter().enumerate() {
            match b {
                b'>' => return Parsed::Tag(Tag::ending_at(p + i + 1)),
                b'"' | b'\'' => break,
                _ => {}
            }
        }
    }
    parse_attributes(buf, p)
}

/// lol_html's attribute states (`syntax/tag`), from the end of the tag name at
/// `p`, written as one loop per attribute rather than a state per byte: the
/// before-name, name, after-name, before-value and value states follow each
/// other in that order, so each becomes a step with a tight inner loop.
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
