//! Decoding a Huffman block's symbols into the window: a fast loop while
//! enough input is ahead that no symbol can run out of it, and a careful loop
//! that stops cleanly at the end of the input and names what is wrong.

use super::codes::{Codes, DIST_BASE, DIST_EXTRA, LEN_BASE, LEN_EXTRA};
use super::{Bits, Corrupt, Inflater, SLACK, Status};

impl Inflater {
    /// Decode symbols until the end-of-block code (`None`), or stop with a status.
    pub(super) fn huffman(
        &mut self,
        codes: &Codes,
        stop: usize,
    ) -> Result<Option<Status>, Corrupt> {
        let input: &[u8] = &self.input;
        let base = self.base;
        // Not even the byte a symbol starts in is here yet.
        let Some(mut b) = Bits::at(input, base, self.bit) else {
            return Ok(Some(Status::NeedInput));
        };
        // Output goes into a buffer sized up front (then cut back), so that
        // literals are single stores and matches fixed-size copies.
        let window = &mut self.window;
        let mut pos = window.len();
        window.resize(stop.max(pos) + SLACK, 0);
        let (member_len, run_start) = (self.member_len as usize, self.run_start);
        // The fast loop: while eight input bytes are there to refill from,
        // a refill holds at least 56 bits, more than any symbol with its
        // extra bits and distance takes (48), so no symbol can run out of
        // input half-way. Anything unusual (an invalid code, a distance too
        // far back) stops it before a bit is taken, and the careful loop below
        // reads that symbol again and says what is wrong.
        while pos < stop {
            if !b.refill_word(input) {
                break;
            }
            let Some((sym, len)) = codes.lit.decode(b.buf) else {
                break;
            };
            if sym < 256 {
                b.take(len);
                window[pos] = sym as u8;
                pos += 1;
                continue;
            }
            if sym == 256 {
                b.take(len);
                window.truncate(pos);
                self.bit = b.pos(base);
                return Ok(None);
            }
            let i = (sym - 257) as usize;
            let (Some(&lbase), Some(&lextra)) = (LEN_BASE.get(i), LEN_EXTRA.get(i)) else {
                break;
            };
            let rest = b.buf >> len;
            let lextra = u32::from(lextra);
            let Some((dsym, dlen)) = codes.dist.decode(rest >> lextra) else {
                break;
            };
            let d = dsym as usize;
            let (Some(&dbase), Some(&dextra)) = (DIST_BASE.get(d), DIST_EXTRA.get(d)) else {
                break;
            };
            let dextra = u32::from(dextra);
            let length = usize::from(lbase) + (rest & ((1u64 << lextra) - 1)) as usize;
            let dist =
                usize::from(dbase) + ((rest >> (lextra + dlen)) & ((1u64 << dextra) - 1)) as usize;
            if dist > member_len + (pos - run_start) || dist > pos {
                break;
            }
            b.take(len + lextra + dlen + dextra);
            copy_match(window, pos, dist, length);
            pos += length;
        }
        let result = loop {
            if pos >= stop {
                break Some(Status::OutputFull);
            }
            b.refill(input);
            let at = (b.ip, b.buf, b.n);
            let Some((sym, len)) = codes.lit.decode(b.buf) else {
                if b.n >= 15 {
                    window.truncate(pos);
                    return Err(Corrupt("invalid literal/length code"));
                }
                break Some(Status::NeedInput);
            };
            if len > b.n {
                break Some(Status::NeedInput);
            }
            b.take(len);
            if sym < 256 {
                window[pos] = sym as u8;
                pos += 1;
                continue;
            }
            if sym == 256 {
                break None;
            }
            let i = (sym - 257) as usize;
            let (Some(&lbase), Some(&lextra)) = (LEN_BASE.get(i), LEN_EXTRA.get(i)) else {
                window.truncate(pos);
                return Err(Corrupt("invalid length symbol"));
            };
            let lextra = u32::from(lextra);
            let Some((dsym, dlen)) = codes.dist.decode(b.buf >> lextra) else {
                if b.n >= lextra + 15 {
                    window.truncate(pos);
                    return Err(Corrupt("invalid distance code"));
                }
                (b.ip, b.buf, b.n) = at;
                break Some(Status::NeedInput);
            };
            let d = dsym as usize;
            let (Some(&dbase), Some(&dextra)) = (DIST_BASE.get(d), DIST_EXTRA.get(d)) else {
                window.truncate(pos);
                return Err(Corrupt("invalid distance symbol"));
            };
            let dextra = u32::from(dextra);
            if lextra + dlen + dextra > b.n {
                (b.ip, b.buf, b.n) = at;
                break Some(Status::NeedInput);
            }
            let length = usize::from(lbase) + b.take(lextra) as usize;
            b.take(dlen);
            let dist = usize::from(dbase) + b.take(dextra) as usize;
            // Within this member's output, and so within the window.
            if dist > member_len + (pos - run_start) || dist > pos {
                window.truncate(pos);
                return Err(Corrupt("distance too far back"));
            }
            copy_match(window, pos, dist, length);
            pos += length;
        };
        window.truncate(pos);
        self.bit = b.pos(base);
        Ok(result)
    }
}

/// Copy a match of `length` bytes from `dist` back to `pos` in `window`,
/// which has room for up to 16 bytes past the match.
#[inline(always)]
fn copy_match(window: &mut [u8], pos: usize, dist: usize, length: usize) {
    let from = pos - dist;
    if dist >= 16 {
        // Each 16-byte piece reads only bytes already written; the last may
        // write past the match, into the slack.
        let mut k = 0;
        while k < length {
            let (done, free) = window.split_at_mut(pos + k);
            free[..16].copy_from_slice(&done[from + k..from + k + 16]);
            k += 16;
        }
    } else {
        for k in 0..length {
            window[pos + k] = window[from + k];
        }
    }
}
