//! The harness shared by the real-process tests: a testnet in a temporary folder,
//! driven through the `mosaic` CLI on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // each test file uses part of it

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const LIMIT: Duration = Duration::from_secs(60);

pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSAIC_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/mosaic
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("mosaic");
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p mosaic-cli` or set MOSAIC_BIN",
        path.display()
    );
    path
}

/// A base port with `count` free consecutive ports after it (API and p2p ranges).
/// The ranges lie below the kernel's ephemeral ports (32768 and up here), which
/// other tests' outgoing connections take at random: a port checked free there
/// may be someone's client socket by the time the node binds it.
pub fn free_ports(count: u16) -> u16 {
    const LOW: u64 = 10_000;
    let high = ephemeral_low()
        .saturating_sub(u64::from(count))
        .max(LOW + 1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let seed = (std::process::id() as u64).wrapping_mul(2_654_435_761) ^ nanos;
    for attempt in 0..200u64 {
        let base = (LOW + seed.wrapping_add(attempt * 104_729) % (high - LOW)) as u16;
        let all_free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range found");
}

/// The lowest ephemeral port of this machine (Linux's default where unreadable).
fn ephemeral_low() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

pub struct Testnet {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
}

impl Testnet {
    /// Creates and starts an n-validator testnet.
    pub fn up(n: usize) -> Testnet {
        let testnet = Testnet::init(n);
        testnet.start();
        testnet
    }

    /// Creates an n-validator testnet without starting it (its node.toml files can
    /// be tuned first).
    pub fn init(n: usize) -> Testnet {
        let base = free_ports(2 * n as u16);
        let dir = tempfile::tempdir().unwrap();
        let testnet = Testnet {
            dir,
            api_port: base,
        };
        let out = testnet.mosaic(&[
            "testnet",
            "init",
            "-n",
            &n.to_string(),
            "--api-port",
            &base.to_string(),
            "--p2p-port",
            &(base + n as u16).to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        testnet
    }

    /// Starts every validator.
    pub fn start(&self) {
        let out = self.mosaic(&["testnet", "up", "--detach"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Starts every validator, validator `maverick.0` as a Byzantine one in mode
    /// `maverick.1` (test builds), and waits until each links to all the others:
    /// consensus messages sent before the links are up would be lost, not judged.
    pub fn start_with_maverick(&self, n: usize, maverick: (usize, &str)) {
        for i in 0..n {
            let node = i.to_string();
            let mut args = vec!["testnet", "start", "--node", &node];
            if i == maverick.0 {
                args.extend(["--maverick", maverick.1]);
            }
            let out = self.mosaic(&args);
            assert!(out.status.success(), "{}", text(&out));
        }
        wait_until("every validator connected to the others", || {
            (0..n).all(|i| {
                self.get(i, "/v1/status")
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .and_then(|status| status["peers"].as_array().map(Vec::len))
                    .is_some_and(|peers| peers + 1 >= n)
            })
        });
    }

    /// Edits node i's node.toml.
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(String) -> String) {
        let path = self.data().join(format!("node{i}/node.toml"));
        let toml = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(toml)).unwrap();
    }

    /// GET `path` from node i's API over HTTP/1.0: (status, body).
    pub fn get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.api_port + i as u16)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// Node i's process id, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        let status = self.json(&["testnet", "status"]);
        status["nodes"][i]["pid"].as_u64().map(|p| p as u32)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.api_port + i as u16)
    }

    /// Runs `mosaic ARGS` (testnet commands get --dir).
    pub fn mosaic(&self, args: &[&str]) -> Output {
        let mut command = Command::new(binary());
        command.args(args);
        if args.first() == Some(&"testnet") {
            command.arg("--dir").arg(self.data());
        }
        command.env_remove("MOSAIC_NODE").output().unwrap()
    }

    /// Runs a command with --json and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let out = self.mosaic(&with_json);
        assert!(out.status.success(), "mosaic {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    pub fn client_key(&self, j: usize) -> String {
        self.data()
            .join(format!("clients/client{j}.key"))
            .display()
            .to_string()
    }

    pub fn address(&self, j: usize) -> String {
        self.json(&["keys", "show", &self.client_key(j)])["address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn balance(&self, node: usize, address: &str) -> Option<u64> {
        let out = self.mosaic(&["account", address, "--node", &self.url(node), "--json"]);
        if !out.status.success() {
            return None;
        }
        let value: Value = serde_json::from_slice(&out.stdout).ok()?;
        value["balance"].as_u64()
    }

    pub fn height(&self, node: usize) -> Option<u64> {
        self.json(&["testnet", "status"])["nodes"][node]["height"].as_u64()
    }

    /// Sends a transfer through node `via` and waits for its commit.
    pub fn transfer(&self, from: usize, to: &str, amount: u64, via: usize) -> Value {
        self.json(&[
            "tx",
            "transfer",
            "--key",
            &self.client_key(from),
            "--to",
            to,
            "--amount",
            &amount.to_string(),
            "--wait",
            "--timeout",
            "60",
            "--node",
            &self.url(via),
        ])
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.mosaic(&["testnet", "stop"]);
    }
}

/// GET `url` (`http://127.0.0.1:PORT/path`) over HTTP/1.0: the body of a 200.
pub fn http_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_string())
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {LIMIT:?} waiting for {what}");
}

/// One HTTP/1.0 request to node `port` on 127.0.0.1 that waits at most `timeout`
/// for the answer: (status, JSON body, `Null` when it is not JSON); `None` when
/// the node did not answer (down, paused, or killed mid-request).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Option<(u16, Value)> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    stream.write_all(body).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}
