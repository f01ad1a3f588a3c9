//! Slow clients cannot take a role down (issue 14): under a 1,024 open-file limit, 2,000
//! connections that each send half a request head leave a normal client answered (200,
//! or an immediate 503 refusal) within seconds, and SIGTERM ends the process within the
//! shutdown timeout while those connections are still open (they have no request in
//! flight, so they are closed at once; an upload that never ends is given the timeout).
//! Run as black boxes: the `api` role on a mock broker of the test's own, and
//! `standalone`, whose ingest and API listeners share one process.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::Pipeline;

const HALF_SENT: usize = 2_000;
const HALF_HEAD: &[u8] = b"GET /livez HTTP/1.1\r\nHost: x\r\n";
const ROLE_FD_LIMIT: u32 = 1_024;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Beyond the shutdown timeout: the roles' own shutdown (consumer, producer flush).
const EXIT_MARGIN: Duration = Duration::from_secs(5);
/// Long enough that no half-sent connection is closed by the server during the test.
const HEADER_READ_TIMEOUT: &str = "120s";

/// One scenario at a time, so the test process needs open files for one set of sockets.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cannot_silence_the_api_role() {
    let _serial = SERIAL.lock().await;
    raise_own_fd_limit();
    let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
    let p = Pipeline::on_brokers(&mock.bootstrap_servers(), &[]).await;
    for topic in ["samples", "breaches", "alerts"] {
        mock.create_topic(&format!("{}.{topic}", p.prefix), 1, 1)
            .unwrap();
    }
    let mut api = spawn_limited(&p, "api", p.api).await;
    let held = hold_half_sent(p.api).await;
    probe(p.api, "api").await;
    sigterm_within_bound(&mut api, "api");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_ingest_cannot_silence_standalone() {
    let _serial = SERIAL.lock().await;
    raise_own_fd_limit();
    let p = Pipeline::embedded().await;
    let mut standalone = spawn_limited(&p, "standalone", p.ingest).await;
    let upload = start_endless_upload(p.ingest, &p.token).await;
    let held = hold_half_sent(p.ingest).await;
    probe(p.ingest, "standalone ingest").await;
    probe(p.api, "standalone api").await;
    let took = sigterm_within_bound(&mut standalone, "standalone");
    assert!(
        took >= SHUTDOWN_TIMEOUT - Duration::from_millis(500),
        "the upload in flight was given the shutdown timeout, not cut at once: {took:?}"
    );
    drop((held, upload));
}

/// The test holds `HALF_SENT` sockets besides its own: it needs the hard limit.
fn raise_own_fd_limit() {
    let needed = HALF_SENT as u64 + 500;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert!(
        hard >= needed,
        "this test holds {HALF_SENT} sockets and needs an open-file limit of {needed}, but \
         the hard limit is {hard}: raise it (e.g. `ulimit -Hn 65536` as root) and rerun"
    );
    if soft < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).unwrap();
    }
}

/// A role process with an open-file limit of `ROLE_FD_LIMIT`; killed when dropped.
struct Limited(Child);

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_limited(p: &Pipeline, role: &str, ready_at: SocketAddr) -> Limited {
    let child = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -n {ROLE_FD_LIMIT} && exec \"$0\" \"$1\""),
            env!("CARGO_BIN_EXE_tidemark"),
            role,
        ])
        .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TIDEMARK_HEADER_READ_TIMEOUT", HEADER_READ_TIMEOUT)
        .env(
            "TIDEMARK_SHUTDOWN_TIMEOUT",
            format!("{}s", SHUTDOWN_TIMEOUT.as_secs()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn tidemark");
    let mut process = Limited(child);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("{role} exited at start with {status}");
        }
        if let Ok(r) = client.get(format!("http://{ready_at}/readyz")).send().await {
            if r.status().is_success() {
                return process;
            }
        }
        assert!(Instant::now() < deadline, "{role} not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `HALF_SENT` connections to `addr`, each sending half a request head, and gives
/// the server a moment to refuse those past its cap: a client arriving while it still
/// waits for their requests could be answered before sending its own (see
/// `tidemark_runtime::serve::REFUSALS`).
async fn hold_half_sent(addr: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(HALF_SENT);
    for _ in 0..HALF_SENT {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Past the connection cap the server may already have answered and closed.
        let _ = stream.write_all(HALF_HEAD).await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    held
}

/// A request whose body never ends: in flight until the shutdown timeout closes it.
async fn start_endless_upload(addr: SocketAddr, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/samples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// A normal client is answered within a few seconds: 200, or a clean refusal.
async fn probe(addr: SocketAddr, what: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let response = client
        .get(format!("http://{addr}/livez"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer to a normal client: {e:?}"));
    let status = response.status().as_u16();
    println!(
        "slowloris {what}: /livez answered {status} in {:?} with {HALF_SENT} half-sent connections held",
        start.elapsed()
    );
    assert!(
        matches!(status, 200 | 503),
        "{what}: /livez answered {status}"
    );
    if status == 503 {
        assert!(response.headers().contains_key("retry-after"));
        let body = response.text().await.unwrap();
        assert!(body.contains(r#""code":"unavailable""#), "{body}");
    }
}

/// How long the process took to exit after SIGTERM.
fn sigterm_within_bound(process: &mut Limited, what: &str) -> Duration {
    let start = Instant::now();
    let pid = process.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let bound = SHUTDOWN_TIMEOUT + EXIT_MARGIN;
    let status = loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < bound,
            "{what} still running {bound:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    println!(
        "slowloris {what}: exited {took:?} after SIGTERM with {HALF_SENT} half-sent connections open"
    );
    assert!(status.success(), "{what} exited with {status}");
    took
}
