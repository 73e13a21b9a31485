//! The rewriter alone on one page, N times, for instruction counts and
//! timings of the fast path that do not involve the network (bench/README.md,
//! "What profiling found"):
//!
//! ```sh
//! python3 -c 'import sys; sys.path.insert(0, "bench/lib"); import pages; \
//!   open("/tmp/p64k.html", "wb").write(pages.page(65536))'
//! cargo build --release --example rewrite_page
//! valgrind --tool=callgrind target/release/examples/rewrite_page /tmp/p64k.html 200
//! time taskset -c 1 target/release/examples/rewrite_page /tmp/p64k.html 2000
//! ```
//!
//! The page is fed in 16 KiB frames, as the proxy reads it, and rewritten
//! as a response would be; it prints the bytes written.

use bytes::Bytes;
use chathub_proxy::body::{self, BoxError};
use chathub_proxy::metrics::Metrics;
use chathub_proxy::rewrite::{self, RewritePlan};
use http_body::{Body as _, Frame};
use http_body_util::StreamBody;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

const FRAME: usize = 16 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(times)) = (args.next(), args.next()) else {
        return Err("usage: rewrite_page PAGE.html TIMES".into());
    };
    let page = Bytes::from(std::fs::read(path)?);
    let times: usize = times.parse()?;
    let metrics = Arc::new(Metrics::new());
    let mut written = 0;
    for _ in 0..times {
        let frames: Vec<_> = (0..page.len())
            .step_by(FRAME)
            .map(|at| Ok::<_, BoxError>(Frame::data(page.slice(at..(at + FRAME).min(page.len())))))
            .collect();
        let input = body::boxed(StreamBody::new(futures_util::stream::iter(frames)));
        let plan = RewritePlan {
            snippet: r#"<script type="module" id="operator-chat-panel-script" src="https://widget.example/w.js" token="t"></script>"#.into(),
            script_id: "operator-chat-panel-script".into(),
            encoding: None,
            max_memory: 4 << 20,
            fallback: None,
        };
        let mut out = rewrite::rewrite(input, plan, metrics.clone());
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut out).poll_frame(&mut cx) {
            written += frame.into_data().map_or(0, |d| black_box(d).len());
        }
    }
    println!("{written}");
    Ok(())
}
