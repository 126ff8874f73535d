//! `mosaic bench`: the end-to-end load benchmark. Starts a fresh local testnet,
//! pre-signs transfers from many funded accounts (signing is not server work),
//! submits them in batches to every node at a fixed rate (or as fast as accepted),
//! follows the chain on one node, and reports committed transactions per second,
//! submit-to-commit latency, block rate and size, view changes, CPU per transaction,
//! peak memory and stored bytes per node.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mosaic_crypto::{ChainId, Keypair, PublicKey, keyfile};
use mosaic_node::config::NodeConfig;
use mosaic_node::ledger::{SignedTransfer, Transfer};
use serde_json::{Value, json};

use crate::client::{Client, Patience};
use crate::testnet;

/// Options of one run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Validators (4, 7, 10).
    #[arg(short = 'n', long, default_value_t = 4)]
    pub validators: usize,
    /// Funded sender accounts.
    #[arg(long, default_value_t = 2000)]
    pub accounts: usize,
    /// Offered transactions per second (default: as fast as the nodes accept).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Warm-up seconds (excluded from the figures).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Transactions per HTTP batch at most (at a fixed rate, smaller batches keep
    /// ~20 per second per node).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent HTTP connections submitting to each node (each waits for its
    /// answer before the next batch, so one connection per node cannot offer more
    /// than batches/s x its round trip allows).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// First port (API ports from here, then p2p ports).
    #[arg(long, default_value_t = 28000)]
    pub port: u16,
    /// Folder for the benchmark's testnet (replaced on each run).
    #[arg(long, default_value = "testnet/bench")]
    pub dir: PathBuf,
    /// Sweep: one fresh run per offered rate (comma-separated), reported together.
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    pub sweep: Vec<u64>,
    /// With --sweep: draw latency against committed throughput into this SVG file.
    #[arg(long, requires = "sweep")]
    pub plot: Option<PathBuf>,
    /// The validators' scrub read rate in bytes per second, with no rest between
    /// passes, so the scrub reads at that rate all along (0: scrub off; default:
    /// the node's own settings). Measures what the scrub costs under load.
    #[arg(long)]
    pub scrub_bytes_per_second: Option<u64>,
    /// Each validator in its own network namespace, on its own address (Linux,
    /// root; see `mosaic testnet init --netns`): the load crosses veth pairs and a
    /// bridge instead of loopback.
    #[arg(long)]
    pub netns: bool,
    /// Test builds only: run validator I as a Byzantine one in MODE (repeat); the
    /// load goes to the other validators only.
    #[arg(long, hide = true, value_name = "I=MODE", value_parser = parse_maverick)]
    pub maverick: Vec<(usize, String)>,
    /// The validators' `mempool.backlog_ms_max`: queued work past which they shed
    /// submissions (0: never shed; default: the node's own setting).
    #[arg(long)]
    pub backlog_ms: Option<u64>,
    /// The validators' `batching.delay_ms`: how long a primary waits for more
    /// transfers before it proposes a block that is not full (default: the node's
    /// own setting).
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// How batches are sent: `binary` (the canonical encoding, as
    /// `application/octet-stream`) or `json`.
    #[arg(long, value_enum, default_value_t = Encoding::Binary)]
    pub encoding: Encoding,
    /// Proof requests per second besides the load (0: none): account proofs of
    /// the senders and transfer proofs of transfers already seen committed, in
    /// turn, spread over the nodes that take the load. Measures what serving
    /// proofs takes from commit throughput.
    #[arg(long, default_value_t = 0)]
    pub proof_rate: u64,
}

/// The submission encoding of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// The canonical binary encoding.
    Binary,
    /// JSON.
    Json,
}

fn parse_maverick(text: &str) -> Result<(usize, String), String> {
    let (index, mode) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected I=MODE, e.g. 3=silent"))?;
    let index = index
        .parse()
        .map_err(|_| format!("{index:?} is not a validator index"))?;
    mosaic_node::maverick::Mode::parse(mode).map_err(|e| e.to_string())?;
    Ok((index, mode.to_string()))
}

/// Runs one fresh benchmark per rate of `options.sweep` and returns
/// `{"sweep": [report, ...]}`; draws the plot if `options.plot` is set.
pub fn sweep(options: &BenchOptions, quiet: bool) -> Result<Value> {
    let mut reports = Vec::new();
    for &rate in &options.sweep {
        if !quiet {
            eprintln!("sweep: offered {rate} transfers/s");
        }
        let one = BenchOptions {
            rate: Some(rate),
            ..options.clone()
        };
        reports.push(run(&one, quiet).with_context(|| format!("sweep run at {rate}/s"))?);
    }
    let value = json!({ "sweep": reports });
    if let Some(path) = &options.plot {
        let title = format!(
            "mosaic bench: {} validators, {} cores, {} s per rate",
            options.validators,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            options.duration
        );
        crate::plot::latency_throughput_svg(&crate::plot::points(&value), &title, path)?;
        if !quiet {
            eprintln!("plot written to {}", path.display());
        }
    }
    Ok(value)
}

struct Submitted<'a> {
    /// When the batch was first offered.
    offered: Instant,
    /// Per transfer (aligned with `hashes`), when the attempt that admitted it was
    /// sent; `None` if no attempt before the end did.
    admitted: Vec<Option<Instant>>,
    /// Transfer refusals over all attempts (shed, full, busy).
    refused: usize,
    hashes: &'a [String],
}

/// Pause before a refused batch is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One request of the load: its body (JSON or binary) and its transfers' ids.
struct Batch {
    body: Vec<u8>,
    hashes: Vec<String>,
    /// The transfers, to send again those a node refused.
    txs: Vec<SignedTransfer>,
}

/// The request body for `txs` in `encoding`.
fn batch_body(txs: &[SignedTransfer], encoding: Encoding) -> Result<Vec<u8>> {
    Ok(match encoding {
        Encoding::Json => serde_json::to_vec(txs)?,
        Encoding::Binary => mosaic_crypto::codec::encode(txs)?,
    })
}

fn read_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn peak_memory_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Pre-signs `per_account` transfers from each account, interleaved across accounts.
fn presign(keys: &[Keypair], chain: &ChainId, per_account: u64) -> Vec<SignedTransfer> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = keys.len().div_ceil(threads).max(1);
    let mut per_key: Vec<Vec<SignedTransfer>> = std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|group| {
                scope.spawn(move || {
                    group
                        .iter()
                        .enumerate()
                        .map(|(i, key)| {
                            let to = keys[(i + 1) % keys.len()].public();
                            (0..per_account)
                                .map(|nonce| {
                                    Transfer {
                                        chain: chain.clone(),
                                        from: key.public(),
                                        to,
                                        amount: 1,
                                        nonce,
                                        // A fresh testnet starts at height 0: as
                                        // long as its validators accept.
                                        valid_until: mosaic_node::mempool::VALID_FOR_MAX,
                                    }
                                    .sign(key)
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = Vec::with_capacity(per_key.iter().map(Vec::len).sum());
    for nonce in 0..per_account as usize {
        for txs in per_key.iter_mut() {
            if let Some(tx) = txs.get(nonce) {
                out.push(tx.clone());
            }
        }
    }
    out
}

/// The window of full bodies each benchmark node keeps, in blocks.
const BENCH_BODY_WINDOW_BLOCKS: u64 = 64;
/// ... and in MiB.
const BENCH_BODY_WINDOW_MIB: u64 = 2;

/// One benchmark run; returns the report as JSON.
pub fn run(options: &BenchOptions, quiet: bool) -> Result<Value> {
    let n = options.validators;
    let dir = &options.dir;
    if let Some((i, _)) = options.maverick.iter().find(|(i, _)| *i >= n) {
        bail!("--maverick {i}=...: there are validators 0..{n} only");
    }
    let mut indices: Vec<usize> = options.maverick.iter().map(|(i, _)| *i).collect();
    indices.sort_unstable();
    if indices.windows(2).any(|w| w[0] == w[1]) {
        bail!(
            "--maverick names validator {} twice: one mode each",
            indices[0]
        );
    }
    if options.maverick.len() * 3 >= n {
        bail!("{n} validators tolerate at most {} mavericks", (n - 1) / 3);
    }
    if dir.exists() {
        for i in 0..n {
            testnet::stop_node(dir, i, Duration::from_secs(10));
        }
        if let Ok(old) = testnet::read(dir) {
            testnet::remove_network(dir, &old)?;
        }
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let plan = if options.netns {
        Some(crate::netns::plan(n)?)
    } else {
        None
    };
    let file = testnet::init(
        dir,
        &testnet::InitOptions {
            validators: n,
            clients: options.accounts,
            api_port: options.port,
            p2p_port: options.port + n as u16,
            hosts: Vec::new(),
            chain_id: "mosaic-bench".into(),
            data_shards: None,
            netns: plan,
        },
    )?;
    // Bodies are pruned after 64 blocks or 2 MiB so stored bytes show the erasure
    // coding rather than the window of full bodies (the defaults keep up to 256 MiB).
    for i in 0..n {
        let path = dir.join(format!("node{i}/node.toml"));
        let mut config: NodeConfig = toml::from_str(&fs::read_to_string(&path)?)?;
        config.storage.body_window_blocks = BENCH_BODY_WINDOW_BLOCKS;
        config.storage.body_window_mib = BENCH_BODY_WINDOW_MIB;
        match options.scrub_bytes_per_second {
            Some(0) => config.scrub.enabled = false,
            Some(rate) => {
                config.scrub.bytes_per_second = rate;
                config.scrub.pass_pause_secs = 0;
            }
            None => {}
        }
        if let Some(ms) = options.backlog_ms {
            config.mempool.backlog_ms_max = ms;
        }
        if let Some(ms) = options.delay_ms {
            config.batching.delay_ms = ms;
        }
        fs::write(&path, config.to_toml()?)?;
    }
    let mut children = Vec::new();
    let started = testnet::ensure_network(dir, &file).and_then(|()| {
        for i in 0..n {
            let extra: Vec<String> = options
                .maverick
                .iter()
                .filter(|(m, _)| *m == i)
                .flat_map(|(_, mode)| ["--maverick".to_string(), mode.clone()])
                .collect();
            children.push(testnet::start_node(dir, i, &extra)?);
        }
        Ok(())
    });
    let result = started.and_then(|()| measure(options, &file, quiet));
    for i in 0..n {
        testnet::stop_node(dir, i, Duration::from_secs(15));
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
    testnet::remove_network(dir, &file)?;
    // redb keeps slack at the end of its file while open and trims it on a clean
    // close: stored bytes are reported both ways.
    let mut report = result?;
    let stored: Vec<u64> = (0..n)
        .map(|i| dir_bytes(&dir.join(format!("node{i}/data"))))
        .collect();
    let body = report["committed_body_bytes"]
        .as_f64()
        .unwrap_or(0.0)
        .max(1.0);
    report["stored_per_committed_byte_after_stop"] =
        json!(stored.iter().map(|b| *b as f64 / body).collect::<Vec<_>>());
    report["stored_bytes_per_node_after_stop"] = json!(stored);
    // Where node 0's bytes are, by table (the store is closed now, so it can be opened).
    let store = mosaic_node::schema::NodeStore::open(
        &dir.join("node0/data/store.redb"),
        mosaic_storage::StoreConfig::default(),
    )
    .and_then(|store| store.table_bytes());
    match store {
        Ok(tables) => {
            report["stored_bytes_by_table_node0"] = tables
                .into_iter()
                .map(|(name, bytes)| (name.to_string(), json!(bytes)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        Err(e) => eprintln!("cannot read node 0's table sizes: {e}"),
    }
    Ok(report)
}

fn measure(options: &BenchOptions, file: &testnet::TestnetFile, quiet: bool) -> Result<Value> {
    let dir = &options.dir;
    let n = options.validators;
    for node in &file.nodes {
        testnet::wait_ready(dir, node, Duration::from_secs(60))?;
    }
    let chain = ChainId::new(file.chain_id.clone())?;
    let keys: Vec<Keypair> = (0..options.accounts)
        .map(|j| keyfile::read_key_file(&testnet::client_key_path(dir, j)))
        .collect::<Result<_, _>>()?;
    let total_seconds = options.warmup + options.duration;
    let wanted = options.rate.unwrap_or(20_000) * total_seconds;
    let per_account = wanted.div_ceil(options.accounts as u64).max(1);
    if per_account > 1_000 {
        bail!(
            "{per_account} transfers per account exceed the mempool's nonce window (1000): use more --accounts"
        );
    }
    if !quiet {
        eprintln!(
            "pre-signing {} transfers from {} accounts...",
            per_account * options.accounts as u64,
            options.accounts
        );
    }
    let txs = presign(&keys, &chain, per_account);
    // At a fixed rate, each submitter sends ~20 batches a second so the load is smooth.
    let batch_size = match options.rate {
        Some(rate) => ((rate / n as u64 / 20) as usize).clamp(1, options.batch),
        None => options.batch,
    };
    // Submitters: `connections` threads per node, each paced at its share.
    let honest: Vec<&testnet::NodeEntry> = file
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !options.maverick.iter().any(|(m, _)| m == i))
        .map(|(_, node)| node)
        .collect();
    let submitters = honest.len() * usize::from(options.connections);
    // Each submitter owns the accounts j with j mod submitters = its number: one
    // account's transfers go out in nonce order through one connection, and a
    // refused batch holds back only its own accounts' later nonces, as a wallet
    // waits for its transfer to be taken before it sends the next one. (Dealt
    // across submitters, a refused nonce would be overtaken by the next ones, which
    // then wait behind the gap in the pool.)
    let owner: HashMap<PublicKey, usize> = keys
        .iter()
        .enumerate()
        .map(|(j, key)| (key.public(), j % submitters.max(1)))
        .collect();
    let mut owned: Vec<Vec<SignedTransfer>> = vec![Vec::new(); submitters.max(1)];
    for tx in txs {
        let t = owner.get(&tx.transfer.from).copied().unwrap_or(0);
        owned[t].push(tx);
    }
    // Request bodies and ids are made before the clock starts, like the signatures:
    // the client's JSON encoding would otherwise take CPU from the nodes it measures.
    let per_submitter: Vec<Vec<Batch>> = owned
        .iter()
        .map(|txs| {
            txs.chunks(batch_size)
                .map(|chunk| -> Result<Batch> {
                    Ok(Batch {
                        body: batch_body(chunk, options.encoding)?,
                        hashes: chunk.iter().map(|t| t.hash().to_string()).collect(),
                        txs: chunk.to_vec(),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    drop(owned);

    let pids: Vec<u32> = (0..n)
        .filter_map(|i| testnet::running_pid(dir, i))
        .collect();
    let cpu_before: f64 = pids.iter().filter_map(|p| read_cpu_seconds(*p)).sum();
    let view_changes_before: f64 = file
        .nodes
        .iter()
        .filter_map(|node| Client::new(&node.api).get_text("/metrics").ok())
        .map(|t| metric(&t, "mosaic_view_changes_total"))
        .sum();

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + Duration::from_secs(total_seconds);
    let interval = options
        .rate
        .map(|r| Duration::from_secs_f64(batch_size as f64 * submitters as f64 / r as f64));
    let recent = Mutex::new(VecDeque::new());
    let senders: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
    let warm = start + Duration::from_secs(options.warmup);
    let readers = if options.proof_rate > 0 {
        honest.len() * PROOF_READERS_PER_NODE
    } else {
        0
    };
    let reader_interval =
        Duration::from_secs_f64(readers as f64 / options.proof_rate.max(1) as f64);
    let (submitted, observed, proof_reads): (Vec<Submitted>, Vec<SeenBlock>, Vec<ProofReads>) =
        std::thread::scope(|scope| {
            let reader_handles: Vec<_> = (0..readers)
                .map(|r| {
                    let api = &honest[r % honest.len()].api;
                    let (senders, recent) = (&senders, &recent);
                    scope.spawn(move || {
                        read_proofs(
                            api,
                            reader_interval,
                            senders,
                            recent,
                            (warm, end),
                            r * 7_919,
                        )
                    })
                })
                .collect();
            let handles: Vec<_> = per_submitter
                .iter()
                .zip(honest.iter().cycle())
                .map(|(batches, node)| {
                    let stop = stop.clone();
                    scope.spawn(move || {
                        let client = Client::new(&node.api);
                        let mut out = Vec::new();
                        let mut next = Instant::now();
                        for batch in batches {
                            if stop.load(Ordering::Relaxed) || Instant::now() >= end {
                                break;
                            }
                            if let Some(interval) = interval {
                                let now = Instant::now();
                                if next > now {
                                    std::thread::sleep(next - now);
                                }
                                next += interval;
                            }
                            let offered = Instant::now();
                            let mut admitted: Vec<Option<Instant>> = vec![None; batch.hashes.len()];
                            let mut refused = 0;
                            // What a node refused (shed, full, busy) is sent again after a
                            // pause, and only that: a transfer already admitted may commit
                            // meanwhile, and sending it again would be refused for good.
                            // Its senders' later nonces would wait behind it otherwise.
                            let mut waiting: Vec<usize> = (0..batch.hashes.len()).collect();
                            let mut resend: Option<Vec<u8>> = None;
                            loop {
                                let body = resend.as_deref().unwrap_or(&batch.body);
                                let sent = Instant::now();
                                let answer = match options.encoding {
                                    Encoding::Json => {
                                        client.post_json_bytes("/v1/transactions/batch", body)
                                    }
                                    Encoding::Binary => {
                                        client.post_binary("/v1/transactions/batch", body)
                                    }
                                };
                                let results = match &answer {
                                    Ok((200, answer)) => answer["results"].as_array(),
                                    _ => None,
                                };
                                let still: Vec<usize> = match results {
                                    Some(results) if results.len() == waiting.len() => waiting
                                        .iter()
                                        .zip(results)
                                        .filter_map(|(&i, result)| {
                                            if result["status"] == "pending" {
                                                admitted[i] = Some(sent);
                                                None
                                            } else {
                                                Some(i)
                                            }
                                        })
                                        .collect(),
                                    _ => waiting.clone(),
                                };
                                refused += still.len();
                                waiting = still;
                                if waiting.is_empty() || Instant::now() >= end {
                                    break;
                                }
                                std::thread::sleep(RETRY_PAUSE);
                                let again: Vec<SignedTransfer> =
                                    waiting.iter().map(|&i| batch.txs[i].clone()).collect();
                                match batch_body(&again, options.encoding) {
                                    Ok(body) => resend = Some(body),
                                    Err(_) => break,
                                }
                            }
                            out.push(Submitted {
                                offered,
                                admitted,
                                refused,
                                hashes: &batch.hashes,
                            });
                        }
                        out
                    })
                })
                .collect();
            // Follow the chain on node 0 meanwhile.
            let observed = follow(&honest[0].api, end + Duration::from_secs(5), &recent);
            stop.store(true, Ordering::Relaxed);
            let all: Vec<Submitted> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            let reads: Vec<ProofReads> = reader_handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .collect();
            (all, observed, reads)
        });

    let cpu_after: f64 = pids.iter().filter_map(|p| read_cpu_seconds(*p)).sum();
    let peak_memory: Vec<u64> = pids.iter().filter_map(|p| peak_memory_bytes(*p)).collect();
    let metrics: Vec<String> = file
        .nodes
        .iter()
        .filter_map(|node| Client::new(&node.api).get_text("/metrics").ok())
        .collect();
    let view_changes: f64 = metrics
        .iter()
        .map(|t| metric(t, "mosaic_view_changes_total"))
        .sum::<f64>()
        - view_changes_before;
    // Over the whole run, warm-up included: what backups lacked when a compact
    // proposal arrived and fetched from its primary.
    let transfers_fetched: f64 = metrics
        .iter()
        .map(|t| metric(t, "mosaic_proposal_transfers_fetched_total"))
        .sum();
    let stored: Vec<u64> = (0..n)
        .map(|i| dir_bytes(&dir.join(format!("node{i}/data"))))
        .collect();

    // Latency: admission (and first offer) of each transaction to the time its
    // block was seen.
    let mut submit_time: HashMap<&str, (Instant, Instant)> = HashMap::new();
    for s in &submitted {
        for (h, admitted) in s.hashes.iter().zip(&s.admitted) {
            if let Some(admitted) = admitted {
                submit_time.insert(h.as_str(), (s.offered, *admitted));
            }
        }
    }
    let mut per_second = vec![0u64; options.duration as usize];
    let mut latencies = Vec::new();
    let mut from_offer = Vec::new();
    let mut committed_in_window = 0u64;
    let mut blocks_in_window = 0u64;
    let mut committed_body_bytes = 0u64;
    let mut committed_total = 0u64;
    for block in &observed {
        committed_total += block.hashes.len() as u64;
        committed_body_bytes += block.body_bytes;
        if block.seen >= warm && block.seen <= end {
            blocks_in_window += 1;
            committed_in_window += block.hashes.len() as u64;
            let second = block.seen.duration_since(warm).as_secs() as usize;
            if let Some(bucket) = per_second.get_mut(second) {
                *bucket += block.hashes.len() as u64;
            }
            for h in &block.hashes {
                if let Some((offered, admitted)) = submit_time.get(h.as_str()) {
                    let ms = |at: &Instant| block.seen.duration_since(*at).as_secs_f64() * 1000.0;
                    latencies.push(ms(admitted));
                    from_offer.push(ms(offered));
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    from_offer.sort_by(f64::total_cmp);
    let mut rates = per_second.clone();
    rates.sort_unstable();
    let window = options.duration as f64;
    let tps = committed_in_window as f64 / window;
    let offered: usize = submitted.iter().map(|s| s.hashes.len()).sum();
    let admitted: usize = submitted
        .iter()
        .map(|s| s.admitted.iter().flatten().count())
        .sum();
    let refused: usize = submitted.iter().map(|s| s.refused).sum();
    let full_replication = committed_body_bytes.max(1) as f64;
    let proofs = (options.proof_rate > 0).then(|| {
        let mut latencies: Vec<f64> = proof_reads
            .iter()
            .flat_map(|r| r.latencies_ms.iter().copied())
            .collect();
        latencies.sort_by(f64::total_cmp);
        let ok: u64 = proof_reads.iter().map(|r| r.ok).sum();
        json!({
            "offered_per_second": options.proof_rate,
            "readers": readers,
            "served_per_second": ok as f64 / window,
            "served": ok,
            "busy": proof_reads.iter().map(|r| r.busy).sum::<u64>(),
            "failed": proof_reads.iter().map(|r| r.failed).sum::<u64>(),
            "latency_ms": {
                "p50": percentile(&latencies, 50.0),
                "p99": percentile(&latencies, 99.0),
            },
        })
    });
    Ok(json!({
        "validators": n,
        "network": if file.netns.is_some() { "netns" } else { "loopback" },
        "mavericks": options.maverick.iter().map(|(i, mode)| json!({"validator": i, "mode": mode})).collect::<Vec<_>>(),
        "accounts": options.accounts,
        "offered_rate": options.rate,
        "connections_per_node": options.connections,
        "backlog_ms_max": options.backlog_ms,
        "delay_ms": options.delay_ms,
        "encoding": match options.encoding { Encoding::Binary => "binary", Encoding::Json => "json" },
        "submitted": offered,
        "admitted": admitted,
        "refusals": refused,
        "refused_share": if admitted + refused > 0 { refused as f64 / (admitted + refused) as f64 } else { 0.0 },
        "committed_total": committed_total,
        "committed_per_second": tps,
        "committed_each_second": {
            "min": rates.first().copied().unwrap_or(0),
            "median": rates.get(rates.len() / 2).copied().unwrap_or(0),
            "max": rates.last().copied().unwrap_or(0),
            "series": per_second,
        },
        "latency_ms": {
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
        },
        "latency_from_first_offer_ms": {
            "p50": percentile(&from_offer, 50.0),
            "p99": percentile(&from_offer, 99.0),
        },
        "blocks_per_second": blocks_in_window as f64 / window,
        "average_block_transactions": if blocks_in_window > 0 { committed_in_window as f64 / blocks_in_window as f64 } else { 0.0 },
        "view_changes": view_changes,
        "proposal_transfers_fetched": transfers_fetched,
        "cpu_seconds_per_transaction": if committed_total > 0 { (cpu_after - cpu_before) / committed_total as f64 } else { f64::NAN },
        "peak_memory_bytes_per_node": peak_memory,
        "stored_bytes_per_node": stored,
        "body_window": { "blocks": BENCH_BODY_WINDOW_BLOCKS, "mib": BENCH_BODY_WINDOW_MIB },
        "committed_body_bytes": committed_body_bytes,
        "stored_per_committed_byte": stored.iter().map(|b| *b as f64 / full_replication).collect::<Vec<_>>(),
        "proofs": proofs,
    }))
}

/// Committed transfer ids kept for the proof readers to ask about.
const RECENT_MAX: usize = 20_000;
/// Proof-reading threads per node (each paced at its share of `--proof-rate`).
const PROOF_READERS_PER_NODE: usize = 2;

/// What the proof readers saw inside the measured window.
#[derive(Debug, Default)]
struct ProofReads {
    ok: u64,
    busy: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
}

/// One proof reader: from `start` to `end`, every `interval`, asks `api` for an
/// account proof of one of `senders` or a transfer proof of one of `recent`, in
/// turn; counts what it gets from `warm` on. A 503 is counted as busy, not
/// waited out: the reader keeps its pace as a crowd of clients would.
fn read_proofs(
    api: &str,
    interval: Duration,
    senders: &[PublicKey],
    recent: &Mutex<VecDeque<String>>,
    (warm, end): (Instant, Instant),
    seed: usize,
) -> ProofReads {
    let client = Client::new(api).with_patience(Patience::Poll);
    let mut reads = ProofReads::default();
    let mut next = Instant::now();
    let mut i = seed;
    while Instant::now() < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += interval;
        i = i.wrapping_add(1);
        let pick = i.wrapping_mul(2_654_435_761);
        let hash = (i % 2 == 1)
            .then(|| {
                let recent = recent.lock().ok()?;
                recent.get(pick % recent.len().max(1)).cloned()
            })
            .flatten();
        let path = match (hash, senders.get(pick % senders.len().max(1))) {
            (Some(hash), _) => format!("/v1/transactions/{hash}/proof"),
            (None, Some(sender)) => format!("/v1/accounts/{sender}/proof"),
            (None, None) => break,
        };
        let asked = Instant::now();
        let answer = client.get_raw(&path);
        if asked < warm {
            continue;
        }
        match answer {
            Ok((200, _)) => {
                reads.ok += 1;
                reads
                    .latencies_ms
                    .push(asked.elapsed().as_secs_f64() * 1000.0);
            }
            Ok((503, _)) => reads.busy += 1,
            _ => reads.failed += 1,
        }
    }
    reads
}

struct SeenBlock {
    seen: Instant,
    hashes: Vec<String>,
    body_bytes: u64,
}

/// Polls `api` for new blocks until `until`, noting when each was first seen;
/// the ids of the latest committed transfers go to `recent` (for proof readers).
fn follow(api: &str, until: Instant, recent: &Mutex<VecDeque<String>>) -> Vec<SeenBlock> {
    let client = Client::new(api);
    let mut next = 1u64;
    let mut out = Vec::new();
    while Instant::now() < until {
        let height = client
            .get("/v1/status")
            .ok()
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0);
        while next <= height {
            let seen = Instant::now();
            // Only the ids: full transactions as JSON cost node 0 (and this
            // process) CPU that the measurement would count against the nodes.
            let Ok(block) = client.get(&format!("/v1/blocks/{next}?view=hashes")) else {
                break;
            };
            let body_bytes = block["header"]["fragments"]["params"]["body_len"]
                .as_u64()
                .unwrap_or(0);
            let hashes: Vec<String> = block["transaction_hashes"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Ok(mut recent) = recent.lock() {
                recent.extend(hashes.iter().cloned());
                let over = recent.len().saturating_sub(RECENT_MAX);
                recent.drain(..over);
            }
            out.push(SeenBlock {
                seen,
                hashes,
                body_bytes,
            });
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}
