//! `mosaic`: run validators, manage a local testnet, send transfers, audit chains.
//!
//! Exit codes: 0 success, 1 failure (the message says what to do), 2 usage error.

mod audit;
mod bench;
mod block_text;
mod client;
mod lifecycle;
mod monitoring;
mod netns;
mod plot;
mod testnet;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use mosaic_crypto::{Keypair, PublicKey, keyfile};
use mosaic_node::config::NodeConfig;
use mosaic_node::genesis::Genesis;
use mosaic_node::maverick;
use mosaic_node::service::{self, TestOptions};
use serde_json::{Value, json};

use client::{Client, DEFAULT_NODE, Patience};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mosaic",
    version,
    about = "Mosaic: a Byzantine-fault-tolerant ledger with erasure-coded blocks"
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Make and inspect keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Run a validator, or write one validator's files.
    #[command(subcommand)]
    Node(NodeCmd),
    /// A local testnet: init, up, status, stop, kill, start, restart.
    #[command(subcommand)]
    Testnet(TestnetCmd),
    /// Sign, submit and look up transactions.
    #[command(subcommand)]
    Tx(TxCmd),
    /// An account's balance and nonce, verified against the genesis file.
    #[command(
        after_help = "Example: mosaic account 3b6a27bc...e5f0\nWith a genesis file (--genesis, or the local testnet's) the answer is checked: a commit certificate of 2f+1 genesis validators over a header, and the account's path under its state root. A node whose proof fails is named and the next --node is asked."
    )]
    Account {
        /// The address (public key, 64 hex characters).
        address: PublicKey,
        #[command(flatten)]
        node: NodeArg,
        #[command(flatten)]
        verify: VerifyArg,
    },
    /// A block with its certificate and transactions (a summary; --json: the node's answer).
    #[command(after_help = "Example: mosaic block 12\n         mosaic --json block 12")]
    Block {
        /// Height.
        height: u64,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Verify chains and rebuild blocks from fragments.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Load benchmark: a fresh local testnet under pre-signed load.
    #[command(
        after_help = "Examples:\n  mosaic bench --rate 2000 --duration 30\n  mosaic bench -n 7 --json\n  mosaic bench --sweep 1000,2000,4000 --duration 20 --plot docs/bench-sweep.svg"
    )]
    Bench(bench::BenchOptions),
    /// Test builds only: flood a local testnet from outside its validator set
    /// (gossip of badly signed transfers, fragment and block requests in a loop).
    #[command(hide = true)]
    Flood {
        #[command(flatten)]
        dir: DirArg,
        /// How long.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Args, Clone)]
struct NodeArg {
    /// The nodes' HTTP APIs, tried in order (repeat, or comma-separated). Default:
    /// every validator of the local testnet in testnet/data, else
    /// http://127.0.0.1:8000.
    #[arg(long = "node", env = "MOSAIC_NODE", value_delimiter = ',')]
    nodes: Vec<String>,
}

impl NodeArg {
    /// The nodes to use, in order.
    fn urls(&self) -> Vec<String> {
        if !self.nodes.is_empty() {
            return self.nodes.clone();
        }
        match testnet::read(Path::new(lifecycle::TESTNET_DIR)) {
            Ok(file) if !file.nodes.is_empty() => file.nodes.into_iter().map(|n| n.api).collect(),
            _ => vec![DEFAULT_NODE.to_string()],
        }
    }

    /// GET `path` from the first node that answers (an answer with an error
    /// status is an answer).
    fn get(&self, path: &str) -> Result<Value> {
        self.get_from(path).map(|(_, value)| value)
    }

    /// [`Self::get`], with the URL of the node that answered.
    fn get_from(&self, path: &str) -> Result<(String, Value)> {
        let mut unreachable = Vec::new();
        for url in self.urls() {
            match Client::new(&url).get_raw(path) {
                Ok((status, value)) if (200..300).contains(&status) => return Ok((url, value)),
                Ok((status, value)) => bail!("{}", client::error_text(status, &value)),
                Err(e) => unreachable.push(format!("{e:#}")),
            }
        }
        bail!("no node answered: {}", unreachable.join("; "))
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Generate a key file (mode 0600).
    #[command(after_help = "Example: mosaic keys new --out alice.key")]
    New {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the address (public key) of a key file.
    #[command(after_help = "Example: mosaic keys show alice.key")]
    Show {
        /// The key file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Run a validator until Ctrl-C / SIGTERM.
    #[command(after_help = "Example: mosaic node run --config testnet/data/node0/node.toml")]
    Run {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Test builds only: run as a Byzantine validator in this mode (see
        /// docs/BYZANTINE.md). A release build refuses it.
        #[arg(long, hide = true, value_name = "MODE")]
        maverick: Option<String>,
    },
    /// Write a key and a config for one validator into a folder.
    #[command(
        after_help = "Example: mosaic node init --dir v0 --genesis genesis.json --listen /ip4/0.0.0.0/tcp/9000 --bootstrap /ip4/10.0.0.2/tcp/9000/p2p/12D3..."
    )]
    Init {
        /// Folder for validator.key and node.toml.
        #[arg(long)]
        dir: PathBuf,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// libp2p listen address.
        #[arg(long, default_value = "/ip4/0.0.0.0/tcp/9000")]
        listen: String,
        /// HTTP API address.
        #[arg(long, default_value = "127.0.0.1:8000")]
        api: std::net::SocketAddr,
        /// Peers to dial at start (repeat).
        #[arg(long)]
        bootstrap: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TestnetCmd {
    /// Write genesis, keys and configs for N = 3f+1 validators.
    #[command(
        after_help = "Examples:\n  mosaic testnet init -n 4\n  mosaic testnet init -n 4 --hosts 10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4 --dir deploy"
    )]
    Init {
        #[command(flatten)]
        dir: DirArg,
        /// Number of validators (4, 7, 10, ...).
        #[arg(short = 'n', long, default_value_t = 4)]
        validators: usize,
        /// Funded client accounts.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// First HTTP API port (node i uses this + i locally).
        #[arg(long, default_value_t = 8000)]
        api_port: u16,
        /// First libp2p port (node i uses this + i locally).
        #[arg(long, default_value_t = 9000)]
        p2p_port: u16,
        /// One host per validator (comma-separated) for a set across machines.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Chain id.
        #[arg(long, default_value = "mosaic-testnet")]
        chain_id: String,
        /// Data fragments k (default f+1).
        #[arg(long)]
        data_shards: Option<u16>,
        /// Delete an existing testnet in the folder first.
        #[arg(long)]
        fresh: bool,
        /// Each validator in its own network namespace on this machine (Linux,
        /// root), on its own address of a private subnet 10.222.X.0/24 the testnet
        /// owns; `up` creates the namespaces, `stop` removes them. Enables
        /// `partition`, `heal` and `flap`.
        #[arg(long, conflicts_with = "hosts")]
        netns: bool,
    },
    /// Start every validator; stops them all on Ctrl-C (unless --detach).
    #[command(after_help = "Example: mosaic testnet up")]
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// Start the nodes and return.
        #[arg(long)]
        detach: bool,
    },
    /// Height, view and peers of every validator.
    Status {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Stop validators cleanly (all, or --node I).
    #[command(after_help = "Example: mosaic testnet stop --node 2")]
    Stop {
        #[command(flatten)]
        dir: DirArg,
        /// One validator.
        #[arg(long)]
        node: Option<usize>,
    },
    /// Kill a validator at once (SIGKILL), as a crash would.
    #[command(after_help = "Example: mosaic testnet kill --node 1")]
    Kill {
        #[command(flatten)]
        dir: DirArg,
        /// The validator.
        #[arg(long)]
        node: usize,
    },
    /// Start one stopped validator.
    #[command(after_help = "Example: mosaic testnet start --node 1")]
    Start {
        #[command(flatten)]
        dir: DirArg,
        /// The validator.
        #[arg(long)]
        node: usize,
        /// Test builds only: run it as a Byzantine validator in this mode (see
        /// docs/BYZANTINE.md). A release build refuses it.
        #[arg(long, hide = true, value_name = "MODE")]
        maverick: Option<String>,
    },
    /// Stop and start one validator.
    #[command(after_help = "Example: mosaic testnet restart --node 3")]
    Restart {
        #[command(flatten)]
        dir: DirArg,
        /// The validator.
        #[arg(long)]
        node: usize,
    },
    /// Cut the validators of a --netns testnet into groups that cannot reach each
    /// other (the host still reaches every API). Replaces an earlier partition.
    #[command(
        after_help = "Examples:\n  mosaic testnet partition --groups 0,1/2,3\n  mosaic testnet partition --isolate 0"
    )]
    Partition {
        #[command(flatten)]
        dir: DirArg,
        /// Groups split by '/', validators by ','; every validator in one group.
        #[arg(long, required_unless_present = "isolate", conflicts_with = "isolate")]
        groups: Option<String>,
        /// Cut one validator off from all the others.
        #[arg(long)]
        isolate: Option<usize>,
    },
    /// End the partition and any flapping link: every validator reaches every other.
    #[command(after_help = "Example: mosaic testnet heal")]
    Heal {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Take one validator's link down and up again and again (a --netns testnet),
    /// until --duration, `mosaic testnet heal` or Ctrl-C; leaves the link up.
    #[command(after_help = "Example: mosaic testnet flap --node 2 --period 2s --duration 60s")]
    Flap {
        #[command(flatten)]
        dir: DirArg,
        /// The validator.
        #[arg(long)]
        node: usize,
        /// How long the link stays down, then up (e.g. 2s, 500ms).
        #[arg(long, default_value = "2s", value_parser = netns::parse_duration)]
        period: Duration,
        /// Stop after this long (default: until heal or Ctrl-C).
        #[arg(long, value_parser = netns::parse_duration)]
        duration: Option<Duration>,
    },
}

#[derive(Args, Clone)]
struct DirArg {
    /// The testnet folder.
    #[arg(long, default_value = "testnet/data")]
    dir: PathBuf,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum TxCmd {
    /// Sign a transfer locally and submit it; prints its hash at once.
    #[command(
        after_help = "Example: mosaic tx transfer --key testnet/data/clients/client0.key --to 3b6a...e5f0 --amount 25 --wait"
    )]
    Transfer {
        /// The sender's key file.
        #[arg(long)]
        key: PathBuf,
        /// Recipient address (public key, 64 hex characters).
        #[arg(long)]
        to: PublicKey,
        /// Amount (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        amount: u64,
        /// Nonce (default: the account's next nonce past its transfers pending in
        /// turn, the highest any --node reports, so transfers sent in a row do not
        /// reuse a nonce).
        #[arg(long)]
        nonce: Option<u64>,
        /// Heights after the tip it stays valid for: after height tip + N it can
        /// never commit, and its nonce may be used again.
        #[arg(long = "valid-for", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
        valid_for: u64,
        /// Wait until it is committed, failed, dropped or expired; when the node
        /// stops answering, send the same signed transfer to the next --node.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits at most, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[command(flatten)]
        node: NodeArg,
        #[command(flatten)]
        verify: VerifyArg,
    },
    /// Status of a transaction: pending, committed, failed, unknown.
    #[command(after_help = "Example: mosaic tx status 9f2c...01ab")]
    Status {
        /// Transaction hash.
        hash: String,
        #[command(flatten)]
        node: NodeArg,
        #[command(flatten)]
        verify: VerifyArg,
    },
}

/// What answers are checked against.
#[derive(Args, Clone, Debug)]
struct VerifyArg {
    /// The genesis file to check answers against (default: the local testnet's,
    /// testnet/data/genesis.json, when there is one).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Print what the node says without checking its proof.
    #[arg(long = "no-verify")]
    no_verify: bool,
}

impl VerifyArg {
    /// The genesis to check against, or `None` to print unchecked answers.
    fn genesis(&self) -> Result<Option<Genesis>> {
        if self.no_verify {
            return Ok(None);
        }
        verify::trusted_genesis(self.genesis.as_deref())
    }
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// Nodes to read from (repeat, or comma-separated).
    #[arg(long = "node", value_delimiter = ',', conflicts_with = "from_dir")]
    nodes: Vec<String>,
    /// An exported folder instead of nodes.
    #[arg(long = "from-dir")]
    from_dir: Option<PathBuf>,
    /// The genesis file to trust (the auditor's own copy). Without it or
    /// --genesis-hash the source's genesis is trusted, with a warning.
    #[arg(long, conflicts_with = "genesis_hash")]
    genesis: Option<PathBuf>,
    /// The hash of the genesis to trust (64 hex characters): the source's genesis
    /// is used only if it has this hash.
    #[arg(long = "genesis-hash")]
    genesis_hash: Option<String>,
}

impl SourceArgs {
    fn source(&self) -> audit::Source {
        match &self.from_dir {
            Some(dir) => audit::Source::Folder(dir.clone()),
            None if self.nodes.is_empty() => audit::Source::Nodes(vec![Client::new(DEFAULT_NODE)]),
            None => audit::Source::Nodes(self.nodes.iter().map(|u| Client::new(u)).collect()),
        }
    }

    fn trust(&self) -> Result<audit::Trust> {
        Ok(match (&self.genesis, &self.genesis_hash) {
            (Some(path), _) => audit::Trust::File(path.clone()),
            (None, Some(hex)) => audit::Trust::Hash(hex.parse().map_err(|e| {
                anyhow!("--genesis-hash {hex:?} is not a hash (64 hex characters): {e}")
            })?),
            (None, None) => audit::Trust::Source,
        })
    }
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check a chain from genesis: links, certificates, signatures, state replay.
    #[command(
        after_help = "Examples:\n  mosaic audit verify --node http://127.0.0.1:8001\n  mosaic audit verify --from-dir export/"
    )]
    Verify {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Write genesis, certified headers and fragments to a folder.
    #[command(
        after_help = "Example: mosaic audit export --out export/ --node http://127.0.0.1:8000,http://127.0.0.1:8001"
    )]
    Export {
        /// Folder to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Rebuild a block from any k fragments and check it against its header.
    #[command(
        after_help = "Examples:\n  mosaic audit reconstruct --height 5 --node http://127.0.0.1:8002,http://127.0.0.1:8003\n  mosaic audit reconstruct --height 5 --from-dir export/ --out block5.json"
    )]
    Reconstruct {
        /// Height.
        #[arg(long)]
        height: u64,
        /// Output file (default block-<height>.json).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// How many good fragments of each height the validators hold, worst first.
    /// Exits 1 if a height has fewer than k (it cannot be rebuilt).
    #[command(
        after_help = "Examples:\n  mosaic audit availability --genesis genesis.json --node http://127.0.0.1:8000,http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003\n  mosaic audit availability --from 100 --to 200 --json --node ..."
    )]
    Availability {
        /// First height (default 1).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last height (default the highest any node reports).
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        source: SourceArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn availability_table(value: &Value) -> String {
    let mut out = format!(
        "heights {}..={}: k = {}, n = {}, fewest good fragments {}\n",
        value["from"], value["to"], value["k"], value["n"], value["min_good"]
    );
    for row in value["heights_by_good_fragments"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out += &format!(
            "  {} heights with {} good fragments\n",
            row["heights"], row["good"]
        );
    }
    out += "worst heights:\n";
    for row in value["worst"].as_array().into_iter().flatten() {
        out += &format!("  height {:>8}  {} good\n", row["height"], row["good"]);
    }
    for node in value["nodes"].as_array().into_iter().flatten() {
        out += &format!(
            "  {} (validator {}): {} good, {} bad{}\n",
            node["node"].as_str().unwrap_or_default(),
            node["validator"],
            node["good_fragments"],
            node["bad_count"],
            node["error"]
                .as_str()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        );
    }
    out += &audit::trust_line(value);
    out
}

fn print(json: bool, value: &Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Top::Keys(KeysCmd::New { out, force }) => {
            let key = Keypair::generate()?;
            keyfile::write_key_file(&out, &key, force)?;
            let value =
                json!({ "file": out.display().to_string(), "address": key.public().to_string() });
            print(json, &value, || {
                format!("wrote {}\naddress {}", out.display(), key.public())
            });
        }
        Top::Keys(KeysCmd::Show { file }) => {
            let key = keyfile::read_key_file(&file)?;
            let value = json!({ "address": key.public().to_string() });
            print(json, &value, || key.public().to_string());
        }
        Top::Node(NodeCmd::Run { config, maverick }) => run_node(&config, maverick.as_deref())?,
        Top::Node(NodeCmd::Init {
            dir,
            genesis,
            listen,
            api,
            bootstrap,
        }) => {
            Genesis::read(&genesis)?;
            std::fs::create_dir_all(&dir)?;
            let key_path = dir.join("validator.key");
            let key = Keypair::generate()?;
            keyfile::write_key_file(&key_path, &key, false)?;
            let genesis_file = std::fs::canonicalize(&genesis)?;
            let config = NodeConfig {
                key_file: PathBuf::from("validator.key"),
                genesis_file,
                data_dir: PathBuf::from("data"),
                listen: vec![listen],
                api_address: api,
                bootstrap,
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
            config.check().map_err(|e| anyhow!(e))?;
            let config_path = dir.join("node.toml");
            if config_path.exists() {
                bail!("{} exists; not overwriting it", config_path.display());
            }
            std::fs::write(&config_path, config.to_toml()?)?;
            let peer_id = mosaic_node::net::peer_id_of(&key.public())?;
            let value = json!({
                "config": config_path.display().to_string(),
                "public_key": key.public().to_string(),
                "peer_id": peer_id.to_string(),
            });
            print(json, &value, || {
                format!(
                    "wrote {} and {}\npublic key {} (add it to the genesis validators)\npeer id {peer_id}",
                    key_path.display(),
                    config_path.display(),
                    key.public()
                )
            });
        }
        Top::Testnet(cmd) => run_testnet(cmd, json)?,
        Top::Tx(TxCmd::Transfer {
            key,
            to,
            amount,
            nonce,
            valid_for,
            wait,
            timeout,
            node,
            verify,
        }) => lifecycle::transfer(
            &lifecycle::TransferArgs {
                key_file: key,
                to,
                amount,
                nonce,
                valid_for,
                wait,
                timeout: Duration::from_secs(timeout),
                genesis: if wait { verify.genesis()? } else { None },
            },
            &node.urls(),
            json,
        )?,
        Top::Tx(TxCmd::Status { hash, node, verify }) => match verify.genesis()? {
            Some(genesis) => {
                let value = verify::status(&hash, &node.urls(), &genesis, Patience::WaitOutBusy)?;
                print(json, &value, || verify::describe_status(&value));
            }
            None => {
                let value = lifecycle::status(&hash, &node.urls())?;
                print(json, &value, || lifecycle::describe_status(&value));
            }
        },
        Top::Account {
            address,
            node,
            verify,
        } => {
            if let Some(genesis) = verify.genesis()? {
                let value =
                    verify::account(&address, &node.urls(), &genesis, Patience::WaitOutBusy)?;
                print(json, &value, || verify::describe_account(&value));
                return Ok(());
            }
            let value = node.get(&format!("/v1/accounts/{address}"))?;
            print(json, &value, || {
                format!(
                    "address {}\nbalance {}\nnext nonce {} (next past its pending transfers: {})\n(at height {}; not verified: no genesis file to check against, pass --genesis)",
                    value["address"].as_str().unwrap_or_default(),
                    value["balance"],
                    value["nonce"],
                    value["pending_nonce"],
                    value["height"]
                )
            });
        }
        Top::Block { height, node } => {
            let (url, value) = node.get_from(&format!("/v1/blocks/{height}"))?;
            print(json, &value, || {
                let status = Client::new(&url).get_raw("/v1/status").ok().map(|(_, s)| s);
                let page = format!("{}/?block={height}", url.trim_end_matches('/'));
                block_text::describe(&value, status.as_ref(), &page)
            });
        }
        Top::Bench(options) if !options.sweep.is_empty() => {
            let report = bench::sweep(&options, json)?;
            print(json, &report, || sweep_table(&report));
        }
        Top::Flood { dir, seconds } => {
            let file = testnet::read(&dir.dir)?;
            let chain = mosaic_crypto::ChainId::new(file.chain_id.clone())?;
            let addresses = file
                .nodes
                .iter()
                .map(|n| format!("{}/p2p/{}", n.p2p, n.peer_id))
                .collect();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = runtime
                .block_on(maverick::flood(
                    chain,
                    addresses,
                    Duration::from_secs(seconds),
                ))
                .map_err(anyhow::Error::msg)?;
            let value = serde_json::to_value(&report)?;
            print(json, &value, || value.to_string());
        }
        Top::Bench(options) => {
            let report = bench::run(&options, json)?;
            print(json, &report, || bench_table(&report));
        }
        Top::Audit(AuditCmd::Verify { source }) => {
            let value = audit::verify(&source.source(), &source.trust()?, json)?;
            print(json, &value, || {
                format!(
                    "chain {} verified from genesis to height {}: links, certificates, {} transaction signatures and state roots all check\n{}",
                    value["chain_id"].as_str().unwrap_or_default(),
                    value["height"],
                    value["transactions"],
                    audit::trust_line(&value)
                )
            });
        }
        Top::Audit(AuditCmd::Export { out, source }) => {
            let value = audit::export(&source.source(), &source.trust()?, &out, json)?;
            print(json, &value, || {
                format!(
                    "exported {} blocks and {} fragments (each checked) to {}; refused {}; heights with fewer than k fragments: [{}]\n{}",
                    value["blocks"],
                    value["fragments"],
                    out.display(),
                    value["refused_fragments"].as_array().map_or(0, Vec::len),
                    audit::ranges_text(&value["heights_below_k"]),
                    audit::trust_line(&value)
                )
            });
        }
        Top::Audit(AuditCmd::Reconstruct {
            height,
            out,
            source,
        }) => {
            let value =
                audit::reconstruct(&source.source(), &source.trust()?, height, out.as_deref())?;
            print(json, &value, || {
                let f = &value["fragments"];
                format!(
                    "rebuilt block {height} ({} transactions) into {}\ngood fragments {}\nbad {}\nmissing {}\n{}",
                    value["transactions"],
                    value["written"].as_str().unwrap_or_default(),
                    f["good"],
                    f["bad"],
                    f["missing"],
                    audit::trust_line(&value)
                )
            });
        }
        Top::Audit(AuditCmd::Availability { from, to, source }) => {
            let (value, lost) =
                audit::availability(&source.source(), &source.trust()?, from, to, json)?;
            print(json, &value, || availability_table(&value));
            let below_n = audit::ranges_text(&value["heights_below_n"]);
            if lost {
                bail!(
                    "heights [{}] have fewer than k = {} good fragments and cannot be rebuilt",
                    audit::ranges_text(&value["heights_below_k"]),
                    value["k"]
                );
            }
            if !below_n.is_empty() {
                eprintln!(
                    "warning: heights [{below_n}] have fewer than n = {} good fragments (still rebuildable; the validators' scrub repairs them)",
                    value["n"]
                );
            }
        }
    }
    Ok(())
}

fn sweep_table(sweep: &Value) -> String {
    let number = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    let mut out = format!(
        "{:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>11} {:>9}\n",
        "offered",
        "committed",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "blocks/s",
        "avg block",
        "VCs",
        "CPU ms/tx",
        "peak MiB"
    );
    for r in sweep["sweep"].as_array().into_iter().flatten() {
        let peak = r["peak_memory_bytes_per_node"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .fold(0.0, f64::max)
            / 1048576.0;
        out += &format!(
            "{:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>11} {:>9.0}\n",
            r["offered_rate"],
            number(&r["committed_per_second"], 0),
            number(&r["latency_ms"]["p50"], 0),
            number(&r["latency_ms"]["p90"], 0),
            number(&r["latency_ms"]["p99"], 0),
            number(&r["blocks_per_second"], 1),
            number(&r["average_block_transactions"], 0),
            number(&r["view_changes"], 0),
            r["cpu_seconds_per_transaction"]
                .as_f64()
                .map_or("-".into(), |x| format!("{:.3}", x * 1000.0)),
            peak
        );
    }
    out
}

fn bench_table(r: &Value) -> String {
    let number = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    // Ratios get 3 decimals: the storage target is 0.6, and 0.6 hides 0.59 and 0.61.
    let list_with = |v: &Value, scale: f64, decimals: usize| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| format!("{:.*}", decimals, x / scale))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default()
    };
    let list = |v: &Value, scale: f64| list_with(v, scale, 1);
    let rows = [
        ("validators", r["validators"].to_string()),
        (
            "offered rate (tx/s)",
            r["offered_rate"]
                .as_u64()
                .map_or("as fast as accepted".into(), |x| x.to_string()),
        ),
        (
            "encoding",
            r["encoding"].as_str().unwrap_or("-").to_string(),
        ),
        ("offered (transfers)", r["submitted"].to_string()),
        ("admitted (transfers)", r["admitted"].to_string()),
        (
            "refusals (shed/full/busy answers, share)",
            format!(
                "{} ({:.1}%)",
                r["refusals"],
                r["refused_share"].as_f64().unwrap_or(0.0) * 100.0
            ),
        ),
        (
            "committed (tx/s, steady state)",
            number(&r["committed_per_second"]),
        ),
        (
            "committed each second (min / median / max)",
            format!(
                "{} / {} / {}",
                r["committed_each_second"]["min"],
                r["committed_each_second"]["median"],
                r["committed_each_second"]["max"]
            ),
        ),
        ("latency p50 (ms)", number(&r["latency_ms"]["p50"])),
        ("latency p90 (ms)", number(&r["latency_ms"]["p90"])),
        ("latency p99 (ms)", number(&r["latency_ms"]["p99"])),
        (
            "from first offer p50 / p99 (ms)",
            format!(
                "{} / {}",
                number(&r["latency_from_first_offer_ms"]["p50"]),
                number(&r["latency_from_first_offer_ms"]["p99"])
            ),
        ),
        ("blocks/s", number(&r["blocks_per_second"])),
        (
            "average block (tx)",
            number(&r["average_block_transactions"]),
        ),
        ("view changes", number(&r["view_changes"])),
        (
            "transfers backups fetched from the primary (whole run)",
            number(&r["proposal_transfers_fetched"]),
        ),
        (
            "CPU per committed tx (ms, all nodes)",
            r["cpu_seconds_per_transaction"]
                .as_f64()
                .map_or("-".into(), |x| format!("{:.3}", x * 1000.0)),
        ),
        (
            "peak memory per node (MiB)",
            list(&r["peak_memory_bytes_per_node"], 1048576.0),
        ),
        (
            "stored per node (MiB)",
            list(&r["stored_bytes_per_node"], 1048576.0),
        ),
        (
            "full bodies kept per node",
            format!(
                "last {} blocks, at most {} MiB",
                r["body_window"]["blocks"], r["body_window"]["mib"]
            ),
        ),
        (
            "stored after stop (MiB)",
            list(&r["stored_bytes_per_node_after_stop"], 1048576.0),
        ),
        (
            "stored after stop / committed body bytes",
            list_with(&r["stored_per_committed_byte_after_stop"], 1.0, 3),
        ),
        (
            "stored / committed body bytes",
            list_with(&r["stored_per_committed_byte"], 1.0, 3),
        ),
        (
            "node 0 by table (MiB)",
            r["stored_bytes_by_table_node0"]
                .as_object()
                .map(|tables| {
                    tables
                        .iter()
                        .filter_map(|(k, v)| Some(format!("{k} {:.1}", v.as_f64()? / 1048576.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        ),
    ];
    let proofs = &r["proofs"];
    let proof_rows = proofs.is_object().then(|| {
        [
            (
                "proofs offered / served (per s)",
                format!(
                    "{} / {}",
                    proofs["offered_per_second"],
                    number(&proofs["served_per_second"])
                ),
            ),
            (
                "proofs busy (503) / failed",
                format!("{} / {}", proofs["busy"], proofs["failed"]),
            ),
            (
                "proof latency p50 / p99 (ms)",
                format!(
                    "{} / {}",
                    number(&proofs["latency_ms"]["p50"]),
                    number(&proofs["latency_ms"]["p99"])
                ),
            ),
        ]
    });
    rows.iter()
        .chain(proof_rows.iter().flatten())
        .map(|(k, v)| format!("{k:<42} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_node(config_path: &Path, maverick: Option<&str>) -> Result<()> {
    use std::io::IsTerminal;
    let maverick = maverick.map(maverick::Mode::parse).transpose()?;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn")),
        )
        .init();
    let config = NodeConfig::read(config_path)?;
    let genesis = Genesis::read(&config.genesis_file)?;
    let key = keyfile::read_key_file(&config.key_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let node = service::start(config, genesis, key, TestOptions { maverick }).await?;
        let stop = node.shutdown_signal();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping on signal");
            let _ = stop.send(true);
        });
        node.wait().await?;
        Ok::<(), anyhow::Error>(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // A closed terminal (SIGHUP) stops like Ctrl-C: cleanly, the links left up.
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hangup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hangup.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn run_testnet(cmd: TestnetCmd, json: bool) -> Result<()> {
    match cmd {
        TestnetCmd::Init {
            dir,
            validators,
            clients,
            api_port,
            p2p_port,
            hosts,
            chain_id,
            data_shards,
            fresh,
            netns: in_namespaces,
        } => {
            let dir = dir.dir;
            // What can be refused is refused before --fresh removes anything.
            testnet::check_validator_count(validators)?;
            let plan = if in_namespaces {
                Some(netns::plan(validators)?)
            } else {
                None
            };
            if fresh && dir.exists() {
                for i in 0..64 {
                    testnet::stop_node(&dir, i, Duration::from_secs(10));
                }
                if let Ok(old) = testnet::read(&dir) {
                    testnet::remove_network(&dir, &old)?;
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
            let file = testnet::init(
                &dir,
                &testnet::InitOptions {
                    validators,
                    clients,
                    api_port,
                    p2p_port,
                    hosts,
                    chain_id,
                    data_shards,
                    netns: plan,
                },
            )?;
            let monitoring = monitoring::write(&dir, &file)?;
            let mut value = serde_json::to_value(&file)?;
            value["monitoring"] = json!(monitoring.display().to_string());
            print(json, &value, || {
                let mut out = format!(
                    "wrote a {}-validator testnet to {} (chain {})\nPrometheus scrape config and Grafana dashboard for it: {}/ (docs/DEPLOY.md, \"Monitoring\")",
                    file.nodes.len(),
                    dir.display(),
                    file.chain_id,
                    monitoring.display()
                );
                if let Some(plan) = &file.netns {
                    out += &format!(
                        "\neach validator in its own namespace on {} (mz{}-n<i>, address {} for validator 0, the host {}); `mosaic testnet up` creates them",
                        plan.cidr(),
                        plan.tag,
                        plan.address(0),
                        plan.host_address()
                    );
                }
                out
            });
        }
        TestnetCmd::Up { dir, detach } => up(&dir.dir, detach, json)?,
        TestnetCmd::Status { dir } => {
            let file = testnet::read(&dir.dir)?;
            let mut rows = Vec::new();
            for node in &file.nodes {
                let running = testnet::running_pid(&dir.dir, node.index);
                let status = Client::new(&node.api).get("/v1/status").ok();
                rows.push(json!({
                    "index": node.index,
                    "api": node.api,
                    "pid": running,
                    "height": status.as_ref().map(|s| s["height"].clone()),
                    "view": status.as_ref().map(|s| s["view"].clone()),
                    "peers": status.as_ref().map(|s| s["connected_peers"].clone()),
                }));
            }
            let network = network_json(&dir.dir, &file)?;
            let value = json!({ "nodes": rows, "network": network });
            print(json, &value, || {
                let mut out = network_text(&network);
                out += &format!(
                    "{:<5} {:<24} {:<8} {:<8} {:<6} {}",
                    "node", "api", "pid", "height", "view", "peers"
                );
                for r in &rows {
                    let show = |v: &Value| {
                        if v.is_null() {
                            "-".to_string()
                        } else {
                            v.to_string()
                        }
                    };
                    out += &format!(
                        "\n{:<5} {:<24} {:<8} {:<8} {:<6} {}",
                        r["index"].to_string(),
                        r["api"].as_str().unwrap_or_default(),
                        show(&r["pid"]),
                        show(&r["height"]),
                        show(&r["view"]),
                        show(&r["peers"])
                    );
                }
                out
            });
        }
        TestnetCmd::Stop { dir, node } => {
            let file = testnet::read(&dir.dir)?;
            let targets: Vec<usize> = match node {
                Some(i) => vec![check_index(&file, i)?],
                None => (0..file.nodes.len()).collect(),
            };
            let stopped: Vec<usize> = targets
                .into_iter()
                .filter(|i| testnet::stop_node(&dir.dir, *i, Duration::from_secs(15)))
                .collect();
            let removed = node.is_none() && file.netns.is_some();
            if node.is_none() {
                testnet::remove_network(&dir.dir, &file)?;
            }
            print(
                json,
                &json!({ "stopped": stopped, "namespaces_removed": removed }),
                || {
                    let mut out = format!("stopped {stopped:?}");
                    if removed {
                        out += "; removed the namespaces, veth pairs and bridge";
                    }
                    out
                },
            );
        }
        TestnetCmd::Kill { dir, node } => {
            let file = testnet::read(&dir.dir)?;
            let i = check_index(&file, node)?;
            if !testnet::kill_node(&dir.dir, i) {
                bail!("node {i} is not running");
            }
            print(json, &json!({ "killed": i }), || format!("killed node {i}"));
        }
        TestnetCmd::Start {
            dir,
            node,
            maverick: mode,
        } => {
            let file = testnet::read(&dir.dir)?;
            let i = check_index(&file, node)?;
            let extra = match mode {
                Some(mode) => {
                    // Refused here, before the node starts, in a build without modes.
                    maverick::Mode::parse(&mode)?;
                    vec!["--maverick".to_string(), mode]
                }
                None => Vec::new(),
            };
            testnet::ensure_network(&dir.dir, &file)?;
            testnet::start_node(&dir.dir, i, &extra)?;
            testnet::wait_ready(&dir.dir, &file.nodes[i], Duration::from_secs(60))?;
            print(json, &json!({ "started": i }), || {
                format!("started node {i}")
            });
        }
        TestnetCmd::Restart { dir, node } => {
            let file = testnet::read(&dir.dir)?;
            let i = check_index(&file, node)?;
            testnet::stop_node(&dir.dir, i, Duration::from_secs(15));
            testnet::ensure_network(&dir.dir, &file)?;
            testnet::start_node(&dir.dir, i, &[])?;
            testnet::wait_ready(&dir.dir, &file.nodes[i], Duration::from_secs(60))?;
            print(json, &json!({ "restarted": i }), || {
                format!("restarted node {i}")
            });
        }
        TestnetCmd::Partition {
            dir,
            groups,
            isolate,
        } => {
            let file = testnet::read(&dir.dir)?;
            let plan = netns_plan(&dir.dir, &file)?;
            let groups = match (groups, isolate) {
                (_, Some(i)) => netns::isolate(i, plan.validators)?,
                (Some(text), None) => netns::parse_groups(&text, plan.validators)?,
                (None, None) => bail!("give --groups 0,1/2,3 or --isolate I"),
            };
            let state = netns::partition(&dir.dir, plan, &groups)?;
            print(json, &json!({ "partition": state }), || {
                format!(
                    "partitioned: {} (the host still reaches every API; `mosaic testnet heal` ends it)",
                    netns::groups_text(&state.groups)
                )
            });
        }
        TestnetCmd::Heal { dir } => {
            let file = testnet::read(&dir.dir)?;
            let plan = netns_plan(&dir.dir, &file)?;
            let before = netns::partition_state(&dir.dir)?;
            netns::heal(&dir.dir, plan)?;
            print(json, &json!({ "healed": before }), || match &before {
                Some(state) => format!(
                    "healed the partition {}: every validator reaches every other",
                    netns::groups_text(&state.groups)
                ),
                None => "no partition; every link is up".to_string(),
            });
        }
        TestnetCmd::Flap {
            dir,
            node,
            period,
            duration,
        } => {
            let file = testnet::read(&dir.dir)?;
            let plan = netns_plan(&dir.dir, &file)?;
            file.node(node)?;
            if !json {
                eprintln!(
                    "validator {node}'s link goes down and up every {period:?}{}; Ctrl-C or `mosaic testnet heal` stops it",
                    duration.map_or(String::new(), |d| format!(" for {d:?}"))
                );
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut wait = |pause: Duration| {
                runtime.block_on(async {
                    tokio::select! {
                        _ = wait_for_signal() => false,
                        _ = tokio::time::sleep(pause) => true,
                    }
                })
            };
            let downs = netns::flap(&dir.dir, plan, node, period, duration, &mut wait)?;
            print(json, &json!({ "node": node, "downs": downs }), || {
                format!("validator {node}'s link went down {downs} times; it is up")
            });
        }
    }
    Ok(())
}

/// The namespace plan of a --netns testnet, or an error saying how to get one.
fn netns_plan<'a>(dir: &Path, file: &'a testnet::TestnetFile) -> Result<&'a netns::NetnsPlan> {
    file.netns.as_ref().with_context(|| {
        format!(
            "the testnet in {} runs on 127.0.0.1, where a partition cannot be made: make one with `mosaic testnet init --netns` (Linux, root)",
            dir.display()
        )
    })
}

/// How a testnet's validators are connected, and the partition and flapping link.
fn network_json(dir: &Path, file: &testnet::TestnetFile) -> Result<Value> {
    let Some(plan) = &file.netns else {
        return Ok(json!({ "kind": if file.local { "loopback" } else { "hosts" } }));
    };
    let flap = netns::flap_state(dir)?.map(|state| {
        let alive = netns::flapper_alive(&state);
        json!({ "node": state.node, "period_ms": state.period_ms, "pid": state.pid,
                "since_unix": state.since_unix, "running": alive })
    });
    Ok(json!({
        "kind": "netns",
        "subnet": plan.cidr(),
        "bridge": plan.bridge(),
        "host_address": plan.host_address().to_string(),
        "namespaces": (0..plan.validators).map(|i| plan.namespace(i)).collect::<Vec<_>>(),
        "up": netns::is_up(plan)?,
        "partition": netns::partition_state(dir)?,
        "flap": flap,
    }))
}

fn network_text(network: &Value) -> String {
    if network["kind"] != "netns" {
        return String::new();
    }
    let mut out = format!(
        "network: namespaces {} on {} (bridge {}, host {}){}\n",
        network["namespaces"][0].as_str().unwrap_or_default(),
        network["subnet"].as_str().unwrap_or_default(),
        network["bridge"].as_str().unwrap_or_default(),
        network["host_address"].as_str().unwrap_or_default(),
        if network["up"] == true {
            ""
        } else {
            ", not created (testnet up creates them)"
        }
    );
    let groups: Option<Vec<Vec<usize>>> =
        serde_json::from_value(network["partition"]["groups"].clone()).ok();
    out += &match groups {
        Some(groups) => format!("partition: {}\n", netns::groups_text(&groups)),
        None => "partition: none\n".to_string(),
    };
    if network["flap"].is_object() {
        out += &format!(
            "flapping: validator {}'s link every {} ms{}\n",
            network["flap"]["node"],
            network["flap"]["period_ms"],
            if network["flap"]["running"] == true {
                ""
            } else {
                " (its process is gone: `mosaic testnet heal` brings the link up)"
            }
        );
    }
    out
}

fn check_index(file: &testnet::TestnetFile, i: usize) -> Result<usize> {
    if i >= file.nodes.len() {
        bail!(
            "--node {i}: this testnet has validators 0..{}",
            file.nodes.len().saturating_sub(1)
        );
    }
    Ok(i)
}

fn up(dir: &Path, detach: bool, json: bool) -> Result<()> {
    let file = testnet::read(dir)?;
    if !file.local {
        bail!(
            "this testnet was made for several hosts (--hosts): copy node<i>/ and genesis.json to each host and run `mosaic node run --config node.toml` there (docs/DEPLOY.md)"
        );
    }
    let was_running = file
        .nodes
        .iter()
        .any(|n| testnet::running_pid(dir, n.index).is_some());
    let mut children = Vec::new();
    let started = testnet::ensure_network(dir, &file).and_then(|()| {
        for node in &file.nodes {
            if testnet::running_pid(dir, node.index).is_none() {
                children.push((node.index, testnet::start_node(dir, node.index, &[])?));
            }
        }
        for node in &file.nodes {
            testnet::wait_ready(dir, node, Duration::from_secs(60))?;
        }
        Ok(())
    });
    if let Err(e) = started {
        // Nothing of a failed start is left behind (what ran before stays).
        for (i, child) in children.iter_mut() {
            testnet::stop_node(dir, *i, Duration::from_secs(15));
            let _ = child.wait();
        }
        if !was_running {
            testnet::remove_network(dir, &file)?;
        }
        return Err(e);
    }
    let client = testnet::client_key_path(dir, 0);
    let recipient = keyfile::read_key_file(&testnet::client_key_path(dir, 1))
        .map(|k| k.public().to_string())
        .unwrap_or_else(|_| "<address>".into());
    let rows: Vec<Value> = file
        .nodes
        .iter()
        .map(|n| {
            json!({
                "index": n.index,
                "api": n.api,
                "p2p": n.p2p,
                "peer_id": n.peer_id,
                "log": testnet::log_path(dir, n.index).display().to_string(),
            })
        })
        .collect();
    let example = format!(
        "mosaic tx transfer --key {} --to {recipient} --amount 10 --wait",
        client.display()
    );
    let page = file
        .nodes
        .first()
        .map(|n| format!("{}/", n.api.trim_end_matches('/')))
        .unwrap_or_default();
    let value = json!({ "nodes": rows, "example": example, "page": page });
    print(json, &value, || {
        let mut out = format!(
            "testnet {} is up ({} validators)\n{:<5} {:<24} {:<28} {:<54} {}",
            file.chain_id,
            file.nodes.len(),
            "node",
            "api",
            "p2p",
            "peer id",
            "log"
        );
        for n in &file.nodes {
            out += &format!(
                "\n{:<5} {:<24} {:<28} {:<54} {}",
                n.index,
                n.api,
                n.p2p,
                n.peer_id,
                testnet::log_path(dir, n.index).display()
            );
        }
        out += &format!(
            "\n\nThe testnet at a glance (every validator serves it at its api address): {page}\nSend a transfer:\n  {example}\n"
        );
        if !detach {
            out += "Ctrl-C stops every node.";
        }
        out
    });
    if detach {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reported = std::collections::BTreeSet::new();
    runtime.block_on(async {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = wait_for_signal() => break,
                _ = check.tick() => {
                    // Each exit is told once (try_wait keeps answering it).
                    for (i, child) in children.iter_mut() {
                        if reported.contains(i) {
                            continue;
                        }
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("node {i} exited ({status}); see {}", testnet::log_path(dir, *i).display());
                            reported.insert(*i);
                        }
                    }
                }
            }
        }
    });
    eprintln!("stopping every node...");
    for node in &file.nodes {
        testnet::stop_node(dir, node.index, Duration::from_secs(15));
    }
    for (_, child) in children.iter_mut() {
        let _ = child.wait();
    }
    testnet::remove_network(dir, &file)?;
    eprintln!("stopped");
    Ok(())
}
