//! Clients that misbehave on purpose, against the real binary over real
//! sockets: connections that never finish their headers, that sit idle,
//! that fill the cap, and a process out of descriptors. The server keeps
//! serving everyone else.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cli::{BIN, Served, clean, cmd, create_key, status};

/// The binary under `prlimit --nofile=SOFT:HARD`.
fn limited(dir: &Path, nofile: &str) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(format!("--nofile={nofile}")).arg("--").arg(BIN);
    clean(c, dir)
}

/// `host:port` of a served binary.
fn addr(server: &Served) -> String {
    server.origin.trim_start_matches("http://").to_owned()
}

/// How long until the server closes `stream`, reading and discarding
/// whatever it sends; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends one request on a kept-alive connection and reads its whole
/// answer (headers and a `Content-Length` body); the status line.
async fn exchange(stream: &mut TcpStream, key: &str) -> String {
    let request = format!("GET /api/v1/agents HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a Content-Length");
            if got.len() >= end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// A client that sends its headers a line at a time (slowloris) is cut
/// off at the header timeout, while an idle kept-alive connection lasts
/// until the idle timeout, and others are served meanwhile.
#[tokio::test]
async fn slow_headers_are_cut_off_and_idle_connections_last_until_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("hostile.db").display().to_string();
    let (key, _) = create_key(dir.path(), &db, "acme");
    let args = ["--database", &db, "--header-timeout", "2", "--idle-timeout", "6"];
    let server = Served::start(cmd(dir.path()).args(args)).expect("start");

    let mut slow = TcpStream::connect(addr(&server)).await.expect("connect");
    slow.write_all(b"GET /api/v1/agents HTTP/1.1\r\nHost: localhost\r\n").await.expect("write");
    let started = Instant::now();
    let trickle = async {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if slow.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let others = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        status(&server.url("/agents"), &key).await
    };
    let ((), answered) = tokio::join!(trickle, others);
    assert_eq!(answered, 200, "others are served while one trickles");
    let cut = closed_within(&mut slow, Duration::from_secs(10)).await.map(|_| started.elapsed());
    let cut = cut.expect("the trickling connection is closed");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(8),
        "closed at the header timeout: {cut:?}"
    );

    // A kept-alive connection idles past the header timeout and is reused.
    let mut kept = TcpStream::connect(addr(&server)).await.expect("connect");
    assert_eq!(exchange(&mut kept, &key).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(exchange(&mut kept, &key).await, "HTTP/1.1 200 OK", "idle is not slow: still open after 3 s");
    let idle = closed_within(&mut kept, Duration::from_secs(15)).await.expect("closed after the idle timeout");
    assert!(idle >= Duration::from_secs(5), "not before the idle timeout: {idle:?}");

    // A request whose body stops coming fails at the same deadline, and its
    // connection is idle again rather than busy for good.
    let mut stalled = TcpStream::connect(addr(&server)).await.expect("connect");
    let head = format!(
        "POST /api/v1/agents HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer))
        .await
        .expect("answered before the test gives up")
        .expect("read");
    let status = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(status.starts_with("HTTP/1.1 400"), "a stalled body is a bad request: {status}");
    assert!(started.elapsed() < Duration::from_secs(8), "at the header timeout: {:?}", started.elapsed());

    // A connection that sends nothing at all is a slow one too.
    let mut silent = TcpStream::connect(addr(&server)).await.expect("connect");
    let cut = closed_within(&mut silent, Duration::from_secs(10)).await.expect("closed");
    assert!(cut < Duration::from_secs(8), "{cut:?}");
}

/// At the connection cap, the connection idle the longest is closed to
/// make room for a new one, which is served.
#[tokio::test]
async fn at_the_cap_the_connection_idle_the_longest_makes_room() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("cap.db").display().to_string();
    let (key, _) = create_key(dir.path(), &db, "acme");
    let args = ["--database", &db, "--max-connections", "4", "--header-timeout", "60"];
    let server = Served::start(cmd(dir.path()).args(args)).expect("start");

    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr(&server)).await.expect("connect"));
        // In this order: the first is idle the longest.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&server.url("/agents"), &key).await, 200, "a fifth connection is served");
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)).await.is_some(), "the oldest idle one made room");
    assert!(closed_within(&mut idle[3], Duration::from_millis(500)).await.is_none(), "the newest stays open");
    let log = server.log.lock().expect("log").clone();
    assert!(log.contains("connection cap reached"), "{log}");
}

/// A low soft open-files limit is raised to the hard one at start, and
/// running out of descriptors is waited out (logged, not spun on) until
/// they free up.
#[tokio::test]
async fn a_low_open_files_limit_is_raised_and_running_out_is_waited_out() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("limits.db").display().to_string();
    let (key, _) = create_key(dir.path(), &db, "acme");
    let args = ["--database", &db, "--header-timeout", "2", "--db-connections", "2"];

    let server = Served::start(limited(dir.path(), "64:4096").args(args)).expect("start");
    let log = server.log.lock().expect("log").clone();
    assert!(log.contains("soft limit raised") && log.contains("soft=4096") && log.contains("was=64"), "{log}");
    assert!(log.contains("fewer than the connection cap needs"), "4,096 cannot hold 20,000 connections: {log}");
    drop(server);

    // 48 descriptors, and no way to raise them: 80 connections exhaust them.
    let server = Served::start(limited(dir.path(), "48:48").args(args)).expect("start");
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(TcpStream::connect(addr(&server)).await.expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log.lock().expect("log").contains("backing off") {
        assert!(Instant::now() < deadline, "exhaustion is logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = tokio::time::timeout(
            Duration::from_secs(5),
            reqwest::Client::new().get(server.url("/agents")).header("X-API-Key", &key).send(),
        )
        .await;
        if matches!(&answered, Ok(Ok(r)) if r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the server serves again once descriptors free up: {answered:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.log.lock().expect("log").clone();
    let warnings = log.lines().filter(|l| l.contains("backing off")).count();
    assert!(warnings < 40, "logged at most about once a second, not per attempt: {warnings}");
}
