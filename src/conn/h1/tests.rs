use super::*;
use crate::body::{self, BoxError};
use http::HeaderValue;
use http_body::Frame;
use http_body_util::StreamBody;

fn parsed(raw: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let p = parse(&mut buf);
    (p, buf)
}

#[test]
fn a_plain_get_is_parsed_and_split_off_what_follows() {
    let next = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let (p, rest) = parsed(&format!(
        "GET /a?q=1 HTTP/1.1\r\nHost: site.test\r\nX-Two: a\r\nx-two: b\r\nConnection: keep-alive\r\n\r\n{next}"
    ));
    let Parsed::Head(head) = p else {
        panic!("not parsed")
    };
    assert_eq!(head.req.method(), Method::GET);
    assert_eq!(head.req.uri(), "/a?q=1");
    assert_eq!(head.req.version(), http::Version::HTTP_11);
    assert_eq!(head.req.headers()["host"], "site.test");
    let two: Vec<_> = head.req.headers().get_all("x-two").iter().collect();
    assert_eq!(two, ["a", "b"]);
    assert!(!head.close);
    assert_eq!(&rest[..], next.as_bytes(), "the pipelined request stays");
}

#[test]
fn connection_close_is_noted_in_any_case_and_position() {
    for value in ["close", "Close", "keep-alive, CLOSE", " x , close "] {
        let (p, _) = parsed(&format!(
            "HEAD / HTTP/1.1\r\nHost: a\r\nConnection: {value}\r\n\r\n"
        ));
        let Parsed::Head(head) = p else {
            panic!("{value}: not parsed")
        };
        assert!(head.close, "{value}");
        assert_eq!(head.req.method(), Method::HEAD);
    }
}

#[test]
fn what_this_path_does_not_serve_goes_to_hyper_with_every_byte() {
    let others = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        "DELETE / HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\x01\n\r\n",
        "garbage\r\n\r\n",
    ];
    for raw in others {
        let (p, rest) = parsed(raw);
        assert!(matches!(p, Parsed::Other), "{raw:?} was taken");
        assert_eq!(&rest[..], raw.as_bytes(), "{raw:?}: bytes lost");
    }
    let many: String = (0..=MAX_FIELDS).map(|i| format!("x-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let (p, rest) = parsed(&raw);
    assert!(matches!(p, Parsed::Other), "too many fields was taken");
    assert_eq!(rest.len(), raw.len());
}

#[test]
fn half_a_head_waits_for_the_rest() {
    let whole = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for cut in 1..whole.len() {
        let (p, rest) = parsed(&whole[..cut]);
        assert!(matches!(p, Parsed::Partial), "cut at {cut}");
        assert_eq!(rest.len(), cut);
    }
}

#[test]
fn chunk_size_lines_are_lowercase_hex() {
    for (n, want) in [
        (0, "0"),
        (1, "1"),
        (15, "f"),
        (16, "10"),
        (255, "ff"),
        (4096, "1000"),
        (0xabcdef, "abcdef"),
    ] {
        let mut dst = Vec::new();
        hex_line(&mut dst, n);
        assert_eq!(dst, format!("{want}\r\n").as_bytes(), "{n}");
    }
}

fn sized(data: &'static str) -> Gather {
    Gather::new(body::full(data))
}

fn unsized_body() -> Gather {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Ok(Frame::data(Bytes::from("abc")))];
    Gather::new(body::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))))
}

/// The head's field lines (lower-cased, without `date`), its framing, and
/// whether it closes.
fn head(
    status: u16,
    fields: &[(&str, &str)],
    body: Gather,
    is_head: bool,
    keep_alive: bool,
) -> (Vec<String>, Framing, bool) {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in fields {
        resp.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (parts, ()) = resp.into_parts();
    let mut dst = Vec::new();
    let (framing, closes) = encode_head(&parts, &body, is_head, keep_alive, &mut dst);
    let text = String::from_utf8(dst).unwrap();
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    let mut lines = text.trim_end().split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with(&format!("HTTP/1.1 {status} ")),
        "{status_line}"
    );
    let mut dates = 0;
    let lines = lines
        .filter(|l| {
            let date = l.starts_with("date: ");
            dates += usize::from(date);
            !date
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(dates, 1, "one date: {text:?}");
    (lines, framing, closes)
}

#[test]
fn the_length_comes_from_the_header_then_the_body_else_chunked() {
    let (lines, framing, _) = head(
        200,
        &[("content-type", "text/html"), ("content-length", "5")],
        sized("hello"),
        false,
        true,
    );
    assert_eq!(lines, ["content-type: text/html", "content-length: 5"]);
    assert_eq!(framing, Framing::Length(5));

    let (lines, framing, _) = head(200, &[], sized("hello"), false, true);
    assert_eq!(lines, ["content-length: 5"]);
    assert_eq!(framing, Framing::Length(5));

    let (lines, framing, _) = head(
        200,
        &[("transfer-encoding", "gzip, chunked")],
        unsized_body(),
        false,
        true,
    );
    assert_eq!(
        lines,
        ["transfer-encoding: chunked"],
        "ours, not the given one"
    );
    assert_eq!(framing, Framing::Chunked);
}

#[test]
fn bodyless_responses_follow_hypers_length_rules() {
    // An empty body: `content-length: 0`, replacing a stale one.
    let (lines, framing, _) = head(
        200,
        &[("content-length", "9")],
        Gather::new(body::empty()),
        false,
        true,
    );
    assert_eq!(lines, ["content-length: 0"]);
    assert_eq!(framing, Framing::Length(0));
    // HEAD keeps the page's length and sends no body.
    let (lines, framing, _) = head(
        200,
        &[("content-length", "2048")],
        Gather::new(body::empty()),
        true,
        true,
    );
    assert_eq!(lines, ["content-length: 2048"]);
    assert_eq!(framing, Framing::Length(0));
    // HEAD without a length gets none made up.
    let (lines, _, _) = head(200, &[], Gather::new(body::empty()), true, true);
    assert!(lines.is_empty(), "{lines:?}");
    // 304 and 204: no length made up; a 204's given one goes too.
    let (lines, _, _) = head(
        304,
        &[("etag", "\"x\"")],
        Gather::new(body::empty()),
        false,
        true,
    );
    assert_eq!(lines, ["etag: \"x\""]);
    let (lines, framing, _) = head(
        204,
        &[("content-length", "0")],
        Gather::new(body::empty()),
        false,
        true,
    );
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(framing, Framing::Length(0));
}

#[test]
fn closing_is_said_once_and_a_closing_response_closes() {
    let (lines, _, closes) = head(200, &[], sized("x"), false, false);
    assert_eq!(lines, ["content-length: 1", "connection: close"]);
    assert!(!closes);
    let (lines, _, closes) = head(200, &[("connection", "close")], sized("x"), false, false);
    assert_eq!(lines, ["connection: close", "content-length: 1"]);
    assert!(closes);
    let (lines, _, _) = head(
        503,
        &[("date", "Mon, 01 Jan 2024 00:00:00 GMT")],
        sized("x"),
        false,
        true,
    );
    assert_eq!(
        lines,
        ["content-length: 1"],
        "the given date is the only one"
    );
}
