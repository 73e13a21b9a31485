//! The least a tokio reverse proxy can cost per request here: a relay that
//! passes each request's bytes to the origin and the response's bytes back,
//! with no HTTP work beyond finding where a response ends. It parses no
//! field, sets no header, routes nothing and has no timeout; it is not a
//! proxy anyone should run. bench/run.sh measures it beside nginx proxy_pass
//! and chathub-proxy with injection off (the "relay floor" row), so the
//! report shows how much of the hop's cost is the runtime and the kernel's
//! loopback TCP, which no HTTP code can remove, and how much is the proxy's.
//!
//! ```sh
//! cargo build --release --example relay_floor
//! taskset -c 1 target/release/examples/relay_floor 127.0.0.1:8090 127.0.0.1:8080
//! ```
//!
//! One upstream connection per client connection, opened with it; one
//! current-thread runtime, as chathub-proxy with `server.worker_threads = 1`.
//! A request must arrive in one read (a GET with no body, as wrk sends), its
//! response's head in the first read, with `Content-Length` (nginx's static
//! files have it); the body is passed on as it arrives, what is ready at once
//! in one write.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Room for a response read at once (a 1 MB page's worth).
const BUF: usize = 1024 * 1024;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: relay_floor LISTEN_ADDR ORIGIN_ADDR");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            loop {
                let (client, _) = listener.accept().await?;
                let origin = origin.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(client, &origin).await {
                        eprintln!("relay_floor: {e}");
                    }
                });
            }
        })
}

async fn relay(mut client: TcpStream, origin: &str) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut upstream = TcpStream::connect(origin).await?;
    upstream.set_nodelay(true)?;
    let mut req = vec![0u8; 8 * 1024];
    let mut resp = vec![0u8; BUF];
    loop {
        let n = client.read(&mut req).await?;
        if n == 0 {
            return Ok(());
        }
        upstream.write_all(&req[..n]).await?;
        // Read until the head is whole, then what else of the response is
        // ready, and pass it on as it comes: what is ready at once in one
        // write, as chathub-proxy gathers what its upstream has ready.
        let mut have = 0;
        let total = loop {
            have += read_some(&mut upstream, &mut resp[have..]).await?;
            if let Some(total) = response_len(&resp[..have])? {
                break total;
            }
        };
        have += read_ready(&upstream, &mut resp[have.min(total)..total.min(BUF)])?;
        let mut left = total;
        let mut chunk = &resp[..have.min(left)];
        loop {
            client.write_all(chunk).await?;
            left -= chunk.len();
            if left == 0 {
                break;
            }
            let room = left.min(BUF);
            let got = read_some(&mut upstream, &mut resp[..room]).await?;
            let got = got + read_ready(&upstream, &mut resp[got..room])?;
            chunk = &resp[..got];
        }
    }
}

/// One read, waiting for it; the end of the connection is an error here.
async fn read_some(upstream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    match upstream.read(buf).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n => Ok(n),
    }
}

/// Reads without waiting until `buf` is full or nothing more is ready (no
/// read at all when `buf` is empty).
fn read_ready(upstream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut have = 0;
    while have < buf.len() {
        match upstream.try_read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

/// The length of the response at the start of `buf` (head and body), once its
/// head is complete.
fn response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buf[..end];
    let body = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| {
                    std::str::from_utf8(&value[1..])
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .flatten()
        })
        .ok_or_else(|| io::Error::other("response without Content-Length"))?;
    Ok(Some(end + 4 + body))
}
