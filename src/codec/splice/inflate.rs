//! A streaming gzip inflater that knows where it is in the compressed bits.
//!
//! zlib (and zlib-rs behind flate2) decode faster than this, but say nothing
//! about where a deflate block or a symbol starts. Splicing needs exactly that:
//! the bit position of the last symbol boundary before an uncompressed offset,
//! the block it is in (final or not, its end-of-block code), and the input
//! bits kept until the caller has copied them out. So this decoder keeps the
//! compressed input from the oldest position the caller may still cut at,
//! records a [`Checkpoint`] at every block start and at the start of every
//! [`Inflater::run`], and re-decodes from a checkpoint (without output) when
//! asked for a cut point.
//!
//! It decodes exactly the deflate format (RFC 1951) inside gzip members
//! (RFC 1952), with zlib's strictness: over-subscribed or incomplete Huffman
//! codes (but for a lone one-bit distance code), a missing end-of-block code,
//! distances past the start of the output, bad stored lengths, reserved header
//! flags and CRC-32 or length mismatches in the trailer are errors.

mod codes;
mod huffman;

use codes::{Bits, Codes, DIST_EXTRA, FIXED, LEN_BASE, LEN_EXTRA, dynamic_codes, need};
use std::collections::VecDeque;
use std::sync::Arc;

/// Why the compressed data is not valid gzip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gzip data: {0}")]
pub struct Corrupt(pub &'static str);

/// Where [`Inflater::run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every input byte given so far is used (or held for a symbol it starts).
    NeedInput,
    /// The output limit of this call was reached.
    OutputFull,
    /// A gzip member ended (its trailer checked); more input would start another.
    MemberEnd,
}

/// The deflate window: matches reach at most this far back.
const WINDOW: usize = 32 * 1024;

/// Output kept beyond the window before the window is moved back to the front
/// of its buffer: moving 32 KiB once per 64 KiB of output, not once per run
/// (16 KiB), which had the page's bytes moved twice over (callgrind).
const WINDOW_ROOM: usize = 64 * 1024;

/// Uncompressed bytes between checkpoints inside a Huffman block.
const MARK: usize = 512;

/// Room past the output limit: the longest match, and the overshoot of
/// copying matches 16 bytes at a time.
const SLACK: usize = 258 + 16;

/// A block being decoded.
#[derive(Clone)]
struct Block {
    /// Bit position of the block's 3-bit header (its first bit is BFINAL).
    header_bit: u64,
    /// Uncompressed offset where the block's data starts.
    start_out: u64,
    last: bool,
    /// `None` for a stored block.
    codes: Option<Arc<Codes>>,
}

/// A position the decoder was at: a symbol boundary inside `block`, or a
/// block header when `block` is `None`.
#[derive(Clone)]
struct Checkpoint {
    bit: u64,
    out: u64,
    block: Option<Block>,
}

/// Where to cut the stream for an uncompressed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Bits before this position are kept as they are.
    pub bit: u64,
    /// Uncompressed bytes before this offset are in those bits.
    pub out: u64,
    /// The block the cut is inside and must be closed with this code.
    pub eob: Option<(u64, u32)>,
}

#[derive(Clone)]
enum State {
    GzipHeader,
    BlockHeader,
    Huffman(Block),
    Stored {
        block: Block,
        left: u32,
    },
    Trailer,
    /// A member's trailer was checked; more input starts another member.
    MemberEnd,
    /// Bytes after the last member that are no gzip header: ignored, as
    /// zlib's `gunzip` and browsers do with trailing garbage.
    Trailing,
}

/// Compressed input not yet released. The released front is dropped lazily:
/// releasing a few KiB used to move everything after it, and a large page that
/// arrived in large frames had its input moved over and over (callgrind, 1 MB
/// gzip page: 4.6 MB moved a request).
#[derive(Clone, Default)]
struct Input {
    bytes: Vec<u8>,
    /// Released bytes still at the front of `bytes`.
    head: usize,
}

impl Input {
    fn extend_from_slice(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// Release the first `n` live bytes. The buffer is compacted once its
    /// dead front is as long as the live rest, so no byte is moved more often
    /// than bytes are released.
    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head >= self.bytes.len() - self.head {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
    }
}

impl std::ops::Deref for Input {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[self.head..]
    }
}

#[derive(Clone)]
pub struct Inflater {
    /// Compressed input from absolute byte `base` on.
    input: Input,
    base: u64,
    /// Absolute bit position of the next bit to decode.
    bit: u64,
    state: State,
    /// The last [`WINDOW`] bytes of output and what this run produced after them.
    window: Vec<u8>,
    /// Uncompressed bytes produced in all.
    out_total: u64,
    /// Output of the current member, for its trailer check.
    member_crc: crc32fast::Hasher,
    member_len: u64,
    /// Where the caller may still cut; oldest first.
    checkpoints: VecDeque<Checkpoint>,
    /// The current member's final block, once it has started.
    pub last_block_header: Option<u64>,
    /// Bit position just past the last member's deflate data (before its trailer).
    pub deflate_end: Option<u64>,
    /// Whether checkpoints are recorded (off once the caller stops splicing).
    tracking: bool,
    /// `window.len()` when the current run started: output before it is
    /// counted in `out_total`.
    run_start: usize,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        Inflater {
            input: Input::default(),
            base: 0,
            bit: 0,
            state: State::GzipHeader,
            window: Vec::with_capacity(2 * WINDOW),
            out_total: 0,
            member_crc: crc32fast::Hasher::new(),
            member_len: 0,
            checkpoints: VecDeque::new(),
            last_block_header: None,
            deflate_end: None,
            tracking: true,
            run_start: 0,
        }
    }

    /// Append compressed input.
    pub fn push(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// Uncompressed bytes produced so far.
    pub fn out_total(&self) -> u64 {
        self.out_total
    }

    /// Compressed bytes received so far.
    pub fn in_total(&self) -> u64 {
        self.base + self.input.len() as u64
    }

    /// Compressed bytes decoded but held for the caller (not yet released);
    /// input not yet decoded does not count.
    pub fn held(&self) -> usize {
        (self.bit / 8).saturating_sub(self.base) as usize
    }

    /// Whether the input ends cleanly here: every member complete.
    pub fn at_member_end(&self) -> bool {
        match self.state {
            State::MemberEnd => self.bit == self.in_total() * 8 || !self.member_follows(),
            State::Trailing => true,
            _ => false,
        }
    }

    /// Whether what is buffered beyond the last complete member starts (or
    /// may start) another member.
    pub fn has_input_past_member(&self) -> bool {
        matches!(self.state, State::MemberEnd)
            && self.bit < self.in_total() * 8
            && self.member_follows()
    }

    /// The bytes after a member's trailer begin like a gzip header.
    fn member_follows(&self) -> bool {
        let rest = self.aligned();
        rest.iter().zip([0x1f, 0x8b]).all(|(a, b)| *a == b)
    }

    /// The input bytes from absolute byte `from` up to `to` (both still held).
    pub fn input_bytes(&self, from: u64, to: u64) -> &[u8] {
        let a = (from - self.base) as usize;
        let b = (to - self.base) as usize;
        &self.input[a..b]
    }

    /// Stop keeping input for cuts: from now on input is dropped once decoded.
    pub fn stop_tracking(&mut self) {
        self.tracking = false;
        self.checkpoints.clear();
        self.release(self.bit / 8);
    }

    /// Drop input before absolute byte `upto` (the caller copied it out) and
    /// checkpoints it can no longer cut at.
    pub fn release(&mut self, upto: u64) {
        let upto = upto.min(self.bit / 8);
        if upto <= self.base {
            return;
        }
        let n = (upto - self.base) as usize;
        self.input.consume(n);
        self.base = upto;
        while self.checkpoints.len() > 1 && self.checkpoints[1].bit <= upto * 8 {
            self.checkpoints.pop_front();
        }
        if self.checkpoints.front().is_some_and(|c| c.bit < upto * 8) {
            self.checkpoints.pop_front();
        }
    }

    /// The uncompressed offset of the oldest position a cut can still go to.
    pub fn oldest_cut_out(&self) -> u64 {
        self.checkpoints.front().map_or(self.out_total, |c| c.out)
    }

    /// Add a checkpoint at the last symbol boundary at or before `confirmed`,
    /// so that the bits before it may be copied out (when the input pauses
    /// inside a run the rewriter has mostly confirmed).
    pub fn settle(&mut self, confirmed: u64) {
        // Inside the final block or a stored block nothing more can go anyway.
        if self.last_block_header.is_some() || matches!(self.state, State::Stored { .. }) {
            return;
        }
        let Some(i) = self.checkpoints.iter().rposition(|c| c.out <= confirmed) else {
            return;
        };
        let cp = &self.checkpoints[i];
        let Some(block) = &cp.block else { return };
        let Some(codes) = &block.codes else { return };
        let (bit, out) = self.walk(codes, cp.bit, cp.out, confirmed);
        if bit > cp.bit {
            let settled = Checkpoint {
                bit,
                out,
                block: Some(block.clone()),
            };
            self.checkpoints.insert(i + 1, settled);
        }
    }

    /// The furthest bit the caller may copy out while uncompressed bytes up
    /// to `confirmed` are known to stay as they are: the latest checkpoint at
    /// or before `confirmed`, but never the header of the member's final block
    /// (its BFINAL bit may have to be cleared) nor into a stored block (its
    /// length may have to be rewritten).
    pub fn emit_limit(&self, confirmed: u64) -> u64 {
        let mut limit = self.base * 8;
        for c in &self.checkpoints {
            if c.out > confirmed {
                break;
            }
            limit = match &c.block {
                Some(b) if b.codes.is_none() => b.header_bit,
                _ => c.bit,
            };
        }
        if let Some(h) = self.last_block_header {
            limit = limit.min(h);
        }
        if let State::Stored { block, .. } = &self.state {
            limit = limit.min(block.header_bit);
        }
        limit.max(self.base * 8)
    }

    /// The cut for uncompressed offset `x` (at most what was produced): the
    /// last symbol boundary at or before it, found by decoding again from the
    /// latest checkpoint before it. Inside a stored block the cut goes back
    /// to the block's header.
    pub fn cut_at(&self, x: u64) -> Cut {
        let cp = self
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.out <= x)
            .or(self.checkpoints.front());
        let Some(cp) = cp else {
            // Nothing to go back to: cut where the decoder is.
            return Cut {
                bit: self.bit,
                out: self.out_total,
                eob: None,
            };
        };
        let Some(block) = &cp.block else {
            return Cut {
                bit: cp.bit,
                out: cp.out,
                eob: None,
            };
        };
        let at_header = Cut {
            bit: block.header_bit,
            out: block.start_out,
            eob: None,
        };
        let Some(codes) = &block.codes else {
            return at_header;
        };
        let (bit, out) = self.walk(codes, cp.bit, cp.out, x);
        if out == block.start_out {
            return at_header;
        }
        Cut {
            bit,
            out,
            eob: Some(codes.eob),
        }
    }

    /// Step over symbols from `(bit, out)` while they end at or before `x`;
    /// stops at the end-of-block code, or where the input ends.
    fn walk(&self, codes: &Codes, bit: u64, mut out: u64, x: u64) -> (u64, u64) {
        let input: &[u8] = &self.input;
        let Some(mut b) = Bits::at(input, self.base, bit) else {
            return (bit, out);
        };
        loop {
            b.refill(input);
            let here = b.pos(self.base);
            let Some((sym, len)) = codes.lit.decode(b.buf) else {
                return (here, out);
            };
            if len > b.n {
                return (here, out);
            }
            b.take(len);
            let produced = match sym {
                0..=255 => 1,
                256 => return (here, out),
                _ => {
                    let i = (sym - 257) as usize;
                    let (Some(&base), Some(&extra)) = (LEN_BASE.get(i), LEN_EXTRA.get(i)) else {
                        return (here, out);
                    };
                    let extra = u32::from(extra);
                    if extra > b.n {
                        return (here, out);
                    }
                    let length = u64::from(base) + b.take(extra);
                    let Some((dsym, dlen)) = codes.dist.decode(b.buf) else {
                        return (here, out);
                    };
                    if dlen > b.n {
                        return (here, out);
                    }
                    b.take(dlen);
                    let dextra = u32::from(DIST_EXTRA.get(dsym as usize).copied().unwrap_or(0));
                    if dextra > b.n {
                        return (here, out);
                    }
                    b.take(dextra);
                    length
                }
            };
            if out + produced > x {
                return (here, out);
            }
            out += produced;
        }
    }

    /// Decode until the input runs out, `limit` bytes were produced, or a
    /// member ended. The new output is appended to `sink`.
    pub fn run(&mut self, limit: usize, sink: &mut Vec<u8>) -> Result<Status, Corrupt> {
        if self.window.len() > WINDOW + WINDOW_ROOM {
            let cut = self.window.len() - WINDOW;
            self.window.drain(..cut);
        }
        self.run_start = self.window.len();
        let status = self.run_states(limit);
        let new = &self.window[self.run_start..];
        sink.extend_from_slice(new);
        self.member_crc.update(new);
        self.member_len += new.len() as u64;
        self.out_total += new.len() as u64;
        self.run_start = self.window.len();
        match status? {
            Status::MemberEnd => {
                self.check_trailer()?;
                Ok(Status::MemberEnd)
            }
            s => Ok(s),
        }
    }

    /// The uncompressed offset the decoder is at.
    fn out_now(&self) -> u64 {
        self.out_total + (self.window.len() - self.run_start) as u64
    }

    fn checkpoint(&mut self, block: Option<Block>) {
        if !self.tracking {
            return;
        }
        let cp = Checkpoint {
            bit: self.bit,
            out: self.out_now(),
            block,
        };
        // A later checkpoint at the same place says more (it knows the block).
        while self
            .checkpoints
            .back()
            .is_some_and(|last| last.bit == cp.bit && last.out == cp.out)
        {
            self.checkpoints.pop_back();
        }
        self.checkpoints.push_back(cp);
    }

    /// The bytes from the bit cursor on, if it is at a byte boundary.
    fn aligned(&self) -> &[u8] {
        debug_assert_eq!(self.bit % 8, 0);
        &self.input[(self.bit / 8 - self.base) as usize..]
    }

    fn run_states(&mut self, limit: usize) -> Result<Status, Corrupt> {
        let stop = self.run_start + limit;
        if let State::Huffman(block) = &self.state {
            let block = block.clone();
            self.checkpoint(Some(block));
        }
        loop {
            match &mut self.state {
                State::MemberEnd => {
                    if self.bit == self.in_total() * 8 {
                        return Ok(Status::NeedInput);
                    }
                    if !self.member_follows() {
                        tracing::debug!("ignoring bytes after the last gzip member");
                        self.state = State::Trailing;
                        continue;
                    }
                    if self.tracking {
                        // Cuts cannot reach across members: the caller cuts
                        // here (and stops tracking) before another starts.
                        return Ok(Status::NeedInput);
                    }
                    self.state = State::GzipHeader;
                }
                State::Trailing => {
                    self.bit = self.in_total() * 8;
                    return Ok(Status::NeedInput);
                }
                State::GzipHeader => {
                    let Some(len) = gzip_header_len(self.aligned())? else {
                        return Ok(Status::NeedInput);
                    };
                    self.bit += 8 * len as u64;
                    self.member_crc = crc32fast::Hasher::new();
                    self.member_len = 0;
                    self.last_block_header = None;
                    self.deflate_end = None;
                    self.state = State::BlockHeader;
                }
                State::BlockHeader => {
                    self.checkpoint(None);
                    let Some(block) = self.block_header()? else {
                        return Ok(Status::NeedInput);
                    };
                    if block.last {
                        self.last_block_header = Some(block.header_bit);
                    }
                    self.state = match block.codes {
                        Some(_) => State::Huffman(block.clone()),
                        None => {
                            // LEN and NLEN follow at the next byte boundary.
                            let at = self.bit.div_ceil(8) * 8;
                            let rest = &self.input[(at / 8 - self.base) as usize..];
                            let [l0, l1, n0, n1, ..] = *rest else {
                                // Read the header again once LEN is here.
                                self.bit = block.header_bit;
                                return Ok(Status::NeedInput);
                            };
                            let len = u16::from_le_bytes([l0, l1]);
                            if len != !u16::from_le_bytes([n0, n1]) {
                                return Err(Corrupt("stored block length"));
                            }
                            self.bit = at + 32;
                            State::Stored {
                                block: block.clone(),
                                left: u32::from(len),
                            }
                        }
                    };
                    if block.codes.is_some() {
                        self.checkpoint(Some(block));
                    }
                }
                State::Stored { block, left } => {
                    let (last, want) = (block.last, *left);
                    let room = stop.saturating_sub(self.window.len());
                    let n = (want as usize).min(room).min(self.aligned().len());
                    let from = (self.bit / 8 - self.base) as usize;
                    self.window.extend_from_slice(&self.input[from..from + n]);
                    self.bit += 8 * n as u64;
                    let left = want - n as u32;
                    if left == 0 {
                        self.end_block(last);
                        continue;
                    }
                    if let State::Stored { left: l, .. } = &mut self.state {
                        *l = left;
                    }
                    return Ok(if n == room {
                        Status::OutputFull
                    } else {
                        Status::NeedInput
                    });
                }
                State::Huffman(block) => {
                    let block = block.clone();
                    let codes = block.codes.clone().unwrap_or_else(|| FIXED.clone());
                    // While tracking, stop every MARK bytes for a checkpoint, so
                    // a cut never decodes more than that again.
                    let until = if self.tracking {
                        stop.min(self.window.len() + MARK)
                    } else {
                        stop
                    };
                    match self.huffman(&codes, until)? {
                        Some(Status::OutputFull) if self.window.len() < stop => {
                            self.checkpoint(Some(block));
                        }
                        Some(status) => return Ok(status),
                        None => self.end_block(block.last),
                    }
                }
                State::Trailer => {
                    let at = self.bit.div_ceil(8) * 8;
                    let rest = &self.input[(at / 8 - self.base) as usize..];
                    if rest.len() < 8 {
                        return Ok(Status::NeedInput);
                    }
                    self.bit = at + 64;
                    self.state = State::MemberEnd;
                    return Ok(Status::MemberEnd);
                }
            }
        }
    }

    fn end_block(&mut self, last: bool) {
        if last {
            self.deflate_end = Some(self.bit);
            self.state = State::Trailer;
        } else {
            self.state = State::BlockHeader;
        }
    }

    /// The member's CRC-32 and length, against what was decoded.
    fn check_trailer(&mut self) -> Result<(), Corrupt> {
        let end = self.bit / 8;
        let t = self.input_bytes(end - 8, end);
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let ours = std::mem::replace(&mut self.member_crc, crc32fast::Hasher::new()).finalize();
        if crc != ours {
            return Err(Corrupt("CRC-32 mismatch"));
        }
        if u64::from(isize) != self.member_len & 0xffff_ffff {
            return Err(Corrupt("length mismatch"));
        }
        Ok(())
    }

    /// Read a block header (and a dynamic block's code description), or
    /// `None` if the input ends inside it.
    fn block_header(&mut self) -> Result<Option<Block>, Corrupt> {
        let input: &[u8] = &self.input;
        let header_bit = self.bit;
        let Some(mut b) = Bits::at(input, self.base, self.bit) else {
            return Ok(None);
        };
        let Some(h) = need(&mut b, input, 3) else {
            return Ok(None);
        };
        let last = h & 1 == 1;
        let codes = match h >> 1 {
            0 => None,
            1 => Some(FIXED.clone()),
            2 => {
                let Some(codes) = dynamic_codes(&mut b, input)? else {
                    return Ok(None);
                };
                Some(Arc::new(codes))
            }
            _ => return Err(Corrupt("reserved block type")),
        };
        self.bit = b.pos(self.base);
        Ok(Some(Block {
            header_bit,
            start_out: self.out_now(),
            last,
            codes,
        }))
    }
}

/// The length of a complete gzip member header at the start of `h`, or
/// `None` if it is not all there yet.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, Corrupt> {
    if h.len() < 10 {
        if h.iter().zip([0x1f, 0x8b, 8]).any(|(a, b)| *a != b) {
            return Err(Corrupt("not a gzip header"));
        }
        return Ok(None);
    }
    if h[..3] != [0x1f, 0x8b, 8] {
        return Err(Corrupt("not a gzip header"));
    }
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err(Corrupt("reserved gzip header flags"));
    }
    let mut at = 10;
    if flags & 4 != 0 {
        let Some(x) = h.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for flag in [8, 16] {
        if flags & flag != 0 {
            let Some(nul) = h.get(at..).and_then(|r| r.iter().position(|&c| c == 0)) else {
                return Ok(None);
            };
            at += nul + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    Ok((at <= h.len()).then_some(at))
}
