//! Unit tests of `decode`, kept beside it so the module itself reads as code.

use super::*;
use crate::codec::testing::*;
use std::sync::atomic::Ordering;

const DEFAULT: DecodeLimits = DecodeLimits {
    max_bytes: 64 * 1024 * 1024,
    max_ratio: 100,
};

fn err_of<T>(e: &BoxError) -> Option<&T>
where
    T: std::error::Error + 'static,
{
    e.downcast_ref::<T>()
}

async fn decoded(steps: Vec<Step>, coding: Coding, limits: DecodeLimits) -> Collected {
    let (body, _) = scripted(steps);
    match decode_checked(body, coding, limits).await {
        Ok(b) => collect(b).await,
        Err(r) => panic!("refused: {:?}", r.why),
    }
}

#[test]
fn limits_allow_the_grace_then_the_ratio() {
    let l = DecodeLimits {
        max_bytes: 10 * RATIO_GRACE_BYTES,
        max_ratio: 100,
    };
    assert!(l.check(RATIO_GRACE_BYTES, 1).is_ok());
    assert!(matches!(
        l.check(RATIO_GRACE_BYTES + 1, 1),
        Err(DecodeError::Ratio { ratio: 100 })
    ));
    assert!(l.check(3_000_000, 30_000).is_ok());
    assert!(matches!(
        l.check(3_000_001, 30_000),
        Err(DecodeError::Ratio { .. })
    ));
    assert!(
        l.check(10 * RATIO_GRACE_BYTES, 10 * RATIO_GRACE_BYTES)
            .is_ok()
    );
    assert!(matches!(
        l.check(10 * RATIO_GRACE_BYTES + 1, u64::MAX),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn from_config_reads_the_inject_keys() {
    let cfg = crate::config::from_toml_str(
        "[inject]\nmax_decompressed_bytes = 1000\nmax_decompression_ratio = 7",
    )
    .unwrap();
    assert_eq!(
        DecodeLimits::from_config(&cfg.inject),
        DecodeLimits {
            max_bytes: 1000,
            max_ratio: 7
        }
    );
}

#[tokio::test]
async fn every_coding_round_trips_in_any_chunking() {
    for page in [html(1000), html(300 * 1024)] {
        for coding in COMPRESSING {
            let wire = compress(coding, &page);
            for (size, pause_every) in [
                (1, 0),
                (7, 3),
                (1000, 1),
                (16 * 1024, 2),
                (wire.len(), 0),
                (wire.len(), 1),
            ] {
                if size == 1 && wire.len() > 4096 {
                    continue; // byte-by-byte on the large page adds time, not coverage
                }
                let got = decoded(chunked(&wire, size, pause_every), coding, DEFAULT).await;
                assert!(
                    got.error.is_none(),
                    "{coding:?} size {size}: {:?}",
                    got.error
                );
                assert!(
                    got.data == page,
                    "{coding:?} size {size} pause {pause_every}: {} vs {} bytes",
                    got.data.len(),
                    page.len()
                );
                assert!(
                    got.max_frame <= HOLD.max(CHUNK),
                    "{coding:?}: frame of {}",
                    got.max_frame
                );
            }
        }
    }
}

#[tokio::test]
async fn identity_is_not_touched() {
    let (body, _) = scripted(vec![Step::Data(Bytes::from_static(b"abc")), Step::Fail]);
    let got = collect(decode(body, Coding::Identity, DEFAULT).await.unwrap()).await;
    assert_eq!(got.data, b"abc");
    assert!(got.error.is_some());
}

#[tokio::test]
async fn gzip_members_and_zstd_frames_concatenate() {
    let (a, b) = (html(5000), html(7000));
    for coding in [Coding::Gzip, Coding::Zstd] {
        let mut wire = compress(coding, &a);
        wire.extend(compress(coding, &b));
        let got = decoded(chunked(&wire, 999, 2), coding, DEFAULT).await;
        assert!(got.error.is_none(), "{coding:?}: {:?}", got.error);
        assert_eq!(got.data, [a.clone(), b.clone()].concat(), "{coding:?}");
    }
}

#[tokio::test]
async fn raw_deflate_is_accepted_for_deflate() {
    let page = html(50_000);
    let wire = compress_raw_deflate(&page);
    assert!(!is_zlib_header(&wire));
    assert!(is_zlib_header(&compress(Coding::Deflate, &page)));
    for size in [1, 2, 3, 4096] {
        let got = decoded(chunked(&wire, size, 1), Coding::Deflate, DEFAULT).await;
        assert!(got.error.is_none(), "size {size}: {:?}", got.error);
        assert!(got.data == page, "size {size}");
    }
}

async fn assert_passes_through(wire: &[u8], coding: Coding, limits: DecodeLimits, why: Refusal) {
    let (body, _) = scripted(chunked(wire, 4096, 0));
    let refused = decode_checked(body, coding, limits)
        .await
        .err()
        .unwrap_or_else(|| panic!("{coding:?} not refused"));
    assert_eq!(refused.why, why, "{coding:?}");
    let got = collect(refused.body).await;
    assert!(got.error.is_none());
    assert!(
        got.data == wire,
        "{coding:?}: pass-through differs ({} vs {} bytes)",
        got.data.len(),
        wire.len()
    );
}

#[tokio::test]
async fn invalid_data_passes_through_as_received() {
    let page = html(20_000);
    for coding in COMPRESSING {
        // An uncompressed page mislabelled as compressed.
        assert_passes_through(&page, coding, DEFAULT, Refusal::Corrupt).await;
        // A body cut short: valid start, no end.
        let wire = compress(coding, &page);
        assert_passes_through(&wire[..wire.len() / 2], coding, DEFAULT, Refusal::Corrupt).await;
        // An empty body is not a valid compressed stream either.
        assert_passes_through(b"", coding, DEFAULT, Refusal::Corrupt).await;
    }
    let mut garbage = compress(Coding::Gzip, &page);
    garbage[40] ^= 0xff;
    garbage[41] ^= 0xff;
    assert_passes_through(&garbage, Coding::Gzip, DEFAULT, Refusal::Corrupt).await;
}

#[tokio::test]
async fn upstream_failure_in_the_prefix_is_a_body_error() {
    for coding in COMPRESSING {
        let wire = compress(coding, &html(40_000));
        let mut steps = chunked(&wire[..wire.len() / 2], 1000, 0);
        steps.push(Step::Fail);
        let got = decoded(steps, coding, DEFAULT).await;
        let err = got
            .error
            .unwrap_or_else(|| panic!("{coding:?}: clean end after upstream failure"));
        assert!(
            matches!(err_of::<DecodeError>(&err), Some(DecodeError::Upstream(_))),
            "{coding:?}: {err}"
        );
    }
}

#[tokio::test]
async fn upstream_failure_while_streaming_is_a_body_error() {
    for coding in COMPRESSING {
        let page = html(200_000);
        let wire = compress(coding, &page);
        let mut steps = chunked(&wire[..wire.len() / 2], 1000, 1);
        steps.push(Step::Fail);
        let got = decoded(steps, coding, DEFAULT).await;
        let err = got
            .error
            .unwrap_or_else(|| panic!("{coding:?}: clean end after upstream failure"));
        assert!(
            matches!(err_of::<DecodeError>(&err), Some(DecodeError::Upstream(_))),
            "{coding:?}: {err}"
        );
        assert!(
            page.starts_with(&got.data),
            "{coding:?}: delivered bytes are not a prefix of the page"
        );
    }
}

#[tokio::test]
async fn truncation_after_the_prefix_is_a_body_error() {
    // The upstream ends cleanly but the compressed stream is incomplete:
    // the client must see an abort, not a short page that looks whole.
    for coding in COMPRESSING {
        let page = html(200_000);
        let wire = compress(coding, &page);
        let got = decoded(chunked(&wire[..wire.len() - 10], 1000, 1), coding, DEFAULT).await;
        let err = got
            .error
            .unwrap_or_else(|| panic!("{coding:?}: truncated body ended cleanly"));
        assert!(
            matches!(
                err_of::<DecodeError>(&err),
                Some(DecodeError::Corrupt { .. })
            ),
            "{coding:?}: {err}"
        );
    }
}

#[tokio::test]
async fn small_highly_compressible_pages_are_within_the_grace() {
    let zeros = vec![0u8; RATIO_GRACE_BYTES as usize];
    let wire = compress(Coding::Gzip, &zeros);
    assert!(
        wire.len() * 100 < zeros.len(),
        "test needs a ratio above 100"
    );
    let got = decoded(chunked(&wire, 4096, 0), Coding::Gzip, DEFAULT).await;
    assert!(got.error.is_none() && got.data == zeros);

    let more = vec![0u8; RATIO_GRACE_BYTES as usize + 64 * 1024];
    assert_passes_through(
        &compress(Coding::Gzip, &more),
        Coding::Gzip,
        DEFAULT,
        Refusal::Limit,
    )
    .await;
}

#[tokio::test]
async fn max_bytes_in_the_prefix_passes_through() {
    let limits = DecodeLimits {
        max_bytes: 100_000,
        max_ratio: 100,
    };
    for coding in COMPRESSING {
        assert_passes_through(
            &compress(coding, &html(300_000)),
            coding,
            limits,
            Refusal::Limit,
        )
        .await;
    }
}

#[tokio::test]
async fn max_bytes_after_the_prefix_aborts_the_stream() {
    let limits = DecodeLimits {
        max_bytes: 100_000,
        max_ratio: 100,
    };
    for coding in COMPRESSING {
        let page = html(300_000);
        let wire = compress(coding, &page);
        // The upstream pauses after 200 bytes: the prefix check passes.
        let mut steps = vec![
            Step::Data(Bytes::copy_from_slice(&wire[..200])),
            Step::Pause,
        ];
        steps.extend(chunked(&wire[200..], 4096, 0));
        let got = decoded(steps, coding, limits).await;
        let err = got
            .error
            .unwrap_or_else(|| panic!("{coding:?}: over-limit body ended cleanly"));
        assert!(
            matches!(
                err_of::<DecodeError>(&err),
                Some(DecodeError::TooLarge { limit: 100_000 })
            ),
            "{coding:?}: {err}"
        );
        assert!(
            got.data.len() <= 100_000,
            "{coding:?}: delivered {} bytes",
            got.data.len()
        );
        assert!(page.starts_with(&got.data));
    }
}

#[tokio::test]
async fn gzip_bomb_in_the_prefix_passes_through_untouched() {
    // 64 members of 16 MiB zeros: 1 GiB from about 1 MiB (deflate cannot
    // beat ~1032:1, so a 1 KB gzip tops out near 1 MB).
    let bomb = gzip_bomb(16 << 20, 64);
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let (body, consumed) = scripted(chunked(&bomb, 64 * 1024, 0));
    let refused = decode_checked(body, Coding::Gzip, DEFAULT)
        .await
        .expect_err("bomb accepted");
    assert_eq!(refused.why, Refusal::Limit);
    // The check stopped early instead of inflating the whole gigabyte.
    assert!(
        consumed.load(Ordering::Relaxed) <= 2 * 64 * 1024,
        "read {} bytes",
        consumed.load(Ordering::Relaxed)
    );
    let got = collect(refused.body).await;
    assert!(got.error.is_none());
    assert!(got.data == bomb, "pass-through is not byte-identical");
}

#[tokio::test]
async fn zstd_bomb_in_the_prefix_passes_through_untouched() {
    let bomb = zstd_bomb(128 << 20, 8);
    let (body, _) = scripted(chunked(&bomb, 16 * 1024, 0));
    let refused = decode_checked(body, Coding::Zstd, DEFAULT)
        .await
        .expect_err("bomb accepted");
    assert_eq!(refused.why, Refusal::Limit);
    assert!(collect(refused.body).await.data == bomb);
}

#[tokio::test]
async fn bomb_after_the_prefix_aborts_with_bounded_output() {
    let page = html(2000);
    let mut wire = compress(Coding::Gzip, &page);
    let split = wire.len();
    wire.extend(gzip_bomb(16 << 20, 64));
    let mut steps = vec![
        Step::Data(Bytes::copy_from_slice(&wire[..split])),
        Step::Pause,
    ];
    steps.extend(chunked(&wire[split..], 64 * 1024, 0));
    let got = decoded(steps, Coding::Gzip, DEFAULT).await;
    let err = got.error.expect("bomb ended cleanly");
    assert!(
        matches!(
            err_of::<DecodeError>(&err),
            Some(DecodeError::Ratio { ratio: 100 })
        ),
        "{err}"
    );
    assert!(got.data.starts_with(&page));
    assert!(got.max_frame <= CHUNK);
    // Stopped within one read of the ratio bound over what was received.
    assert!(
        got.data.len() as u64
            <= RATIO_GRACE_BYTES.max(100 * (split as u64 + 64 * 1024 * 2)) + CHUNK as u64
    );
}

#[tokio::test]
async fn a_gigabyte_streams_in_bounded_memory() {
    // Limits opened wide so the whole 1 GiB bomb decodes: the point is that
    // decoding streams in small frames and never accumulates.
    let bomb = gzip_bomb(16 << 20, 64);
    let limits = DecodeLimits {
        max_bytes: 2 << 30,
        max_ratio: 1 << 20,
    };
    let (body, _) = scripted(chunked(&bomb, 64 * 1024, 1));
    let before = peak_rss();
    let out = decode_checked(body, Coding::Gzip, limits)
        .await
        .expect("refused");
    let (total, err, max_frame) = drain(out).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(total, 1 << 30);
    assert!(max_frame <= HOLD.max(CHUNK));
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < 128 << 20,
            "peak RSS grew by {} MiB while decoding 1 GiB",
            grown >> 20
        );
    }
}

#[tokio::test]
async fn the_prefix_check_stops_at_its_keep_budget() {
    // 1 MiB of zstd skippable frames decode to nothing; the check must not
    // keep all of it in memory before the page starts.
    let mut wire = Vec::new();
    for _ in 0..64 {
        wire.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        wire.extend_from_slice(&(16_384u32).to_le_bytes());
        wire.extend(std::iter::repeat_n(0u8, 16_384));
    }
    let page = html(10_000);
    wire.extend(compress(Coding::Zstd, &page));
    let (body, consumed) = scripted(chunked(&wire, 4096, 0));
    let out = decode_checked(body, Coding::Zstd, DEFAULT)
        .await
        .expect("refused");
    let read = consumed.load(Ordering::Relaxed);
    assert!(
        read <= (PREFIX_KEEP + 4096) as u64,
        "prefix check read {read} bytes"
    );
    let got = collect(out).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert!(got.data == page);
}

#[tokio::test]
async fn decoding_starts_before_the_upstream_finishes() {
    use http_body_util::BodyExt;
    use std::time::Duration;
    // A gzip stream flushed after the head: decodable on its own.
    let head = b"<!doctype html><html><head><title>slow</title></head><body><p>first".to_vec();
    let tail = html(50_000);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &head).unwrap();
    std::io::Write::flush(&mut enc).unwrap();
    let first = std::mem::take(enc.get_mut());
    std::io::Write::write_all(&mut enc, &tail).unwrap();
    let rest = enc.finish().unwrap();

    let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
    tx.send_data(Bytes::from(first)).await.unwrap();
    let guard = Duration::from_secs(20);
    let out = tokio::time::timeout(guard, decode(crate::body::boxed(rx), Coding::Gzip, DEFAULT))
        .await
        .expect("decode waited for the whole body")
        .expect("refused");
    let mut out = out;
    let frame = tokio::time::timeout(guard, out.frame())
        .await
        .expect("no first frame while upstream open");
    let data = frame.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&data[..], &head[..]);

    tx.send_data(Bytes::from(rest)).await.unwrap();
    drop(tx);
    let got = collect(out).await;
    assert!(got.error.is_none());
    assert!(got.data == tail);
}
