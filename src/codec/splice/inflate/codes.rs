//! Deflate's Huffman codes as lookup tables, its length and distance
//! tables, the bit cursor, and the reading of a dynamic block's code lengths
//! (RFC 1951 §3.2.5–3.2.7): the parts of [`super::Inflater`] that know the
//! format but not the stream.

use super::Corrupt;
use std::sync::{Arc, LazyLock};

/// Bits of the primary lookup tables.
const LIT_BITS: u32 = 10;
const DIST_BITS: u32 = 8;

/// A decoded table entry: `value` in bits 0–15, bit count in 16–23, kind in 24–31.
const SYMBOL: u32 = 0;
const SUBTABLE: u32 = 1 << 24;
const INVALID: u32 = 2 << 24;

/// One Huffman code as lookup tables: a primary table indexed by the next
/// `primary` bits (bit-reversed codes, as deflate sends them LSB first) and
/// subtables for longer codes.
pub(super) struct Table {
    primary_bits: u32,
    entries: Vec<u32>,
}

impl Table {
    /// The canonical code for `lens` (RFC 1951 §3.2.2). `lone_ok` allows the
    /// one incomplete code zlib accepts: a single code of length 1. Also
    /// returns the code of symbol `want` (the end-of-block code, for closing a
    /// block early) as it goes on the wire, LSB first, and its length, if that
    /// symbol has a code.
    ///
    /// Symbols are taken in canonical order (by length, then value), so the
    /// table can be filled the way libdeflate does: a code of length `len`
    /// is written once, at its bit-reversed index below `1 << len`, and the
    /// table so far is doubled (one copy) before the next length. Writing
    /// each entry at every index it owns instead cost a 2 KB gzip page more
    /// than a tenth of its decoding.
    fn build(
        lens: &[u8],
        primary_bits: u32,
        lone_ok: bool,
        want: Option<u16>,
    ) -> Result<(Table, Option<(u64, u32)>), Corrupt> {
        let mut count = [0u16; 16];
        for &l in lens {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        let max = (1..16).rev().find(|&l| count[l] != 0).unwrap_or(0) as u32;
        let mut left: i32 = 1;
        for &c in &count[1..] {
            left = (left << 1) - i32::from(c);
            if left < 0 {
                return Err(Corrupt("over-subscribed code"));
            }
        }
        if left > 0 && max != 0 && !(lone_ok && max == 1) {
            return Err(Corrupt("incomplete code"));
        }
        // Symbols sorted by code length (a counting sort), in canonical order.
        let mut offset = [0u16; 16];
        for len in 1..15 {
            offset[len + 1] = offset[len] + count[len];
        }
        let mut sorted = [0u16; 288];
        for (sym, &len) in lens.iter().enumerate() {
            if len != 0 {
                let at = &mut offset[usize::from(len)];
                sorted[usize::from(*at)] = sym as u16;
                *at += 1;
            }
        }
        let size = 1usize << primary_bits;
        let mut entries = vec![INVALID; size];
        let sub_bits = max.saturating_sub(primary_bits);
        let mut wanted = None;
        let (mut code, mut filled, mut k) = (0u32, 1usize, 0usize);
        for len in 1..=max {
            let n = usize::from(count[len as usize]);
            if len <= primary_bits {
                // The table so far repeats every `filled` entries.
                let period = 1usize << len;
                while filled < period {
                    entries.copy_within(..filled, filled);
                    filled *= 2;
                }
            }
            for &sym in &sorted[k..k + n] {
                let rev = code.reverse_bits() >> (32 - len);
                if Some(sym) == want {
                    wanted = Some((u64::from(rev), len));
                }
                let entry = u32::from(sym) | (len << 16) | SYMBOL;
                if len <= primary_bits {
                    entries[rev as usize] = entry;
                } else {
                    // A longer code's first `primary_bits` are the prefix of
                    // no shorter code, so its primary entry is still invalid
                    // or already points at its subtable.
                    let low = (rev & ((1 << primary_bits) - 1)) as usize;
                    if entries[low] & SUBTABLE == 0 {
                        entries[low] = entries.len() as u32 | (sub_bits << 16) | SUBTABLE;
                        entries.resize(entries.len() + (1 << sub_bits), INVALID);
                    }
                    let base = (entries[low] & 0xffff) as usize;
                    let step = 1usize << (len - primary_bits);
                    let sub = &mut entries[base..base + (1 << sub_bits)];
                    for e in sub[(rev >> primary_bits) as usize..]
                        .iter_mut()
                        .step_by(step)
                    {
                        *e = entry;
                    }
                }
                code += 1;
            }
            k += n;
            code <<= 1;
        }
        // Codes all shorter than the table: repeat it to its end.
        while filled < size {
            entries.copy_within(..filled, filled);
            filled *= 2;
        }
        Ok((
            Table {
                primary_bits,
                entries,
            },
            wanted,
        ))
    }

    /// The entry for the next bits: `(symbol, code length)`, or `None` for a
    /// bit pattern that is no code.
    #[inline(always)]
    pub(super) fn decode(&self, bits: u64) -> Option<(u32, u32)> {
        let mask = (1u64 << self.primary_bits) - 1;
        let mut e = self.entries[(bits & mask) as usize];
        if e & SUBTABLE != 0 && e & INVALID == 0 {
            let sub_bits = (e >> 16) & 0xff;
            let i = (bits >> self.primary_bits) & ((1u64 << sub_bits) - 1);
            e = self.entries[(e & 0xffff) as usize + i as usize];
        }
        (e & INVALID == 0).then_some((e & 0xffff, (e >> 16) & 0xff))
    }
}

/// The codes of one Huffman block, and its end-of-block code for closing the
/// block early when splicing.
pub(super) struct Codes {
    pub(super) lit: Table,
    pub(super) dist: Table,
    /// The end-of-block code as it goes on the wire (LSB first), and its length.
    pub eob: (u64, u32),
}

impl Codes {
    fn new(lit_lens: &[u8], dist_lens: &[u8]) -> Result<Codes, Corrupt> {
        // As zlib: a lone one-bit code is allowed for both (a block of
        // nothing but its end, a block with one distance).
        let (lit, eob) = Table::build(lit_lens, LIT_BITS, true, Some(256))?;
        let Some(eob) = eob else {
            return Err(Corrupt("no end-of-block code"));
        };
        let (dist, _) = Table::build(dist_lens, DIST_BITS, true, None)?;
        Ok(Codes { lit, dist, eob })
    }
}

pub(super) static FIXED: LazyLock<Arc<Codes>> = LazyLock::new(|| {
    let mut lit = [8u8; 288];
    lit[144..256].fill(9);
    lit[256..280].fill(7);
    // 32 codes: 30 and 31 are in the code but invalid as distances.
    let dist = [5u8; 32];
    // The fixed code is complete and has an end-of-block code.
    Arc::new(Codes::new(&lit, &dist).unwrap_or_else(|e| unreachable!("fixed code: {e}")))
});

pub(super) const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
pub(super) const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
pub(super) const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
pub(super) const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Order of the code length code lengths (RFC 1951 §3.2.7).
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// The bit cursor, in a form the decoding loop keeps in registers.
pub(super) struct Bits {
    /// Index of the next input byte not yet in `buf`.
    pub(super) ip: usize,
    pub(super) buf: u64,
    pub(super) n: u32,
}

impl Bits {
    /// A cursor at absolute bit `bit` of `input`, whose first byte is
    /// absolute byte `base`; `None` if the byte holding that bit is not there.
    pub(super) fn at(input: &[u8], base: u64, bit: u64) -> Option<Bits> {
        let mut b = Bits {
            ip: (bit / 8 - base) as usize,
            buf: 0,
            n: 0,
        };
        b.refill(input);
        let skip = (bit % 8) as u32;
        if b.n < skip {
            return None;
        }
        b.take(skip);
        Some(b)
    }

    /// The absolute bit position of the cursor (see [`Bits::at`]).
    pub(super) fn pos(&self, base: u64) -> u64 {
        (base + self.ip as u64) * 8 - u64::from(self.n)
    }

    /// Refill from the eight input bytes at the cursor, after which at least
    /// 56 bits are held; false, with nothing changed, if fewer are left.
    #[inline(always)]
    pub(super) fn refill_word(&mut self, input: &[u8]) -> bool {
        let Some(word) = input.get(self.ip..self.ip + 8) else {
            return false;
        };
        let w = u64::from_le_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        // Bits above `n` may already hold some of these bytes (from the last
        // refill): the same bits, so OR-ing them again is harmless, and
        // nothing reads past `n` but a lookup whose length is checked.
        self.buf |= w << self.n;
        let take = (63 - self.n) / 8;
        self.ip += take as usize;
        self.n += take * 8;
        true
    }

    #[inline(always)]
    pub(super) fn refill(&mut self, input: &[u8]) {
        if !self.refill_word(input) {
            while self.n <= 56 && self.ip < input.len() {
                self.buf |= u64::from(input[self.ip]) << self.n;
                self.ip += 1;
                self.n += 8;
            }
        }
    }

    #[inline(always)]
    pub(super) fn take(&mut self, n: u32) -> u64 {
        let v = self.buf & ((1u64 << n) - 1);
        self.buf >>= n;
        self.n -= n;
        v
    }
}

/// The next `n` bits, or `None` if the input ends first.
pub(super) fn need(b: &mut Bits, input: &[u8], n: u32) -> Option<u64> {
    if b.n < n {
        b.refill(input);
        if b.n < n {
            return None;
        }
    }
    Some(b.take(n))
}

/// A dynamic block's codes, or `None` if the input ends inside them.
pub(super) fn dynamic_codes(b: &mut Bits, input: &[u8]) -> Result<Option<Codes>, Corrupt> {
    macro_rules! bits {
        ($n:expr) => {
            match need(b, input, $n) {
                Some(v) => v as usize,
                None => return Ok(None),
            }
        };
    }
    let hlit = bits!(5) + 257;
    let hdist = bits!(5) + 1;
    let hclen = bits!(4) + 4;
    if hlit > 286 || hdist > 30 {
        return Err(Corrupt("too many length or distance codes"));
    }
    let mut cl_lens = [0u8; 19];
    for &i in &CL_ORDER[..hclen] {
        cl_lens[i] = bits!(3) as u8;
    }
    let (cl, _) = Table::build(&cl_lens, 7, false, None)?;
    let mut lens = [0u8; 286 + 30];
    let mut i = 0;
    while i < hlit + hdist {
        // A code length code is at most 7 bits: one lookup.
        if b.n < 7 {
            b.refill(input);
        }
        let Some((sym, len)) = cl.decode(b.buf) else {
            if b.n >= 7 {
                return Err(Corrupt("invalid code length code"));
            }
            return Ok(None);
        };
        if len > b.n {
            return Ok(None);
        }
        b.take(len);
        match sym {
            0..=15 => {
                lens[i] = sym as u8;
                i += 1;
            }
            16 => {
                let Some(&prev) = i.checked_sub(1).and_then(|p| lens.get(p)) else {
                    return Err(Corrupt("repeat with no previous length"));
                };
                let n = 3 + bits!(2);
                if i + n > hlit + hdist {
                    return Err(Corrupt("code lengths overflow"));
                }
                lens[i..i + n].fill(prev);
                i += n;
            }
            17 | 18 => {
                let n = if sym == 17 {
                    3 + bits!(3)
                } else {
                    11 + bits!(7)
                };
                if i + n > hlit + hdist {
                    return Err(Corrupt("code lengths overflow"));
                }
                i += n;
            }
            _ => return Err(Corrupt("invalid code length code")),
        }
    }
    Codes::new(&lens[..hlit], &lens[hlit..hlit + hdist]).map(Some)
}
