//! Splicing tests: the inflater against flate2's gzip, and spliced output,
//! decoded by flate2, against what the rewriter produced.

use super::inflate::{Corrupt, Inflater, Status};
use super::*;
use crate::codec::Coding;
use crate::codec::decode::PREFIX_KEEP;
use crate::codec::testing::{Step, collect, decompress, html, scripted};
use bytes::{Bytes, BytesMut};
use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use std::io::Write;

/// gzip at `level`, with a sync flush after each offset in `flush_at`.
fn gzip(data: &[u8], level: u32, flush_at: &[usize]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
    let mut at = 0;
    let mut points: Vec<usize> = flush_at.iter().map(|&p| p.min(data.len())).collect();
    points.sort_unstable();
    for p in points {
        e.write_all(&data[at..p]).unwrap();
        e.flush().unwrap();
        at = p;
    }
    e.write_all(&data[at..]).unwrap();
    e.finish().unwrap()
}

/// Inflate `gz` fed in `chunk`-byte pieces, `run` bytes per call.
fn inflate(gz: &[u8], chunk: usize, run: usize, tracking: bool) -> Result<Vec<u8>, Corrupt> {
    let mut inf = Inflater::new();
    if !tracking {
        inf.stop_tracking();
    }
    let mut out = Vec::new();
    for piece in gz.chunks(chunk.max(1)) {
        inf.push(piece);
        loop {
            let status = inf.run(run, &mut out)?;
            if !tracking {
                inf.release(u64::MAX);
            }
            if status == Status::NeedInput
                || (status == Status::MemberEnd && !inf.has_input_past_member())
            {
                break;
            }
        }
    }
    if !inf.at_member_end() {
        return Err(Corrupt("ends early"));
    }
    Ok(out)
}

#[test]
fn inflates_what_flate2_compresses_at_every_level() {
    let page = html(200_000);
    for level in 0..=9 {
        let gz = gzip(&page, level, &[]);
        for (chunk, run) in [(1, 7), (13, 100), (4096, 16 * 1024), (gz.len(), 1 << 20)] {
            let got = inflate(&gz, chunk, run, false).unwrap();
            assert!(got == page, "level {level}, chunk {chunk}, run {run}");
        }
    }
}

#[test]
fn inflates_fixed_blocks_flushes_and_empty_pages() {
    for data in [&b""[..], b"a", b"<html><body>hi</body></html>"] {
        for level in [0, 1, 6, 9] {
            let gz = gzip(data, level, &[0, data.len() / 2]);
            assert_eq!(inflate(&gz, 1, 3, true).unwrap(), data);
        }
    }
}

#[test]
fn refuses_corrupt_data_without_panicking() {
    let page = html(20_000);
    let gz = gzip(&page, 6, &[5000]);
    // The trailer's CRC and length are checked.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 6] ^= 1;
    assert_eq!(
        inflate(&bad, 100, 1000, false),
        Err(Corrupt("CRC-32 mismatch"))
    );
    let mut bad = gz.clone();
    bad[n - 2] ^= 1;
    assert_eq!(
        inflate(&bad, 100, 1000, false),
        Err(Corrupt("length mismatch"))
    );
    assert_eq!(
        inflate(b"\x1f\x8b\x09", 1, 1, false),
        Err(Corrupt("not a gzip header"))
    );
    // Reserved block type 3.
    let mut bad = gzip(b"x", 6, &[]);
    bad[10] |= 0b110;
    assert!(inflate(&bad, 1, 1, false).is_err());
    // Truncated.
    assert!(inflate(&gz[..gz.len() - 1], 64, 1000, false).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_mutation_is_an_error_or_a_checked_member(
        len in 0usize..5000,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let page = html(len);
        let mut gz = gzip(&page, 6, &[len / 3]);
        for (i, bit) in flips {
            let i = i.index(gz.len());
            gz[i] ^= 1 << bit;
        }
        // Fed whole, the decoder's fast loop reads most symbols; fed a byte
        // at a time, never (it needs eight bytes ahead). Both must come to
        // the same output or the same error.
        let whole = inflate(&gz, gz.len(), 1 << 20, false);
        prop_assert_eq!(&whole, &inflate(&gz, 1, 1 << 20, false));
        if let Ok(out) = inflate(&gz, 97, 512, true) {
            // Accepted only if the trailer's CRC-32 and length match the output.
            let n = gz.len();
            let crc = u32::from_le_bytes(gz[n - 8..n - 4].try_into().unwrap());
            prop_assert_eq!(crc, crc32fast::hash(&out));
        }
    }
}

/// A stand-in rewriter: puts `snippet` before input offset `at` (at the end if
/// the page is shorter), handing out slices of its input or copies of them,
/// and holding back the last `hold` bytes of each chunk until the next one.
struct InsertAt {
    at: u64,
    snippet: Bytes,
    copy: bool,
    hold: usize,
    seen: u64,
    inserted: bool,
    held: BytesMut,
    out: VecDeque<Bytes>,
}

impl InsertAt {
    fn new(at: u64, snippet: &'static [u8], copy: bool, hold: usize) -> Self {
        InsertAt {
            at,
            snippet: Bytes::from_static(snippet),
            copy,
            hold,
            seen: 0,
            inserted: false,
            held: BytesMut::new(),
            out: VecDeque::new(),
        }
    }

    fn emit(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let start = self.seen;
        self.seen += data.len() as u64;
        let data = if self.copy {
            Bytes::copy_from_slice(&data)
        } else {
            data
        };
        if !self.inserted && self.at < self.seen {
            let k = (self.at - start) as usize;
            self.out.push_back(data.slice(..k));
            self.out.push_back(self.snippet.clone());
            self.out.push_back(data.slice(k..));
            self.inserted = true;
        } else {
            self.out.push_back(data);
        }
    }
}

impl Rewrite for InsertAt {
    fn push(&mut self, data: Bytes) {
        let data = if self.held.is_empty() {
            data
        } else {
            self.held.extend_from_slice(&data);
            self.held.split().freeze()
        };
        let keep = self.hold.min(data.len());
        self.emit(data.slice(..data.len() - keep));
        self.held.extend_from_slice(&data[data.len() - keep..]);
    }

    fn end(&mut self) {
        let rest = self.held.split().freeze();
        self.emit(rest);
        if !self.inserted {
            self.out.push_back(self.snippet.clone());
            self.inserted = true;
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }
}

fn expected(page: &[u8], at: u64, snippet: &[u8]) -> Vec<u8> {
    let at = (at as usize).min(page.len());
    [&page[..at], snippet, &page[at..]].concat()
}

/// No decompression limits: these tests are about splicing.
const UNLIMITED: DecodeLimits = DecodeLimits {
    max_bytes: u64::MAX,
    max_ratio: u64::MAX,
};

const TAG: &[u8] = b"<script type=\"module\" id=\"operator-chat-panel-script\" src=\"https://widget.example/w.js\" token=\"abc.def.ghi\"></script>";

async fn splice(gz: &[u8], chunk: usize, pause_every: usize, rw: InsertAt) -> Vec<u8> {
    let steps = crate::codec::testing::chunked(gz, chunk, pause_every);
    let (body, _) = scripted(steps);
    let Ok(checked) = check(body, UNLIMITED).await else {
        panic!("prefix check refused a valid body");
    };
    let got = collect(checked.into_body(rw)).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    got.data
}

#[tokio::test]
async fn splices_the_tag_before_the_end_and_keeps_the_upstreams_bits() {
    let page = html(200_000);
    let at = page.len() as u64 - 14;
    for level in [1, 6, 9] {
        let gz = gzip(&page, level, &[]);
        let out = splice(&gz, 8192, 3, InsertAt::new(at, TAG, false, 5)).await;
        assert_eq!(decompress(Coding::Gzip, &out), expected(&page, at, TAG));
        // Nearly all of it is the upstream's own compressed bits: the output
        // is the input plus the tag and a few bytes, not a re-encoding.
        assert!(
            out.len() < gz.len() + TAG.len() + 64,
            "level {level}: {} vs {}",
            out.len(),
            gz.len()
        );
        assert!(kept_but_bfinal(&out, &gz), "level {level}");
    }
}

#[tokio::test]
async fn a_prefix_that_decodes_to_more_than_it_holds_is_decoded_again() {
    // One frame of a repetitive page: more than HOLD decoded from less than
    // the check reads (and less than MAX_KEPT, past which the body would cut).
    let mut page = b"<!doctype html><html><body>".to_vec();
    while page.len() < HOLD + 64 * 1024 {
        page.extend_from_slice(b"<p>The same line again.</p>\n");
    }
    page.extend_from_slice(b"</body></html>");
    let gz = gzip(&page, 9, &[]);
    // The check holds at most HOLD (and one run) of it.
    let (_, held) = check_in_one_frame(&gz).await;
    assert!(held <= HOLD + RUN, "{held} decoded bytes held");
    assert_spliced_in_one_frame(&page, &gz).await;
}

#[tokio::test]
async fn a_prefix_within_the_hold_is_held_whole_and_decoded_once() {
    // An ordinary page that decodes to more than 64 KiB (the old bound) but
    // less than HOLD: the check keeps all of it, and the body goes on from
    // the same inflater instead of decoding part of it again.
    let page = html(200 * 1024);
    let gz = gzip(&page, 6, &[]);
    let (checked, held) = check_in_one_frame(&gz).await;
    assert_eq!(held, page.len());
    assert_eq!(
        checked.inf.out_total(),
        page.len() as u64,
        "no copy taken to resume from"
    );
    assert_spliced_in_one_frame(&page, &gz).await;
}

/// The prefix check of `gz` (all of it within what the check reads) sent
/// as one frame, and how many decoded bytes it holds.
async fn check_in_one_frame(gz: &[u8]) -> (Checked, usize) {
    assert!(gz.len() < PREFIX_KEEP, "{} compressed bytes", gz.len());
    let (body, _) = scripted(vec![Step::Data(Bytes::copy_from_slice(gz))]);
    let Ok(checked) = check(body, UNLIMITED).await else {
        panic!("refused");
    };
    let held = checked.decoded.iter().map(Bytes::len).sum();
    (checked, held)
}

/// `gz` sent as one frame, with the tag before `</body></html>`: the
/// rewritten page, in the upstream's own bits.
async fn assert_spliced_in_one_frame(page: &[u8], gz: &[u8]) {
    let at = page.len() as u64 - 14;
    let out = splice(gz, gz.len(), 0, InsertAt::new(at, TAG, false, 5)).await;
    assert_eq!(decompress(Coding::Gzip, &out), expected(page, at, TAG));
    assert!(kept_but_bfinal(&out, gz), "{} vs {}", out.len(), gz.len());
}

/// The output repeats the upstream's stream up to its last 64 bytes (where
/// the cut falls, next to the end of the page), but for at most one byte:
/// the one with the final block's BFINAL bit, cleared.
fn kept_but_bfinal(out: &[u8], gz: &[u8]) -> bool {
    let n = gz.len() - 64;
    let diff: Vec<usize> = (0..n).filter(|&i| out[i] != gz[i]).collect();
    match diff[..] {
        [] => true,
        // One bit, set upstream and clear here.
        [i] => (out[i] ^ gz[i]).count_ones() == 1 && out[i] < gz[i],
        _ => false,
    }
}

/// Input received but not yet decoded is not "held": a large page arriving
/// in large frames is spliced whole, not cut and encoded again.
#[tokio::test]
async fn a_large_page_in_large_frames_keeps_the_upstreams_bytes() {
    let page = html(1024 * 1024);
    let gz = gzip(&page, 6, &[]);
    let at = page.len() as u64 - 14;
    for chunk in [64 * 1024, 256 * 1024, gz.len()] {
        let out = splice(&gz, chunk, 0, InsertAt::new(at, TAG, false, 5)).await;
        assert_eq!(decompress(Coding::Gzip, &out), expected(&page, at, TAG));
        assert!(
            kept_but_bfinal(&out, &gz),
            "chunk {chunk}: {} vs {}",
            out.len(),
            gz.len()
        );
    }
}

#[tokio::test]
async fn an_unchanged_page_goes_out_byte_for_byte() {
    let page = html(100_000);
    let gz = gzip(&page, 6, &[30_000]);
    let mut rw = InsertAt::new(u64::MAX, b"", false, 3);
    rw.inserted = true;
    let out = splice(&gz, 1000, 2, rw).await;
    assert_eq!(out, gz);
}

#[tokio::test]
async fn a_rewriter_that_holds_everything_forces_a_cut_and_a_compressed_tail() {
    let page = html(3 * MAX_HELD);
    let gz = gzip(&page, 0, &[]);
    let at = page.len() as u64 - 10;
    let rw = InsertAt::new(at, TAG, true, usize::MAX);
    let out = splice(&gz, 16 * 1024, 0, rw).await;
    assert_eq!(decompress(Coding::Gzip, &out), expected(&page, at, TAG));
    assert!(out.len() < gz.len() / 2, "the tail is compressed");
}

#[tokio::test]
async fn a_second_member_is_cut_in_front_of() {
    let a = html(40_000);
    let b = html(30_000);
    let gz = [gzip(&a, 6, &[]), gzip(&b, 1, &[])].concat();
    let page = [a, b].concat();
    for at in [10, 39_990, 40_000, 50_000, 70_000] {
        // Pausing after every chunk, and never (the second member then
        // arrives during the prefix check).
        for (chunk, pause) in [(100, 1), (100, 0), (50_000, 1), (gz.len(), 1)] {
            let out = splice(&gz, chunk, pause, InsertAt::new(at, TAG, false, 7)).await;
            assert_eq!(
                decompress(Coding::Gzip, &out),
                expected(&page, at, TAG),
                "at {at}, chunk {chunk}, pause {pause}"
            );
        }
    }
}

#[tokio::test]
async fn bytes_after_the_last_member_are_ignored() {
    let page = html(30_000);
    for junk in [&b"\0\0\0\0"[..], b"\n", b"<html>trailing</html>"] {
        let gz = [gzip(&page, 6, &[]), junk.to_vec()].concat();
        assert_eq!(inflate(&gz, 1000, 4096, false).unwrap(), page);
        let at = page.len() as u64 - 14;
        for chunk in [7, 1000, gz.len()] {
            let out = splice(&gz, chunk, 1, InsertAt::new(at, TAG, false, 3)).await;
            assert_eq!(decompress(Coding::Gzip, &out), expected(&page, at, TAG));
        }
    }
}

#[tokio::test]
async fn corrupt_data_in_the_prefix_is_refused_and_handed_back() {
    let mut gz = gzip(&html(5000), 6, &[]);
    let n = gz.len();
    gz[n - 7] ^= 0x40;
    let (body, _) = scripted(vec![Step::Data(Bytes::from(gz.clone()))]);
    let Err(refused) = check(body, UNLIMITED).await else {
        panic!("corrupt body accepted");
    };
    assert_eq!(refused.why, Refusal::Corrupt);
    assert_eq!(collect(refused.body).await.data, gz);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn spliced_output_decodes_to_the_rewritten_page(
        len in 0usize..150_000,
        level in 0u32..=9,
        flushes in proptest::collection::vec(0usize..150_000, 0..4),
        chunk in 1usize..20_000,
        pause_every in 0usize..4,
        at_frac in 0.0f64..1.1,
        copy in any::<bool>(),
        hold in 0usize..40,
    ) {
        let page = html(len);
        let gz = gzip(&page, level, &flushes);
        let at = (len as f64 * at_frac) as u64;
        let rw = InsertAt::new(at, TAG, copy, hold);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = rt.block_on(splice(&gz, chunk, pause_every, rw));
        prop_assert_eq!(decompress(Coding::Gzip, &out), expected(&page, at, TAG));
    }
}

/// Timing, by hand: `cargo test --release --lib inflate_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn inflate_speed() {
    let page = html(64 * 1024);
    let gz = gzip(&page, 6, &[]);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            let out = inflate(&gz, 16 * 1024, 16 * 1024, true).unwrap();
            assert_eq!(out.len(), page.len());
        }
        let ours = t.elapsed() / 2000;
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            assert_eq!(decompress(Coding::Gzip, &gz).len(), page.len());
        }
        let theirs = t.elapsed() / 2000;
        println!("ours {ours:?}, flate2 {theirs:?}");
    }
}
