//! Connections at the HTTP edge: at most `max_connections` open (more wait) and
//! `max_connections_per_address` from one address (more are closed), a request head within
//! `request_head_timeout` from the moment a connection opens, a body within
//! `request_body_timeout`, idle connections closed, and HTTP/1.1 only.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

/// Connects to the server from `from` (a loopback address of the test's choosing).
async fn connect_from(app: &TestApp, from: [u8; 4]) -> TcpStream {
    let server: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what was read
/// and how long the connection stayed open.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration, bool) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into(), started.elapsed(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), started.elapsed(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn slow_app() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        request_head_timeout: Duration::from_secs(2),
        request_body_timeout: Duration::from_secs(2),
        max_connections_per_address: 3,
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

/// `max_connections` bounds what a flood of connections (each may hold a ~400 KB request head)
/// can take: at the cap a new connection waits, unserved, until one closes. `idle_timeout`
/// closes connections that send nothing.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot_and_idle_ones_are_closed() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        max_connections: 2,
        idle_timeout: Duration::from_secs(3),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(waited.is_err(), "a connection over the cap is not served: {answer:?}");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("a freed slot lets the waiting connection in")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The second connection never sent a byte: the idle timeout closes it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut rest)).await;
    assert_eq!(closed.expect("an idle connection is closed").unwrap(), 0);
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 4: a head trickled one header line every 5 s reset the idle timer, and the
/// connection stayed open past 75 s. Now the whole head must arrive within
/// `request_head_timeout`, however busy the trickle keeps the connection.
#[tokio::test]
async fn a_request_head_trickled_line_by_line_is_cut_off() {
    let app = slow_app().await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A header line every 300 ms: far more often than any idle timeout.
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
                return i;
            }
        }
        100
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await;
    let open_for = started.elapsed();
    let answered = match read {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).to_string(),
        Ok(Err(_)) => String::new(),
        Err(_) => panic!("the trickled head kept its connection open for 10 s"),
    };
    assert!(
        !answered.contains("200 OK"),
        "the incomplete request was never served: {answered}"
    );
    assert!(
        open_for < Duration::from_secs(4),
        "cut off at the 2 s head deadline, not after {open_for:?}"
    );
    let lines_sent = trickle.await.unwrap();
    assert!(lines_sent < 100, "the server stopped taking the trickle");
    // A normal request is still served at once.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

/// Finding 4, found again by the second review: a connection that sends nothing at all was
/// kept for the 60 s idle timeout (hyper waited for its first bytes before starting the head
/// deadline), so reconnecting silent sockets held every slot. Now the head deadline runs from
/// the moment the connection opens.
#[tokio::test]
async fn a_connection_that_says_nothing_is_closed_at_the_head_deadline() {
    let app = slow_app().await;
    let mut silent = connect_from(&app, [127, 0, 0, 1]).await;
    let (answer, open_for, closed) = read_until_closed(&mut silent, Duration::from_secs(8)).await;
    assert!(closed, "a silent connection stayed open 8 s");
    assert!(
        open_for >= Duration::from_millis(1500) && open_for < Duration::from_secs(4),
        "closed at the 2 s deadline, not after {open_for:?} ({answer:?})"
    );
}

/// The second review: cleartext HTTP/2 (h2c, prior knowledge) multiplied each connection into
/// 200 streams each buffering a body (one address took the server to 1.2 GB) and kept idle
/// connections alive on PINGs. Tessera speaks HTTP/1.1 only: an HTTP/2 preface gets no HTTP/2
/// answer and the connection is closed.
#[tokio::test]
async fn cleartext_http2_is_refused() {
    let app = slow_app().await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    // The client connection preface (RFC 9113 §3.4) and an empty SETTINGS frame.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    let (answer, open_for, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed && open_for < Duration::from_secs(3), "{open_for:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "no HTTP/2 frames: {answer:?}"
    );
}

/// Finding 4, bodies: a body trickled a byte at a time is answered 408 after
/// `request_body_timeout`, and the connection is closed.
#[tokio::test]
async fn a_request_body_trickled_byte_by_byte_is_cut_off() {
    let app = slow_app().await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    stream
        .write_all(
            b"POST /o/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
            Err(_) => panic!("the trickled body kept its connection open for 10 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let response = String::from_utf8_lossy(&seen);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("did not arrive within 2 seconds"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    trickle.abort();
}

/// Finding 4, one host holding every connection: past `max_connections_per_address` a new
/// connection from that address is closed at once, while other addresses are served; a
/// closed connection gives its place back.
#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let app = slow_app().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
        // A started head: the connection counts as open and busy.
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    // Let the server accept all three before the fourth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = connect_from(&app, [127, 0, 0, 1]).await;
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (answer, open_for, closed) = read_until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty(), "refused without an answer: {answer:?}");
    assert!(
        open_for < Duration::from_secs(1),
        "refused at once, not after {open_for:?}"
    );

    let mut other = connect_from(&app, [127, 0, 0, 2]).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _, _) = read_until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "another address is served: {answer}"
    );

    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from(&app, [127, 0, 0, 1]).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _, _) = read_until_closed(&mut again, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the freed place is usable: {answer}"
    );
}
