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
//! netns.json, partition.json, flap.json   with --netns (see the netns module)
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
use crate::netns::{self, NetnsPlan};

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
    /// With `init --netns`: the namespaces each validator runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsPlan>,
}

impl TestnetFile {
    /// The node entry of validator i, or an error naming the valid range.
    pub fn node(&self, i: usize) -> Result<&NodeEntry> {
        self.nodes.get(i).with_context(|| {
            format!(
                "--node {i}: this testnet has validators 0..{}",
                self.nodes.len().saturating_sub(1)
            )
        })
    }
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
    /// Each validator in its own network namespace on this machine (see
    /// [`crate::netns`]); every node then uses the same ports on its own address.
    pub netns: Option<NetnsPlan>,
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

/// Refuses a validator count that is not 3f+1 with f >= 1.
pub fn check_validator_count(n: usize) -> Result<()> {
    if n < 4 || !(n - 1).is_multiple_of(3) {
        bail!("-n must be 3f+1 with f >= 1 (4, 7, 10, 13, ...); got {n}");
    }
    Ok(())
}

/// Writes genesis, keys and configs for a new testnet into `dir`.
pub fn init(dir: &Path, options: &InitOptions) -> Result<TestnetFile> {
    let n = options.validators;
    check_validator_count(n)?;
    if options.netns.is_some() && !options.hosts.is_empty() {
        bail!(
            "--netns and --hosts exclude each other: --netns gives each validator its own address on this machine"
        );
    }
    if let Some(plan) = &options.netns
        && plan.validators != n
    {
        bail!(
            "the namespace plan is for {} validators, not {n}",
            plan.validators
        );
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

    let hosts: Vec<String> = match &options.netns {
        Some(plan) => (0..n).map(|i| plan.address(i).to_string()).collect(),
        None => options.hosts.clone(),
    };
    // Namespaced validators run on this machine, each on its own address.
    let local = hosts.is_empty() || options.netns.is_some();
    let own_address = !hosts.is_empty();
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let peer_id = net::peer_id_of(&key.public())?.to_string();
        let (host, p2p_port, api_port) = if own_address {
            (hosts[i].clone(), options.p2p_port, options.api_port)
        } else {
            (
                "127.0.0.1".to_string(),
                options.p2p_port + i as u16,
                options.api_port + i as u16,
            )
        };
        nodes.push(NodeEntry {
            index: i,
            api: format!("http://{host}:{api_port}"),
            p2p: p2p_multiaddr(&host, p2p_port),
            peer_id,
        });
    }
    for i in 0..n {
        let (listen, api_address) = if let Some(plan) = &options.netns {
            // Inside its namespace the node has one address besides loopback: both
            // its API and its p2p listener bind it, so the host reaches the API at
            // the URL in testnet.json.
            (
                nodes[i].p2p.clone(),
                SocketAddr::new(IpAddr::V4(plan.address(i)), options.api_port),
            )
        } else if !own_address {
            (
                nodes[i].p2p.clone(),
                SocketAddr::from(([127, 0, 0, 1], options.api_port + i as u16)),
            )
        } else {
            // The API binds the host's own address when it is one, so that the URL
            // in testnet.json is where the node answers; a host name cannot be
            // bound, so such a node answers on every interface.
            let api_address = match hosts[i].parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, options.api_port),
                Err(_) => SocketAddr::from(([0, 0, 0, 0], options.api_port)),
            };
            (
                format!("/ip4/0.0.0.0/tcp/{}", options.p2p_port),
                api_address,
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
        netns: options.netns.clone(),
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
    (alive(pid) && is_node_process(pid, i)).then_some(pid)
}

/// Whether process `pid` is node i of a testnet (`mosaic node run --config
/// .../node<i>/node.toml`), so that a pid file left from before a reboot never
/// makes the CLI signal an unrelated process that got the same pid. Where
/// `/proc` cannot tell, the pid file is believed.
fn is_node_process(pid: u32, i: usize) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return !Path::new("/proc/self/cmdline").exists();
    };
    let config = format!("node{i}/node.toml");
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w == [&b"node"[..], &b"run"[..]])
        && args.iter().any(|a| a.ends_with(config.as_bytes()))
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
    let plan = read(dir).ok().and_then(|file| file.netns);
    let mut command = match &plan {
        Some(plan) => {
            let mut command = netns::exec_prefix(plan, i);
            command.arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let child = command
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

/// With `--netns`, makes sure the testnet's namespaces exist before a node starts.
/// When no validator runs, whatever an earlier run left (a crashed or killed CLI)
/// is removed first and the network is made anew, without any partition.
pub fn ensure_network(dir: &Path, file: &TestnetFile) -> Result<()> {
    let Some(plan) = &file.netns else {
        return Ok(());
    };
    let running = (0..file.nodes.len()).any(|i| running_pid(dir, i).is_some());
    if running {
        if netns::is_up(plan)? {
            return Ok(());
        }
        bail!(
            "validators of this testnet run but its namespaces are gone: stop them (`mosaic testnet stop --dir {}`) and start it again",
            dir.display()
        );
    }
    netns::setup(dir, plan)
}

/// With `--netns`, stops whatever still runs in the testnet's namespaces and removes
/// them, the veth pairs and the bridge.
pub fn remove_network(dir: &Path, file: &TestnetFile) -> Result<()> {
    match &file.netns {
        Some(plan) => netns::teardown(dir, plan),
        None => Ok(()),
    }
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

/// Waits until node `entry` of the testnet in `dir` answers `/v1/status`. A node
/// that exits while it starts (a port taken, a bad config) is reported at once,
/// with the end of its log, rather than after `limit`.
pub fn wait_ready(dir: &Path, entry: &NodeEntry, limit: Duration) -> Result<()> {
    let client = Client::new(&entry.api);
    let start = Instant::now();
    loop {
        if client.get("/v1/status").is_ok() {
            return Ok(());
        }
        let i = entry.index;
        if !started_alive(dir, i) {
            bail!(
                "node {i} exited while starting; the end of node{i}/node.log:\n{}",
                log_tail(dir, i, 20)
            );
        }
        if start.elapsed() > limit {
            bail!(
                "node {i} did not answer on {} within {limit:?}; the end of node{i}/node.log:\n{}",
                entry.api,
                log_tail(dir, i, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the process that started node i (its pid file) still runs. Unlike
/// [`running_pid`] it does not ask whether the process is a node: while it
/// execs (`ip netns exec`, then the node) its command line reads empty for a
/// moment, and this pid was written by the start a moment ago.
fn started_alive(dir: &Path, i: usize) -> bool {
    fs::read_to_string(node_dir(dir, i).join("pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(alive)
}

/// The last `lines` lines of node i's log (at most 64 KiB of it is read).
fn log_tail(dir: &Path, i: usize, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 64 * 1024;
    let Ok(mut file) = fs::File::open(log_path(dir, i)) else {
        return "(no log)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut text = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .is_err()
        || file.take(TAIL_BYTES).read_to_end(&mut text).is_err()
    {
        return "(log unreadable)".into();
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Log file of node i.
pub fn log_path(dir: &Path, i: usize) -> PathBuf {
    node_dir(dir, i).join("node.log")
}

/// The first client key file.
pub fn client_key_path(dir: &Path, j: usize) -> PathBuf {
    dir.join(format!("clients/client{j}.key"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    #[test]
    fn hosts_configs_bind_the_api_that_testnet_json_names() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "validator-3.example"];
        let file = init(
            dir.path(),
            &InitOptions {
                validators: 4,
                clients: 1,
                api_port: 8000,
                p2p_port: 9000,
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                chain_id: "hosts-test".into(),
                data_shards: None,
                netns: None,
            },
        )
        .unwrap();
        for (i, host) in hosts.iter().enumerate() {
            let text = fs::read_to_string(node_dir(dir.path(), i).join("node.toml")).unwrap();
            let config: NodeConfig = toml::from_str(&text).unwrap();
            assert_eq!(file.nodes[i].api, format!("http://{host}:8000"));
            match host.parse::<IpAddr>() {
                Ok(ip) => assert_eq!(config.api_address, SocketAddr::new(ip, 8000)),
                Err(_) => assert_eq!(config.api_address, "0.0.0.0:8000".parse().unwrap()),
            }
        }
    }
}
