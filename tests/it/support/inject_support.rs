//! Helpers for the injection tests: reference compressors (flate2, brotli and
//! zstd crates, independent of the proxy's async-compression), a sample page,
//! and finding the widget tag in a response.

use std::io::{Read, Write};

/// The widget tag's id, as the default config sets it.
pub const SCRIPT_ID: &str = "operator-chat-panel-script";

/// The development token the injection tests configure.
pub const TOKEN: &str = "inject-test-token";

/// Proxy config for the injection tests: `site.test` injects (except under
/// `/api`), `frames.test` also injects into frames, `plain.test` does not
/// inject. `{origin}` is the fake origin.
pub const PROXY_TOML: &str = r#"
[inject]
dev_token = "inject-test-token"
debug_header = true

[[routes]]
name = "site"
hosts = ["site.test"]
upstream = "{origin}"
exclude_paths = ["/api"]

[[routes]]
name = "plain"
hosts = ["plain.test"]
upstream = "{origin}"
inject = false
"#;

/// A page of roughly `len` bytes that ends in `</body></html>`.
pub fn page(len: usize) -> Vec<u8> {
    let mut out =
        b"<!doctype html><html><head><meta charset=\"utf-8\"><title>t</title></head><body>\n"
            .to_vec();
    let mut i = 0u64;
    while out.len() < len {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!(
                "<p class=\"c{}\">row {}: {:x}</p>\n",
                i % 7,
                i % 1000,
                i >> 40
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"</body></html>\n");
    out
}

/// Compress `data` as `coding` (`identity`, `gzip`, `deflate` (zlib), `br`, `zstd`).
pub fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "identity" => data.to_vec(),
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("no compressor for {other}"),
    }
}

fn reader<'a>(coding: &str, data: &'a [u8]) -> Box<dyn Read + 'a> {
    match coding {
        "" | "identity" => Box::new(data),
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(data)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(data)),
        "br" => Box::new(brotli::Decompressor::new(data, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(data).unwrap()),
        other => panic!("no decompressor for {other}"),
    }
}

/// Decompress a complete body; panics if it is not valid.
pub fn decompress(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    reader(coding, data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("invalid {coding} body: {e}"));
    out
}

/// Decompress as much of an incomplete body as it allows.
pub fn decompress_prefix(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = reader(coding, data);
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A gzip body of `members` concatenated members of `member_len` zeros each.
pub fn gzip_bomb(member_len: usize, members: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; member_len]).unwrap();
    e.finish().unwrap().repeat(members)
}

/// `data` with every widget tag removed, and how many there were.
pub fn strip_tags(data: &[u8]) -> (Vec<u8>, usize) {
    let needle = format!("id=\"{SCRIPT_ID}\"");
    let mut out = data.to_vec();
    let mut count = 0;
    while let Some(at) = find(&out, needle.as_bytes()) {
        let start = rfind(&out[..at], b"<script").expect("tag start");
        let end = at + find(&out[at..], b"</script>").expect("tag end") + b"</script>".len();
        out.drain(start..end);
        count += 1;
    }
    (out, count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}
