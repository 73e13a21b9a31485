//! The fast path: finds the insertion point of an ordinary page at memory
//! speed, copying nothing, and hands the page to lol_html at the first thing it
//! does not fully understand.
//!
//! It mirrors what the lol_html path does for the subset of HTML it accepts:
//! lol_html's tokenizer states (data, tags and their attributes, comments,
//! doctype and bogus comments, raw text, RCDATA, script data and its escaped
//! and double-escaped states inside `<!--`) and its
//! element stack, which only records names (every start tag pushes, except
//! void elements; an end tag pops up to the nearest element of that name).
//! The snippet goes before a `</body>` that finds a `<body>` on that stack.
//!
//! It hands over at `<math>`, `<frameset>`, `<plaintext>`, odd tag names,
//! self-closing raw-text tags, very deep nesting, a tag longer than
//! [`MAX_TAG`], or a `</body>` while a `<template>` is open (the engine does not
//! insert inside one; lol_html's own parsing of a template is that of any
//! element). Hand-over happens at the `<` of that construct, where lol_html,
//! started fresh and fed one start tag per element on the stack (output
//! discarded), is in exactly the state it would have reached by reading the
//! page from the top. The differential property
//! test in `tests.rs` holds both paths to the same output bytes.
//!
//! Inline SVG (icons, logos: common in page headers, where a hand-over would
//! leave the rest of the page to lol_html) is followed as lol_html's tree
//! builder simulator follows it: inside `<svg>` there is no raw text, a
//! self-closing start tag pushes nothing, and `</svg>` leaves. An icon's
//! `<title>` or `<desc>` (HTML content again, for lol_html) is followed while
//! it holds only text. Everything else in SVG that changes lol_html's
//! namespace hands over: `foreignObject`, markup inside a `<title>` or
//! `<desc>`, the tags that end foreign content (`<div>`, `<p>`, `<font>`…
//! and `</p>`, `</br>`), `<![CDATA[`, `<svg/>` (lol_html enters SVG for it with no element
//! to leave by), scripts, void and raw-text names other than `<style>`, an end
//! tag that would pop an `<svg>` other than `</svg>`, and `</body>`. So the
//! number of `<svg>` elements on the stack is always the depth of lol_html's
//! namespace stack, and a hand-over replays it exactly.
//!
//! When the proxy reads the page's own CSP ([`Watch::csp`]), the things lol_html
//! would collect for it also hand over: a `<meta http-equiv>` and a `<script>`
//! with a `nonce`. Nothing before such a tag is of interest to that scan, so
//! lol_html, starting there, collects exactly what it would have from the top.
//! The one thing before it that lol_html would have acted on, the first
//! `<meta charset>` naming an encoding, is read here and passed on at hand-over.

use bytes::{Bytes, BytesMut};
use lol_html::AsciiCompatibleEncoding;
use tag::{CLASS, EQ, OTHER, Parsed, Tag, find, finish_tag};

mod mask;
mod svg;
mod tag;

/// A tag longer than this is left to lol_html, which can stream past tags it
/// does not need without buffering them; we would have to hold it back.
pub(super) const MAX_TAG: usize = 16 * 1024;
/// Deeper element stacks are left to lol_html (and its memory limit).
const MAX_DEPTH: usize = 512;
/// The element stack's room from the start (24 bytes a name).
const STACK_ROOM: usize = 16;
/// Bytes of a new chunk joined to the unfinished construct the last one
/// ended in: far more than a tag takes (a longer construct, such as a long
/// comment, is joined with the whole chunk). A few bytes under test, so that
/// the differential tests' small documents and chunks take every branch of
/// the join (ended in the joined piece, longer than it, decided in it).
const JOIN: usize = if cfg!(test) { 6 } else { 1024 };
/// Longer tag names are left to lol_html.
const MAX_NAME: usize = 24;

/// A lower-cased tag name of ASCII letters, digits and `-`, `_`, `:`, `.`,
/// packed little-endian into three words. Words, not a byte array: filling a
/// byte array one byte at a time and then copying it whole stalls the CPU on
/// every tag (a store-forwarding miss, measured at a fifth of the scan's time).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Name {
    len: u8,
    words: [u64; 3],
}

impl Name {
    /// The tag name from `start` to the first space, `/` or `>`, read and
    /// packed in one pass. Always inlined: `tag` is its hot caller, the SVG
    /// steps read it again.
    #[inline(always)]
    fn read(buf: &[u8], start: usize) -> NameRead {
        let bytes = &buf[start.min(buf.len())..];
        let mut words = [0u64; 3];
        // Most names fit in the first word: a loop of its own, with the word
        // in a register, before the general one.
        let mut w0 = 0u64;
        for (i, &b) in bytes.iter().take(8).enumerate() {
            let c = NAME_BYTE[usize::from(b)];
            if c == 0 {
                words[0] = w0;
                return Name::ended(words, i, b, start);
            }
            w0 |= u64::from(c) << (8 * i);
        }
        words[0] = w0;
        for (i, &b) in bytes.iter().enumerate().skip(8) {
            let c = NAME_BYTE[usize::from(b)];
            if c == 0 {
                return Name::ended(words, i, b, start);
            }
            if i == MAX_NAME {
                return NameRead::Odd;
            }
            words[i / 8] |= u64::from(c) << (8 * (i % 8));
        }
        NameRead::Incomplete
    }

    /// A name of `len` bytes, packed in `words`, is followed by `b`: it ends
    /// there at a space, `/` or `>`; any other byte would be part of it, and
    /// such names are lol_html's.
    fn ended(words: [u64; 3], len: usize, b: u8, start: usize) -> NameRead {
        match CLASS[usize::from(b)] {
            _ if len == 0 => NameRead::Odd,
            OTHER | EQ => NameRead::Odd,
            // `len <= MAX_NAME` (24), so it fits in a u8.
            _ => NameRead::Name(
                Name {
                    len: len as u8,
                    words,
                },
                start + len,
            ),
        }
    }

    /// The name's bytes, in a buffer of which the first `len` count.
    fn to_array(self) -> [u8; MAX_NAME] {
        let mut out = [0u8; MAX_NAME];
        for (to, w) in out.chunks_exact_mut(8).zip(self.words) {
            to.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn len(self) -> usize {
        usize::from(self.len)
    }
}

/// How reading a tag name ended.
enum NameRead {
    /// The name, and the index of the byte after it.
    Name(Name, usize),
    /// The buffer ends inside the name.
    Incomplete,
    /// A name the fast path does not handle.
    Odd,
}

/// A constant name (lower case, valid): for comparisons.
const fn lit(name: &[u8]) -> Name {
    let mut words = [0u64; 3];
    let mut i = 0;
    while i < name.len() {
        words[i / 8] |= (name[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    Name {
        len: name.len() as u8,
        words,
    }
}

const BODY: Name = lit(b"body");
const META: Name = lit(b"meta");
const SVG: Name = lit(b"svg");
const STYLE: Name = lit(b"style");
const TITLE: Name = lit(b"title");
const TEMPLATE: Name = lit(b"template");
const DESC: Name = lit(b"desc");

/// Tag name bytes the fast path accepts, lower-cased; 0 for the others.
static NAME_BYTE: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.') {
            t[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    t
};

/// What a start tag's name means to the fast path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Pushed onto the stack; nothing else.
    Normal,
    /// Never pushed (HTML void elements, as lol_html's stack treats them).
    Void,
    /// Pushed, and its text is raw until its end tag.
    Raw(RawKind),
    /// Changes the rules (MathML, and SVG, which `foreign_tag` takes back) or decides the
    /// page (frameset, plaintext): lol_html's business.
    HandsOver,
}

/// How the text after a start tag is tokenized.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RawKind {
    Script,
    /// RCDATA and RAWTEXT end the same way; neither has escapes.
    Text,
}

/// Compares packed words, not strings: this runs on every start tag.
fn kind(name: Name) -> Kind {
    macro_rules! words {
        ($($id:ident = $s:literal),* $(,)?) => { $(const $id: u64 = lit($s).words[0];)* };
    }
    words! {
        AREA = b"area", BASE = b"base", BASEFONT = b"basefont", BGSOUND = b"bgsound",
        BR = b"br", COL = b"col", EMBED = b"embed", HR = b"hr", IMG = b"img",
        INPUT = b"input", KEYGEN = b"keygen", LINK = b"link", META_W = b"meta",
        PARAM = b"param", SOURCE = b"source", TRACK = b"track", WBR = b"wbr",
        SCRIPT = b"script", TEXTAREA = b"textarea", TITLE = b"title", STYLE = b"style",
        IFRAME = b"iframe", XMP = b"xmp", NOEMBED = b"noembed", NOFRAMES = b"noframes",
        NOSCRIPT = b"noscript", SVG = b"svg", MATH = b"math",
        FRAMESET = b"frameset",
    }
    const PLAINTEXT: Name = lit(b"plaintext");
    if name.len() > 8 {
        return if name == PLAINTEXT {
            Kind::HandsOver
        } else {
            Kind::Normal
        };
    }
    // Names of up to 8 bytes live in the first word alone (no zero bytes).
    match name.words[0] {
        AREA | BASE | BASEFONT | BGSOUND | BR | COL | EMBED | HR | IMG | INPUT | KEYGEN | LINK
        | META_W | PARAM | SOURCE | TRACK | WBR => Kind::Void,
        SCRIPT => Kind::Raw(RawKind::Script),
        TEXTAREA | TITLE | STYLE | IFRAME | XMP | NOEMBED | NOFRAMES | NOSCRIPT => {
            Kind::Raw(RawKind::Text)
        }
        SVG | MATH | FRAMESET => Kind::HandsOver,
        _ => Kind::Normal,
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'\x0C')
}

/// Where the tokenizer is between chunks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Text {
    Data,
    /// Inside `<!-- -->`; held-back bytes are comment text.
    Comment,
    /// Inside a doctype, `<!…>`, `<?…>` or `</…>` bogus comment: ends at `>`.
    Bogus,
    /// Inside the text of a raw-text element (its name is the stack top).
    Raw(RawKind),
    /// Inside `<!--` in a script: lol_html's escaped script data states, and
    /// with `double` its double-escaped ones (after a `<script` there).
    Escaped {
        double: bool,
    },
}

/// What a call to [`Scanner::feed`] decided.
pub(super) enum Step {
    /// All input consumed; nothing decided yet.
    More,
    /// The snippet went in; everything else passed through.
    Injected,
    /// The page already carries the widget; everything passed through.
    AlreadyPresent,
    /// Continue with lol_html: feed it `replay` (and discard that output), then `rest`.
    Handoff { replay: Vec<u8>, rest: Bytes },
}

/// What the page scan of the lol_html path looks at, so the fast path must too.
#[derive(Clone, Copy, Default)]
pub(super) struct Watch {
    /// The page's `<meta>` CSP and script nonces are read (hand over at them).
    pub csp: bool,
    /// lol_html would follow the first `<meta charset>` (no charset in the header).
    pub meta_charset: bool,
}

/// The fast path's state for one response.
pub(super) struct Scanner {
    stack: Vec<Name>,
    /// `<svg>` elements on `stack`: lol_html's SVG namespace depth.
    svg: u32,
    text: Text,
    /// Bytes of an unfinished construct (from its `<`), or the last few bytes
    /// of a comment, carried to the next chunk.
    pending: BytesMut,
    script_id: Box<[u8]>,
    watch: Watch,
    /// The encoding the first `<meta charset>` named, once one did.
    charset: Option<AsciiCompatibleEncoding>,
}

/// How a scan of one buffer ended.
enum Scan {
    /// Consumed up to `keep`; bytes from there are carried over.
    Hold(usize),
    Inject(usize),
    AlreadyPresent,
    Handoff(usize),
}

impl Scanner {
    /// A scanner at the top of a page; `script_id` marks a page that already has the widget.
    pub(super) fn new(script_id: &str, watch: Watch) -> Self {
        Scanner {
            // Deep enough for most pages' nesting without growing from empty
            // (0, 4, 8, 16: three reallocations a page).
            stack: Vec::with_capacity(STACK_ROOM),
            svg: 0,
            text: Text::Data,
            pending: BytesMut::new(),
            script_id: script_id.as_bytes().into(),
            watch,
            charset: None,
        }
    }

    /// The encoding a `<meta charset>` switched to, for lol_html at hand-over.
    pub(super) fn meta_charset(&self) -> Option<AsciiCompatibleEncoding> {
        self.charset
    }

    /// Scan one chunk, handing output (slices of the input) to `out`.
    pub(super) fn feed(&mut self, chunk: Bytes, snippet: &str, out: &mut dyn FnMut(Bytes)) -> Step {
        if self.pending.is_empty() {
            let scan = self.scan(&chunk);
            return self.settle(chunk, Bytes::new(), scan, snippet, out);
        }
        // An unfinished construct (nearly always a tag cut by the read)
        // continues here. It is joined to the start of the chunk only, in a
        // buffer of its own so `pending` stays small; once it has ended, the
        // rest of the chunk is scanned where it lies. (Joining the whole
        // chunk copied about one read in two: 12 k of a 64 KB page's 523 k
        // instructions, callgrind.)
        let held = self.pending.len();
        let take = chunk.len().min(JOIN);
        let joined = join(&self.pending, &chunk[..take]);
        self.pending.clear();
        let scan = self.scan(&joined);
        match scan {
            Scan::Hold(keep) if keep >= held && take < chunk.len() => {
                emit(out, joined.slice(..keep));
                let rest = chunk.slice(keep - held..);
                let scan = self.scan(&rest);
                self.settle(rest, Bytes::new(), scan, snippet, out)
            }
            _ => self.settle(joined, chunk.slice(take..), scan, snippet, out),
        }
    }

    /// Act on `scan`, the scan of `buf`; `tail` follows `buf` in the page
    /// and has not been scanned.
    fn settle(
        &mut self,
        buf: Bytes,
        tail: Bytes,
        scan: Scan,
        snippet: &str,
        out: &mut dyn FnMut(Bytes),
    ) -> Step {
        match scan {
            Scan::Hold(keep) if tail.is_empty() => {
                emit(out, buf.slice(..keep));
                self.pending.extend_from_slice(&buf[keep..]);
                Step::More
            }
            Scan::Hold(keep) => {
                // A construct longer than the joined piece: what is left of
                // it and the whole tail, in one buffer, as a new chunk.
                emit(out, buf.slice(..keep));
                let rest = join(&buf[keep..], &tail);
                let scan = self.scan(&rest);
                self.settle(rest, Bytes::new(), scan, snippet, out)
            }
            Scan::Inject(at) => {
                emit(out, buf.slice(..at));
                out(Bytes::copy_from_slice(snippet.as_bytes()));
                emit(out, buf.slice(at..));
                emit(out, tail);
                Step::Injected
            }
            Scan::AlreadyPresent => {
                emit(out, buf);
                emit(out, tail);
                Step::AlreadyPresent
            }
            Scan::Handoff(at) => {
                emit(out, buf.slice(..at));
                let mut replay = Vec::with_capacity(self.stack.len() * 8);
                for name in &self.stack {
                    replay.push(b'<');
                    replay.extend_from_slice(&name.to_array()[..name.len()]);
                    replay.push(b'>');
                }
                let rest = if tail.is_empty() {
                    buf.slice(at..)
                } else {
                    join(&buf[at..], &tail)
                };
                Step::Handoff { replay, rest }
            }
        }
    }

    /// Bytes allocated for what is held for the next chunk (tests check memory stays flat).
    #[cfg(test)]
    pub(super) fn pending_len(&self) -> usize {
        self.pending.capacity()
    }

    /// End of the page: what was held back goes out as it is, then the snippet
    /// (lol_html's document-end fallback does the same).
    pub(super) fn finish(&mut self, snippet: &str, out: &mut dyn FnMut(Bytes)) {
        emit(out, self.pending.split().freeze());
        out(Bytes::copy_from_slice(snippet.as_bytes()));
    }

    fn scan(&mut self, buf: &[u8]) -> Scan {
        let mut pos = 0;
        loop {
            let step = match self.text {
                Text::Data => self.data(buf, pos),
                Text::Comment => self.comment(buf, pos, pos),
                Text::Bogus => match find(b'>', &buf[pos..]) {
                    Some(i) => {
                        self.text = Text::Data;
                        Ok(pos + i + 1)
                    }
                    None => Err(Scan::Hold(buf.len())),
                },
                Text::Raw(kind) => self.raw(buf, pos, kind),
                Text::Escaped { double } => self.escaped(buf, pos, double),
            };
            match step {
                Ok(next) => pos = next,
                Err(scan) => return scan,
            }
        }
    }

    /// Data state from `pos`: returns where to continue, or how the scan ends.
    fn data(&mut self, buf: &[u8], pos: usize) -> Result<usize, Scan> {
        let Some(i) = find(b'<', &buf[pos..]) else {
            return Err(Scan::Hold(buf.len()));
        };
        let lt = pos + i;
        let hold = || hold_from(buf, lt);
        let Some(&next) = buf.get(lt + 1) else {
            return Err(hold());
        };
        match next {
            b'a'..=b'z' | b'A'..=b'Z' if self.svg > 0 => self.foreign_tag(buf, lt, false),
            // `<svg>` is one of `tag`'s hand-overs: taken back here, off the
            // path every other tag takes.
            b'a'..=b'z' | b'A'..=b'Z' => match self.tag(buf, lt, false) {
                Err(Scan::Handoff(at)) if at == lt && svg::is_svg(buf, lt) => {
                    self.foreign_tag(buf, lt, false)
                }
                step => step,
            },
            b'/' => match buf.get(lt + 2) {
                None => Err(hold()),
                Some(b'a'..=b'z' | b'A'..=b'Z') if self.svg > 0 => self.foreign_tag(buf, lt, true),
                Some(b'a'..=b'z' | b'A'..=b'Z') => self.tag(buf, lt, true),
                // `</>` is dropped by the tokenizer; the bytes pass through.
                Some(b'>') => Ok(lt + 3),
                Some(_) => {
                    self.text = Text::Bogus;
                    Ok(lt + 2)
                }
            },
            // `<![CDATA[` is a CDATA section in SVG: lol_html's.
            b'!' if self.svg > 0 && buf.get(lt + 2) == Some(&b'[') => Err(Scan::Handoff(lt)),
            b'!' => {
                let Some(rest) = buf.get(lt + 2..lt + 4) else {
                    // `<!` or `<!-`: comment or not depends on the next bytes.
                    return match buf.get(lt + 2) {
                        Some(b'-') | None => Err(hold()),
                        Some(_) => {
                            self.text = Text::Bogus;
                            Ok(lt + 2)
                        }
                    };
                };
                if rest != b"--" {
                    // Doctype, `<![CDATA[` outside foreign content, or a bogus
                    // comment: all end at the first `>`.
                    self.text = Text::Bogus;
                    return Ok(lt + 2);
                }
                let start = lt + 4;
                // `<!-->` and `<!--->` are complete comments.
                match (buf.get(start), buf.get(start + 1)) {
                    (None, _) | (Some(b'-'), None) => Err(hold()),
                    (Some(b'>'), _) => Ok(start + 1),
                    (Some(b'-'), Some(b'>')) => Ok(start + 2),
                    _ => {
                        self.text = Text::Comment;
                        self.comment(buf, start, start)
                    }
                }
            }
            b'?' => {
                self.text = Text::Bogus;
                Ok(lt + 2)
            }
            // Not markup: `<` is text, and the next byte starts afresh.
            _ => Ok(lt + 1),
        }
    }

    /// Comment text from `pos`; `start` is where its text began in `buf`. The
    /// comment ends at the first `>` after `--` or `--!` inside that text.
    fn comment(&mut self, buf: &[u8], pos: usize, start: usize) -> Result<usize, Scan> {
        let mut from = pos;
        while let Some(i) = find(b'>', &buf[from..]) {
            let gt = from + i;
            let text = &buf[start..gt];
            if text.ends_with(b"--") || text.ends_with(b"--!") {
                self.text = Text::Data;
                return Ok(gt + 1);
            }
            from = gt + 1;
        }
        // Keep the last three bytes of text: they may begin `--!>`.
        Err(Scan::Hold(buf.len().saturating_sub(3).max(start)))
    }

    /// Raw text of the element on top of the stack, from `pos`.
    fn raw(&mut self, buf: &[u8], mut pos: usize, kind: RawKind) -> Result<usize, Scan> {
        let Some(name) = self.stack.last().copied() else {
            // Unreachable: raw text is only entered after pushing its element.
            return Err(Scan::Handoff(pos));
        };
        let name_buf = name.to_array();
        let name = &name_buf[..name.len()];
        loop {
            let Some(i) = find(b'<', &buf[pos..]) else {
                return Err(Scan::Hold(buf.len()));
            };
            let lt = pos + i;
            match buf.get(lt + 1) {
                None => return Err(hold_from(buf, lt)),
                Some(b'/') => {
                    // An end tag only if the name is this element's and is
                    // followed by space, `/` or `>`; anything else is text.
                    let after = lt + 2 + name.len();
                    let avail = &buf[(lt + 2).min(buf.len())..after.min(buf.len())];
                    if !avail.eq_ignore_ascii_case(&name[..avail.len()]) {
                        pos = lt + 1;
                        continue;
                    }
                    match buf.get(after) {
                        None => return Err(hold_from(buf, lt)),
                        Some(&b) if is_space(b) || b == b'/' || b == b'>' => {
                            return self.tag(buf, lt, true);
                        }
                        Some(_) => pos = lt + 1,
                    }
                }
                Some(b'!') if kind == RawKind::Script => match buf.get(lt + 2..lt + 4) {
                    // `<!--` starts the escaped script states (old pages
                    // hiding scripts from browsers without them).
                    Some(b"--") => {
                        self.text = Text::Escaped { double: false };
                        return Ok(lt + 4);
                    }
                    Some(_) => pos = lt + 1,
                    None if buf.get(lt + 2).is_some_and(|&b| b != b'-') => pos = lt + 1,
                    None => return Err(hold_from(buf, lt)),
                },
                Some(_) => pos = lt + 1,
            }
        }
    }

    /// Escaped script text from `pos`, as lol_html's escaped and
    /// double-escaped script data states read it. Both end at a `>` right
    /// after two dashes (the script goes on as script data). In escaped text
    /// `</script` and a space, `/` or `>` is the script's end tag, and `<script`
    /// and one of those starts double-escaped text, where `</script` and one of
    /// those goes back to escaped text. Everything else is text.
    fn escaped(&mut self, buf: &[u8], mut pos: usize, mut double: bool) -> Result<usize, Scan> {
        let delimiter = |b: u8| is_space(b) || b == b'/' || b == b'>';
        // `self.text` is already `Escaped { double }` here; it changes with
        // `double` below, so a hold at any point resumes in the right state.
        loop {
            let Some(i) = memchr::memchr2(b'<', b'>', &buf[pos..]) else {
                // The last two bytes may be the dashes of a `-->` that ends
                // in the next chunk, even those of the `<!--` itself: they are
                // read again there, and a dash or a `>` read again decides
                // nothing new.
                return Err(Scan::Hold(buf.len().saturating_sub(2)));
            };
            let at = pos + i;
            if buf[at] == b'>' {
                // The text began with `<!--`, so two bytes before are there.
                if buf[..at].ends_with(b"--") {
                    self.text = Text::Raw(RawKind::Script);
                    return Ok(at + 1);
                }
                pos = at + 1;
                continue;
            }
            let Some(after) = buf.get(at + 1..at + 9) else {
                return Err(hold_from(buf, at));
            };
            if after[0] == b'/' {
                if after[1..7].eq_ignore_ascii_case(b"script") && delimiter(after[7]) {
                    if !double {
                        return self.tag(buf, at, true);
                    }
                    double = false;
                    self.text = Text::Escaped { double };
                    pos = at + 9;
                    continue;
                }
            } else if !double && after[..6].eq_ignore_ascii_case(b"script") && delimiter(after[6]) {
                double = true;
                self.text = Text::Escaped { double };
                pos = at + 8;
                continue;
            }
            pos = at + 1;
        }
    }

    /// A start or end tag at `lt` (its name starts with a letter).
    fn tag(&mut self, buf: &[u8], lt: usize, is_end: bool) -> Result<usize, Scan> {
        let name_start = lt + 1 + usize::from(is_end);
        let (name, name_end) = match Name::read(buf, name_start) {
            NameRead::Name(name, end) => (name, end),
            NameRead::Incomplete => return Err(hold_from(buf, lt)),
            NameRead::Odd => return Err(Scan::Handoff(lt)),
        };
        let kind = if is_end { Kind::Normal } else { kind(name) };
        if kind == Kind::HandsOver {
            return Err(Scan::Handoff(lt));
        }
        // Only raw-text start tags (scripts among them), and `<meta>` when the
        // page scan is on, need their attributes read; for the rest, finding
        // the closing `>` is enough.
        let is_meta = !is_end && self.watch.csp && name == META;
        let tag = match finish_tag(buf, name_end, is_meta || matches!(kind, Kind::Raw(_))) {
            Parsed::Incomplete => return Err(hold_from(buf, lt)),
            Parsed::Tag(tag) => tag,
        };
        if is_meta {
            if tag.http_equiv {
                return Err(Scan::Handoff(lt));
            }
            self.follow_charset(buf, &tag);
        }
        if is_end {
            if name == BODY && self.stack.contains(&BODY) {
                // Not the insertion point while a `<template>` is open; what
                // comes of it is the engine's to say.
                if self.stack.contains(&TEMPLATE) {
                    return Err(Scan::Handoff(lt));
                }
                return Err(Scan::Inject(lt));
            }
            if let Some(at) = self.stack.iter().rposition(|n| *n == name) {
                self.stack.truncate(at);
            }
            self.text = Text::Data;
            return Ok(tag.end);
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Scan::Handoff(lt));
        }
        match kind {
            Kind::Void => {}
            Kind::Raw(raw) => {
                if tag.self_closing
                    || tag.ended_before_value
                    || (self.watch.csp && tag.nonce && raw == RawKind::Script)
                {
                    return Err(Scan::Handoff(lt));
                }
                if raw == RawKind::Script
                    && let Some((from, to)) = tag.id
                    && buf[from..to] == *self.script_id
                {
                    return Err(Scan::AlreadyPresent);
                }
                self.stack.push(name);
                self.text = Text::Raw(raw);
            }
            Kind::Normal | Kind::HandsOver => self.stack.push(name),
        }
        Ok(tag.end)
    }
}

impl Scanner {
    /// lol_html's `adjust_charset_on_meta_tag`: the first `<meta charset>`
    /// naming an ASCII-compatible encoding sets it, once.
    fn follow_charset(&mut self, buf: &[u8], tag: &Tag) {
        if !self.watch.meta_charset || self.charset.is_some() {
            return;
        }
        if let Some((from, to)) = tag.charset {
            self.charset = encoding_rs::Encoding::for_label_no_replacement(&buf[from..to])
                .and_then(AsciiCompatibleEncoding::new);
        }
    }
}

/// Keep everything from `at` for the next chunk, unless that is already more
/// than a tag may be: then lol_html takes over from `at`.
fn hold_from(buf: &[u8], at: usize) -> Scan {
    if buf.len() - at > MAX_TAG {
        Scan::Handoff(at)
    } else {
        Scan::Hold(at)
    }
}

/// `a` and then `b`, in one new buffer.
fn join(a: &[u8], b: &[u8]) -> Bytes {
    let mut joined = BytesMut::with_capacity(a.len() + b.len());
    joined.extend_from_slice(a);
    joined.extend_from_slice(b);
    joined.freeze()
}

fn emit(out: &mut dyn FnMut(Bytes), bytes: Bytes) {
    if !bytes.is_empty() {
        out(bytes);
    }
}
