//! Inline SVG for the fast path: the steps that follow it as lol_html's tree
//! builder simulator does, and what in it is left to lol_html (see the
//! module documentation of `fast`).

use super::tag::{Parsed, finish_tag};
use super::{
    BODY, DESC, Kind, MAX_DEPTH, Name, NameRead, RawKind, STYLE, SVG, Scan, Scanner, TEMPLATE,
    TITLE, hold_from, kind, lit,
};

impl Scanner {
    /// A tag inside SVG, or `<svg>` itself. Out of line, and reached from
    /// `data` rather than from `tag`, so that the path every HTML tag takes
    /// compiles as it did before SVG was followed: reached from `tag`, it cost
    /// that path 5–16 % more instructions on the bench page (`finish_tag`, the
    /// name and the stack search were no longer inlined, or the name and the
    /// tag were kept in memory).
    #[inline(never)]
    pub(super) fn foreign_tag(
        &mut self,
        buf: &[u8],
        lt: usize,
        is_end: bool,
    ) -> Result<usize, Scan> {
        let (name, name_end) = match Name::read(buf, lt + 1 + usize::from(is_end)) {
            NameRead::Name(name, end) => (name, end),
            NameRead::Incomplete => return Err(hold_from(buf, lt)),
            NameRead::Odd => return Err(Scan::Handoff(lt)),
        };
        if is_end {
            self.foreign_end(buf, lt, name, name_end)
        } else {
            self.foreign_start(buf, lt, name, name_end)
        }
    }

    /// Inside an SVG `<title>` or `<desc>`: HTML content for lol_html, so only
    /// its text and its end tag are followed. Such an element is on top of
    /// the stack exactly then: anything else there hands over, and no element
    /// below an `<svg>` can come back to the top while one is open.
    fn in_svg_text(&self) -> bool {
        self.svg > 0 && self.stack.last().is_some_and(|n| *n == TITLE || *n == DESC)
    }

    /// A start tag inside SVG, or `<svg>` itself.
    fn foreign_start(
        &mut self,
        buf: &[u8],
        lt: usize,
        name: Name,
        name_end: usize,
    ) -> Result<usize, Scan> {
        let text_point = name == TITLE || name == DESC;
        if self.in_svg_text() || (name != SVG && !text_point && !stays_foreign(name)) {
            return Err(Scan::Handoff(lt));
        }
        // Attributes read: `/>` decides whether the element is pushed.
        let tag = match finish_tag(buf, name_end, true) {
            Parsed::Incomplete => return Err(hold_from(buf, lt)),
            Parsed::Tag(tag) => tag,
        };
        if tag.self_closing {
            return if name == SVG {
                Err(Scan::Handoff(lt))
            } else {
                Ok(tag.end)
            };
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Scan::Handoff(lt));
        }
        self.stack.push(name);
        if name == SVG {
            self.svg += 1;
        }
        Ok(tag.end)
    }

    /// An end tag inside SVG.
    fn foreign_end(
        &mut self,
        buf: &[u8],
        lt: usize,
        name: Name,
        name_end: usize,
    ) -> Result<usize, Scan> {
        const P: Name = lit(b"p");
        const BR: Name = lit(b"br");
        // `</p>` and `</br>` leave SVG; `</body>` inside it is not the
        // insertion point, and what comes of it is the engine's to say. In a
        // `<title>` or `<desc>`, any end tag but its own changes lol_html's
        // namespace in ways not followed here.
        if name == P
            || name == BR
            || name == BODY
            || (self.in_svg_text() && self.stack.last() != Some(&name))
        {
            return Err(Scan::Handoff(lt));
        }
        let tag = match finish_tag(buf, name_end, false) {
            Parsed::Incomplete => return Err(hold_from(buf, lt)),
            Parsed::Tag(tag) => tag,
        };
        if let Some(at) = self.stack.iter().rposition(|n| *n == name) {
            if name == SVG {
                self.svg -= 1;
            } else if self.stack[at..].contains(&SVG) {
                // It would pop an `<svg>` while lol_html stays in SVG.
                return Err(Scan::Handoff(lt));
            }
            self.stack.truncate(at);
        }
        Ok(tag.end)
    }
}

/// A start tag named `svg` (any case) at `lt`.
pub(super) fn is_svg(buf: &[u8], lt: usize) -> bool {
    matches!(Name::read(buf, lt + 1), NameRead::Name(name, _) if name == SVG)
}

/// Whether a start tag inside SVG stays ordinary foreign content (pushed
/// unless self-closing, its text parsed as data). Everything else there is
/// lol_html's: `kind`'s hand-overs, scripts and void and raw-text names (except
/// `<style>`, common in exported icons), `foreignObject`, and the tags that end
/// foreign content. (`<title>` and `<desc>` are the caller's.)
fn stays_foreign(name: Name) -> bool {
    /// lol_html's `causes_foreign_content_exit` (less the void names, which
    /// `kind` already turns away), with `font`, which ends it only with some
    /// attributes.
    #[rustfmt::skip]
    const ENDS_SVG: [Name; 40] = [
        lit(b"b"), lit(b"big"), lit(b"body"), lit(b"center"), lit(b"code"), lit(b"dd"),
        lit(b"div"), lit(b"dl"), lit(b"dt"), lit(b"em"), lit(b"h1"), lit(b"h2"), lit(b"h3"),
        lit(b"h4"), lit(b"h5"), lit(b"h6"), lit(b"head"), lit(b"i"), lit(b"li"), lit(b"listing"),
        lit(b"menu"), lit(b"nobr"), lit(b"ol"), lit(b"p"), lit(b"pre"), lit(b"ruby"), lit(b"s"),
        lit(b"small"), lit(b"span"), lit(b"strong"), lit(b"strike"), lit(b"sub"), lit(b"sup"),
        lit(b"table"), lit(b"tt"), lit(b"u"), lit(b"ul"), lit(b"var"), lit(b"font"),
        lit(b"blockquote"),
    ];
    const FOREIGN_OBJECT: Name = lit(b"foreignobject");
    match kind(name) {
        Kind::Normal => name != FOREIGN_OBJECT && name != TEMPLATE && !ENDS_SVG.contains(&name),
        Kind::Raw(RawKind::Text) => name == STYLE,
        Kind::Raw(RawKind::Script) | Kind::Void | Kind::HandsOver => false,
    }
}
