//! `mosaic testnet`: files for a local (or multi-host) validator set, and the
//! processes of a local one.
//!
//! Layout of a testnet folder:
//! ```text
//! genesis.json            chain id, validators, k, client balances
//! testnet.json            the nodes' addresses and peer ids
//! clients/client<j>.key   funded client keys
//! node<i>/validator.key   validator i's key (its consensus key and libp2p identity)
//! node<i>/node.toml       its config (paths relative to node<i>/)
//! node<i>/data/           its store
//! node<i>/node.log        its log
//! node<i>/pid             its process id while running
//! ```

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mosaic_crypto::{ChainId, Keypair, keyfile};
use mosaic_node::config::NodeConfig;
use mosaic_node::genesis::{Genesis, GenesisBalance, GenesisValidator};
use mosaic_node::net;
use serde::{Deserialize, Serialize};

use crate::client::Client;

/// Funds of each generated client account.
pub const CLIENT_FUNDS: u64 = 1_000_000_000;

/// One node of a testnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Validator index.
    pub index: usize,
    /// HTTP API URL.
    pub api: String,
    /// libp2p address other nodes dial.
    pub p2p: String,
    /// libp2p peer id.
    pub peer_id: String,
}

/// `testnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestnetFile {
    /// Chain id.
    pub chain_id: String,
    /// The nodes.
    pub nodes: Vec<NodeEntry>,
    /// Whether the nodes run on this machine (`up` can start them).
    pub local: bool,
}

/// Options of `testnet init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Validators (3f+1).
    pub validators: usize,
    /// Funded client accounts.
    pub clients: usize,
    /// First HTTP API port.
    pub api_port: u16,
    /// First libp2p port.
    pub p2p_port: u16,
    /// One host per validator, for a set across machines.
    pub hosts: Vec<String>,
    /// Chain id.
    pub chain_id: String,
    /// Data fragments k (default f+1).
    pub data_shards: Option<u16>,
}

fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node{i}"))
}

/// Reads `testnet.json`.
pub fn read(dir: &Path) -> Result<TestnetFile> {
    let path = dir.join("testnet.json");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "no testnet in {}: create one with `mosaic testnet init --dir {}`",
            dir.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

fn p2p_multiaddr(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("/ip4/{ip}/tcp/{port}"),
        Ok(IpAddr::V6(ip)) => format!("/ip6/{ip}/tcp/{port}"),
        Err(_) => format!("/dns4/{host}/tcp/{port}"),
    }
}

/// Writes genesis, keys and configs for a new testnet into `dir`.
pub fn init(dir: &Path, options: &InitOptions) -> Result<TestnetFile> {
    let n = options.validators;
    if n < 4 || !(n - 1).is_multiple_of(3) {
        bail!("-n must be 3f+1 with f >= 1 (4, 7, 10, 13, ...); got {n}");
    }
    if !options.hosts.is_empty() && options.hosts.len() != n {
        bail!(
            "--hosts names {} hosts for {n} validators: give one host per validator",
            options.hosts.len()
        );
    }
    if dir.join("genesis.json").exists() {
        bail!(
            "{} already holds a testnet: use it (`mosaic testnet up --dir {}`) or pass --fresh to replace it",
            dir.display(),
            dir.display()
        );
    }
    let chain = ChainId::new(options.chain_id.clone())?;
    let f = (n - 1) / 3;
    let data_shards = options.data_shards.unwrap_or((f + 1) as u16);
    fs::create_dir_all(dir.join("clients"))
        .with_context(|| format!("cannot create {}", dir.display()))?;

    let mut keys = Vec::new();
    for i in 0..n {
        let key = Keypair::generate()?;
        fs::create_dir_all(node_dir(dir, i))?;
        keyfile::write_key_file(&node_dir(dir, i).join("validator.key"), &key, false)?;
        keys.push(key);
    }
    let mut balances = Vec::new();
    for j in 0..options.clients {
        let key = Keypair::generate()?;
        keyfile::write_key_file(&dir.join(format!("clients/client{j}.key")), &key, false)?;
        balances.push(GenesisBalance {
            address: key.public(),
            amount: CLIENT_FUNDS,
        });
    }
    let genesis = Genesis {
        chain_id: chain.clone(),
        data_shards,
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisValidator {
                name: format!("validator-{i}"),
                public_key: k.public(),
            })
            .collect(),
        balances,
    };
    genesis.validate()?;
    fs::write(
        dir.join("genesis.json"),
        serde_json::to_string_pretty(&genesis)? + "\n",
    )?;

    let local = options.hosts.is_empty();
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let peer_id = net::peer_id_of(&key.public())?.to_string();
        let (host, p2p_port, api_port) = if local {
            (
                "127.0.0.1".to_string(),
                options.p2p_port + i as u16,
                options.api_port + i as u16,
            )
        } else {
            (options.hosts[i].clone(), options.p2p_port, options.api_port)
        };
        nodes.push(NodeEntry {
            index: i,
            api: format!(
                "http://{}:{api_port}",
                if local { "127.0.0.1" } else { host.as_str() }
            ),
            p2p: p2p_multiaddr(&host, p2p_port),
            peer_id,
        });
    }
    for i in 0..n {
        let (listen, api_address) = if local {
            (
                nodes[i].p2p.clone(),
                SocketAddr::from(([127, 0, 0, 1], options.api_port + i as u16)),
            )
        } else {
            (
                format!("/ip4/0.0.0.0/tcp/{}", options.p2p_port),
                SocketAddr::from(([127, 0, 0, 1], options.api_port)),
            )
        };
        let config = NodeConfig {
            key_file: PathBuf::from("validator.key"),
            genesis_file: PathBuf::from("../genesis.json"),
            data_dir: PathBuf::from("data"),
            listen: vec![listen],
            api_address,
            bootstrap: nodes
                .iter()
                .filter(|other| other.index != i)
                .map(|other| format!("{}/p2p/{}", other.p2p, other.peer_id))
                .collect(),
            mdns: false,
            batching: Default::default(),
            consensus: Default::default(),
            storage: Default::default(),
            mempool: Default::default(),
            connections: Default::default(),
            api: Default::default(),
            gossip: Default::default(),
            sync_serving: Default::default(),
            scrub: Default::default(),
        };
        fs::write(node_dir(dir, i).join("node.toml"), config.to_toml()?)?;
    }
    let file = TestnetFile {
        chain_id: chain.to_string(),
        nodes,
        local,
    };
    fs::write(
        dir.join("testnet.json"),
        serde_json::to_string_pretty(&file)? + "\n",
    )?;
    Ok(file)
}

/// Whether process `pid` exists and has not exited. An exited child that its parent
/// has not reaped yet (a zombie, state `Z` in /proc) counts as gone: `kill -0` still
/// succeeds on it.
fn alive(pid: u32) -> bool {
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        return stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X");
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pid of node i, if it is running.
pub fn running_pid(dir: &Path, i: usize) -> Option<u32> {
    let pid: u32 = fs::read_to_string(node_dir(dir, i).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// Starts node i in the background (log appended to node<i>/node.log).
pub fn start_node(dir: &Path, i: usize, extra_args: &[String]) -> Result<Child> {
    let node = node_dir(dir, i);
    if let Some(pid) = running_pid(dir, i) {
        bail!("node {i} is already running (pid {pid})");
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.join("node.log"))
        .with_context(|| format!("cannot open {}", node.join("node.log").display()))?;
    let exe = std::env::current_exe().context("cannot find the mosaic binary")?;
    let child = Command::new(exe)
        .args(["node", "run", "--config"])
        .arg(node.join("node.toml"))
        .args(extra_args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start node {i}"))?;
    fs::write(node.join("pid"), child.id().to_string())?;
    Ok(child)
}

/// Stops node i: SIGTERM, then SIGKILL after `grace`. Returns whether it was running.
pub fn stop_node(dir: &Path, i: usize, grace: Duration) -> bool {
    let Some(pid) = running_pid(dir, i) else {
        return false;
    };
    signal(pid, "TERM");
    let start = Instant::now();
    while alive(pid) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        signal(pid, "KILL");
    }
    let _ = fs::remove_file(node_dir(dir, i).join("pid"));
    true
}

/// Kills node i at once (SIGKILL: a crash). Returns whether it was running.
pub fn kill_node(dir: &Path, i: usize) -> bool {
    let Some(pid) = running_pid(dir, i) else {
        return false;
    };
    signal(pid, "KILL");
    let _ = fs::remove_file(node_dir(dir, i).join("pid"));
    true
}

/// Waits until node `entry` answers `/v1/status`.
pub fn wait_ready(entry: &NodeEntry, limit: Duration) -> Result<()> {
    let client = Client::new(&entry.api);
    let start = Instant::now();
    loop {
        if client.get("/v1/status").is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "node {} did not answer on {} within {limit:?}: see node{}/node.log",
                entry.index,
                entry.api,
                entry.index
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Log file of node i.
pub fn log_path(dir: &Path, i: usize) -> PathBuf {
    node_dir(dir, i).join("node.log")
}

/// The first client key file.
pub fn client_key_path(dir: &Path, j: usize) -> PathBuf {
    dir.join(format!("clients/client{j}.key"))
}
