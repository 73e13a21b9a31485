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
//! response's head in the first 64 KiB, with `Content-Length` (nginx's static
//! files have it); the body is passed on read by read, as it arrives.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let mut resp = vec![0u8; 64 * 1024];
    loop {
        let n = client.read(&mut req).await?;
        if n == 0 {
            return Ok(());
        }
        upstream.write_all(&req[..n]).await?;
        // Read until the head is whole, then pass each read on as it comes.
        let (mut have, mut left) = (0, None);
        while left.is_none() {
            let got = upstream.read(&mut resp[have..]).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            have += got;
            left = response_len(&resp[..have])?;
        }
        let mut left = left.unwrap_or(0);
        let mut chunk = &resp[..have.min(left)];
        loop {
            client.write_all(chunk).await?;
            left -= chunk.len();
            if left == 0 {
                break;
            }
            let got = upstream.read(&mut resp).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            chunk = &resp[..got.min(left)];
        }
    }
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
