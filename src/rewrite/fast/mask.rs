//! Where a tag with attributes ends, read from byte masks of the next 64
//! bytes rather than attribute by attribute.
//!
//! Why: [`super::tag`]'s `skip_attributes` jumps from one `=`, quote or `>` to
//! the next, and every jump ends at a data-dependent place: a mispredicted
//! branch or two per attribute, most of a tag's time on the bench page
//! (perf annotate). Here the whole window is classified at once (SSE2, which
//! every x86-64 has) and the end found with bit operations, with no branch on
//! the page's bytes.
//!
//! It answers only for the common shape: attributes with values in double
//! quotes right after their `=` (`name="value"`), or with no value. Then a
//! double quote opens a value exactly when it follows an `=` and closes it at
//! the next double quote, as lol_html's attribute states read it, so the bytes
//! inside values are those between pairs of quotes (a prefix XOR of the quote
//! mask), and the tag ends at the first `>` outside them. Anything else gives
//! `None` and the caller reads the tag the careful way:
//!
//! - a double quote that opens a value without an `=` right before it (a quote
//!   inside a name, or one after a space: `name = "value"`);
//! - an `=` outside a value that is not followed by a double quote (unquoted
//!   values, single-quoted ones, `= "`), or not preceded by a byte that can
//!   only be part of an attribute's name (an `=` after a space, a `/`, a
//!   double quote or another `=` may begin a name instead of separating one
//!   from its value);
//! - no `>` outside values within the window, or fewer than 64 bytes left.
//!
//! The differential tests hold this to the careful reading: `tests` below
//! compares the two on generated tags, and `rewrite/tests.rs` compares the
//! whole fast path with lol_html.

/// Bytes classified at once.
const WINDOW: usize = 64;

/// The index after the closing `>` of a tag whose name ends at `p` (the byte
/// there is a space, `/` or `>`), or `None` if the tag is not of the shape
/// this reads (see the module docs).
#[inline(always)]
pub(super) fn tag_end(buf: &[u8], p: usize) -> Option<usize> {
    let window: &[u8; WINDOW] = buf.get(p..p + WINDOW)?.try_into().ok()?;
    let m = Masks::of(window);
    // Bit i set while inside a value: an odd number of double quotes at or
    // before i. Opening quotes are inside, closing ones are not.
    let mut inside = m.dquote;
    for shift in [1, 2, 4, 8, 16, 32] {
        inside ^= inside << shift;
    }
    let ends = m.gt & !inside;
    if ends == 0 {
        return None;
    }
    let end = ends.trailing_zeros();
    let before = (1u64 << end) - 1;
    let opening = m.dquote & inside & before;
    let separators = m.eq & !inside & before;
    // A single quote outside a value is part of a name: one after an `=`
    // would open a value, and such an `=` is not followed by a double quote.
    let name_byte = !(m.space_or_control | m.slash | m.dquote | m.eq | m.gt);
    let odd = (opening & !(m.eq << 1))
        | ((separators << 1) & !m.dquote)
        | (separators & !(name_byte << 1));
    (odd == 0).then_some(p + end as usize + 1)
}

/// One bit per byte of the window (bit i for byte i) for each class.
#[derive(Default)]
struct Masks {
    gt: u64,
    dquote: u64,
    eq: u64,
    slash: u64,
    /// Bytes up to 0x20: the HTML spaces, and control bytes, which are not
    /// spaces to lol_html but are rare enough to leave to the careful path.
    space_or_control: u64,
}

#[cfg(all(
    any(target_arch = "x86_64", target_arch = "x86"),
    target_feature = "sse2"
))]
impl Masks {
    #[inline(always)]
    fn of(window: &[u8; WINDOW]) -> Masks {
        use safe_arch::{
            cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, max_u8_m128i, move_mask_i8_m128i,
            set_splat_i8_m128i,
        };
        fn bits(v: m128i, b: u8) -> u64 {
            let eq = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b as i8));
            u64::from(move_mask_i8_m128i(eq) as u16)
        }
        let mut m = Masks::default();
        let (chunks, _) = window.as_chunks::<16>();
        for (k, chunk) in chunks.iter().enumerate() {
            let v = load_unaligned_m128i(chunk);
            let at = 16 * k;
            m.gt |= bits(v, b'>') << at;
            m.dquote |= bits(v, b'"') << at;
            m.eq |= bits(v, b'=') << at;
            m.slash |= bits(v, b'/') << at;
            // max(v, 0x20) == 0x20 exactly for bytes up to 0x20 (unsigned).
            m.space_or_control |= bits(max_u8_m128i(v, set_splat_i8_m128i(0x20)), 0x20) << at;
        }
        m
    }
}

/// Without SSE2 no masks are built: a byte at a time they would cost more
/// than the careful reading's jumps, so every tag is left to those.
#[cfg(not(all(
    any(target_arch = "x86_64", target_arch = "x86"),
    target_feature = "sse2"
)))]
impl Masks {
    #[inline(always)]
    fn of(_window: &[u8; WINDOW]) -> Masks {
        // No `>` at all: `tag_end` answers `None`.
        Masks::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tag::{Parsed, skip_attributes_carefully};
    use super::*;
    use proptest::prelude::*;

    /// The careful reading's end for the tag whose name ends at `p`.
    fn careful(buf: &[u8], p: usize) -> Option<usize> {
        match skip_attributes_carefully(buf, p) {
            Parsed::Tag(tag) => Some(tag.end),
            Parsed::Incomplete => None,
        }
    }

    /// A tag's rest after its name, from the pieces that decide where it ends.
    fn rest() -> impl Strategy<Value = Vec<u8>> {
        // The common pieces twice, for weight.
        const PIECES: &[&[u8]] = &[
            b" ",
            b" ",
            b"class",
            b"class",
            b"=\"v\"",
            b"=\"v\"",
            b"=\"a>b\"",
            b"=",
            b"\"",
            b"'",
            b"/",
            b">",
            b"\n",
            b"\x00",
            b"<",
            b"x='y>'",
        ];
        let piece = proptest::sample::select(PIECES);
        (
            prop_oneof![Just(b' '), Just(b'/'), Just(b'\n')],
            proptest::collection::vec(piece, 0..24),
        )
            .prop_map(|(first, pieces)| {
                let mut out = vec![first];
                for p in pieces {
                    out.extend_from_slice(p);
                }
                // Enough after it for the window, and a `>` to end on.
                out.extend_from_slice(&[b'>'; 70]);
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn agrees_with_the_careful_reading(rest in rest(), lead in 0usize..3) {
            let mut buf = b"<a".repeat(lead.max(1));
            let p = buf.len();
            buf.extend_from_slice(&rest);
            if let Some(end) = tag_end(&buf, p) {
                prop_assert_eq!(Some(end), careful(&buf, p), "{:?}", String::from_utf8_lossy(&buf));
            }
        }
    }

    #[test]
    fn reads_ordinary_tags_and_leaves_the_rest() {
        // After the tag, bytes that would send it to the careful reading
        // were they inside it.
        let pad = " x='1' = y \"".repeat(WINDOW / 8);
        let cases: [(&str, bool); 12] = [
            (r#" class="card" data-id="0">"#, true),
            (r#" src="/i.jpg" alt="a > b" hidden>"#, true),
            (r#" href="/p?ref=list&amp;x=1">"#, true),
            ("/>", true),
            (">", true),
            (r#" alt="it's">"#, true),
            // Left to the careful reading:
            (r#" a = "x>y">"#, false),
            (r#" a='x>y'>"#, false),
            (r#" a=x>"#, false),
            (r#" ="x>y">"#, false),
            (r#" a="x""y>">"#, false),
            (r#" a/="x>">"#, false),
        ];
        for (rest, read_here) in cases {
            let buf = format!("<a{rest}{pad}");
            let want = read_here.then(|| 2 + rest.len());
            assert_eq!(tag_end(buf.as_bytes(), 2), want, "{rest}");
            if read_here {
                assert_eq!(careful(buf.as_bytes(), 2), want, "{rest}");
            }
        }
        // Too close to the end of the buffer for the window.
        assert_eq!(tag_end(br#"<a class="x">"#, 2), None);
    }
}
