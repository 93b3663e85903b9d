//! The server replicas under load: started on free loopback ports, each
//! logging to a file.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pakkt_benches::process::{Kill, release_binary};

use crate::Cleanup;

/// Starts `replicas` servers on `database_url`, each on a free loopback
/// port and logging to `dir`; returns each one's API base URL once all
/// listen.
pub async fn start_replicas(database_url: &str, replicas: usize, dir: &Path, cleanup: &mut Cleanup) -> Vec<String> {
    // Held together, so that no two replicas get the same port.
    let listeners: Vec<TcpListener> =
        (0..replicas).map(|_| TcpListener::bind("127.0.0.1:0").expect("free port")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("port").port()).collect();
    drop(listeners);
    let binary = release_binary("pakkt-server");
    for (r, port) in ports.iter().enumerate() {
        let log = File::create(dir.join(format!("replica-{r}.log"))).expect("log file");
        cleanup.servers.push(Kill(
            Command::new(&binary)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("PAKKT_DATABASE_URL", database_url)
                .env("PAKKT_RATE_LIMIT", "0")
                .env("PAKKT_LOG", "warn")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("server"),
        ));
    }
    let began = Instant::now();
    for (r, port) in ports.iter().enumerate() {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if let Ok(Some(status)) = cleanup.servers[r].0.try_wait() {
                panic!("replica {r} exited ({status}) before listening:\n{}", log_tail(dir, r, 20));
            }
            assert!(began.elapsed() < Duration::from_secs(30), "replica {r} did not start:\n{}", log_tail(dir, r, 20));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ports.iter().map(|port| format!("http://127.0.0.1:{port}/api/v1")).collect()
}

/// The last `lines` lines of replica `r`'s log.
fn log_tail(dir: &Path, r: usize, lines: usize) -> String {
    let text = std::fs::read_to_string(dir.join(format!("replica-{r}.log"))).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What each replica logged, if anything (its last lines).
pub fn print_logs(dir: &Path, replicas: usize) {
    for r in 0..replicas {
        let lines = std::fs::read_to_string(dir.join(format!("replica-{r}.log"))).map_or(0, |t| t.lines().count());
        if lines > 0 {
            println!("replica {r} logged {lines} line(s), the last:\n{}", log_tail(dir, r, 5));
        }
    }
}
