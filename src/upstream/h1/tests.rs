//! The own exchange against upstreams on real sockets, answering in pieces.

use super::*;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// An upstream that reads one request head and answers with `parts`,
/// written one after another with a pause between (so the reader sees
/// them split there); closes afterwards if `close`.
async fn upstream(parts: Vec<&'static [u8]>, close: bool) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        for part in parts {
            tcp.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !close {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    TcpStream::connect(addr).await.unwrap()
}

fn get(method: Method) -> (Vec<u8>, bool) {
    let req = Request::builder()
        .method(method.clone())
        .uri("/page?x=1")
        .header("host", "site.test")
        .body(())
        .unwrap();
    (encode_head(&req), method == Method::HEAD)
}

/// The response, its whole body (or the body's error), and whether the
/// connection came back for another request.
async fn run(
    parts: Vec<&'static [u8]>,
    close: bool,
    method: Method,
) -> Result<(StatusCode, Result<Vec<u8>, String>, bool), ExchangeError> {
    let (head, is_head) = get(method);
    let conn = Conn::new(upstream(parts, close).await);
    let resp = conn.exchange(&head, is_head).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let outcome = loop {
        match body.frame().await {
            None => break Ok(data),
            Some(Ok(f)) => data.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => break Err(e.to_string()),
        }
    };
    Ok((status, outcome, body.take_reusable().is_some()))
}

#[test]
fn the_request_head_is_written_as_hyper_writes_it() {
    let (head, _) = get(Method::GET);
    assert_eq!(head, b"GET /page?x=1 HTTP/1.1\r\nhost: site.test\r\n\r\n");
}

#[tokio::test]
async fn a_length_body_split_anywhere_is_read_whole_and_the_connection_kept() {
    let got = run(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"ngth: 11\r\n\r\nhello",
            b" world",
        ],
        false,
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(got, (StatusCode::OK, Ok(b"hello world".to_vec()), true));
}

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_is_read_whole() {
    let got = run(
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            b"lo\r",
            b"\n6\r\n wor",
            b"ld\r\n0\r\nx-trailer: 1\r\n",
            b"\r\n",
        ],
        false,
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(got, (StatusCode::OK, Ok(b"hello world".to_vec()), true));
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let got = run(
        vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\ngone",
        ],
        false,
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(got, (StatusCode::NOT_FOUND, Ok(b"gone".to_vec()), true));
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_their_fields_say() {
    let got = run(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n"],
        false,
        Method::HEAD,
    )
    .await
    .unwrap();
    assert_eq!(got, (StatusCode::OK, Ok(Vec::new()), true));
    for status in ["204 No Content", "304 Not Modified"] {
        let line: &'static str =
            format!("HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n").leak();
        let got = run(vec![line.as_bytes()], false, Method::GET)
            .await
            .unwrap();
        assert_eq!(got.1, Ok(Vec::new()), "{status}");
        assert!(got.2, "{status}");
    }
}

#[tokio::test]
async fn connections_that_cannot_carry_another_request_are_not_kept() {
    // Ended by the connection's end.
    let got = run(
        vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"],
        true,
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(got, (StatusCode::OK, Ok(b"until the end".to_vec()), false));
    // Said so.
    let got = run(
        vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
        true,
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(got, (StatusCode::OK, Ok(b"ok".to_vec()), false));
    // Both framings: chunked wins, the length goes, the connection too.
    let (head, is_head) = get(Method::GET);
    let conn = Conn::new(
        upstream(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            false,
        )
        .await,
    );
    let resp = conn.exchange(&head, is_head).await.unwrap();
    assert!(!resp.headers().contains_key(CONTENT_LENGTH));
    let mut body = resp.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "ok"
    );
    assert!(body.frame().await.is_none());
    assert!(body.take_reusable().is_none());
    // HTTP/1.0.
    let got = run(
        vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        false,
        Method::GET,
    )
    .await
    .unwrap();
    assert!(!got.2);
    // More than it framed.
    let got = run(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"],
        false,
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!((got.1, got.2), (Ok(b"ok".to_vec()), false));
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_not_an_end() {
    let got = run(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
        true,
        Method::GET,
    )
    .await
    .unwrap();
    assert!(got.1.is_err(), "{got:?}");
    let got = run(
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"],
        true,
        Method::GET,
    )
    .await
    .unwrap();
    assert!(got.1.is_err(), "{got:?}");
}

#[tokio::test]
async fn broken_heads_are_errors() {
    for (parts, what) in [
        (
            vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..]],
            "conflicting",
        ),
        (
            vec![&b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"[..]],
            "bad content-length",
        ),
        (vec![&b"SSH-2.0-OpenSSH\r\n\r\n"[..]], "not HTTP"),
        (
            vec![&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]],
            "101",
        ),
        (vec![&b"HTTP/1.1 200 OK\r\nconte"[..]], "closed inside"),
    ] {
        let err = run(parts, true, Method::GET).await.expect_err(what);
        assert!(err.to_string().contains(what), "{what}: {err}");
        assert!(!err.before_response(), "{what}");
    }
    let err = run(vec![], true, Method::GET).await.expect_err("nothing");
    assert!(err.before_response(), "{err}");
}

#[tokio::test]
async fn field_names_are_matched_in_any_case_and_only_whole() {
    // Framing and reuse read names in any case: a length in capitals frames
    // the body, `Connection: Keep-Alive, CLOSE` ends the connection. Names
    // that only look like them frame nothing: to the connection's end.
    let cases: [(&'static [u8], bool, &[u8], bool); 3] = [
        (
            b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 2\r\ncOnNeCtIoN: Keep-Alive, CLOSE\r\n\r\nokEXTRA",
            true,
            b"ok",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-ENCODING: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            b"ok",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-lengths: 2\r\nx-content-length: 2\r\ncontent_length: 2\r\n\r\nok and more",
            true,
            b"ok and more",
            false,
        ),
    ];
    for (response, close, body, reusable) in cases {
        let got = run(vec![response], close, Method::GET).await.unwrap();
        assert_eq!((got.1, got.2), (Ok(body.to_vec()), reusable));
    }
    // Every name reaches the response lower-cased, known or not.
    let (head, is_head) = get(Method::GET);
    let conn = Conn::new(
        upstream(
            vec![b"HTTP/1.1 200 OK\r\nSERVER: x\r\nDate: d\r\nKeep-Alive: timeout=5\r\nX-Odd-Name: 1\r\nset-COOKIE: a=1\r\nSet-Cookie: b=2\r\ncontent-length: 0\r\n\r\n"],
            false,
        )
        .await,
    );
    let resp = conn.exchange(&head, is_head).await.unwrap();
    let names: Vec<_> = resp.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "server",
            "date",
            "keep-alive",
            "x-odd-name",
            "set-cookie",
            "content-length"
        ]
    );
    assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);
}

#[test]
fn the_known_names_are_spelled_as_their_header_names() {
    for (lower, name) in &KNOWN {
        assert_eq!(*lower, name.as_str().as_bytes());
        assert_eq!(header_name(&lower.to_ascii_uppercase()).unwrap(), *name);
    }
}
