//! `mosaic audit`: verify a chain from genesis, export it, rebuild blocks from
//! fragments. Works against nodes (HTTP) or an exported folder:
//! ```text
//! genesis.json
//! blocks/<height>.json          {"height", "header", "certificate"}
//! fragments/<height>/<index>.frag   one fragment (canonical bytes, with its proof)
//! ```
//!
//! The auditor brings its own trust root ([`Trust`]): a genesis file or its hash.
//! Every report names the genesis and the validator set it trusted; without a
//! trust root it trusts the source's genesis and says so on stderr. Every fragment
//! is checked against its certified header's fragment root before it is used or
//! written, and every node given is tried until one serves a fragment that checks.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mosaic_consensus::{CommitCertificate, ValidatorSet};
use mosaic_crypto::{Hash, codec};
use mosaic_node::block::{BODY_BYTES_MAX, BlockHeader, body_bytes, outcome_root, tx_root};
use mosaic_node::genesis::Genesis;
use mosaic_node::ledger::{self, Ledger, SignedTransfer};
use mosaic_storage::{Fragment, FragmentCommitment, coding, placement};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::Client;

/// Largest fragment file read.
const FRAGMENT_FILE_MAX: usize = BODY_BYTES_MAX + 1024 * 1024;
/// Largest answer to a fragment request (hex doubles the bytes).
const FRAGMENT_ANSWER_MAX: u64 = 2 * FRAGMENT_FILE_MAX as u64 + 64 * 1024;
/// Largest answer to `/v1/own-fragments` (the node stops near 4 MiB of fragments,
/// after at most one more).
const OWN_FRAGMENTS_ANSWER_MAX: u64 =
    2 * (4 * 1024 * 1024 + FRAGMENT_FILE_MAX as u64) + 1024 * 1024;
/// Largest answer to `/v1/headers` (256 headers with certificates).
const HEADERS_ANSWER_MAX: u64 = 16 * 1024 * 1024;
/// Largest genesis or status answer.
const SMALL_ANSWER_MAX: u64 = 4 * 1024 * 1024;
/// Largest block answer (a full body as JSON).
const BLOCK_ANSWER_MAX: u64 = 8 * BODY_BYTES_MAX as u64;

/// A certified header as exported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertifiedHeader {
    /// Height.
    pub height: u64,
    /// Header.
    pub header: BlockHeader,
    /// Commit certificate.
    pub certificate: CommitCertificate,
}

/// Where audited data comes from.
pub enum Source {
    /// Nodes' HTTP APIs (the first answers header queries).
    Nodes(Vec<Client>),
    /// An exported folder.
    Folder(PathBuf),
}

impl Source {
    /// The first node's answer to `path` that parses, trying each node in turn.
    fn ask_any(&self, path: &str, limit: u64) -> Result<Value> {
        let Source::Nodes(nodes) = self else {
            bail!("not a node source");
        };
        let mut errors = Vec::new();
        for node in nodes {
            match node.get_json_within(path, limit) {
                Ok(value) => return Ok(value),
                Err(e) => errors.push(format!("{}: {e:#}", node.url())),
            }
        }
        if errors.is_empty() {
            bail!("no node given");
        }
        bail!("no node answered {path}: {}", errors.join("; "))
    }

    /// What the source calls its genesis (not yet trusted: see [`trusted`]).
    fn served_genesis(&self) -> Result<Genesis> {
        let genesis: Genesis = match self {
            Source::Nodes(_) => {
                serde_json::from_value(self.ask_any("/v1/genesis", SMALL_ANSWER_MAX)?)
                    .context("the node's genesis does not parse")?
            }
            Source::Folder(dir) => Genesis::read(&dir.join("genesis.json"))?,
        };
        genesis.validate()?;
        Ok(genesis)
    }

    /// Where the source is, for reports.
    fn describe(&self) -> String {
        match self {
            Source::Nodes(nodes) => nodes
                .iter()
                .map(|n| n.url().to_string())
                .collect::<Vec<_>>()
                .join(","),
            Source::Folder(dir) => dir.display().to_string(),
        }
    }

    /// The highest height available (the highest any node reports).
    pub fn tip(&self) -> Result<u64> {
        match self {
            Source::Nodes(nodes) => {
                let mut tip = None;
                let mut errors = Vec::new();
                for node in nodes {
                    match node.get_json_within("/v1/status", SMALL_ANSWER_MAX) {
                        Ok(status) => match status["height"].as_u64() {
                            Some(h) => tip = Some(tip.unwrap_or(0).max(h)),
                            None => errors.push(format!("{}: status has no height", node.url())),
                        },
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                tip.ok_or_else(|| anyhow!("no node answered its status: {}", errors.join("; ")))
            }
            Source::Folder(dir) => {
                let mut tip = 0;
                let entries = fs::read_dir(dir.join("blocks"))
                    .with_context(|| format!("{} has no blocks/ folder", dir.display()))?;
                for entry in entries {
                    let name = entry?.file_name();
                    if let Some(h) = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        tip = tip.max(h);
                    }
                }
                Ok(tip)
            }
        }
    }

    /// Certified headers `from ..` (up to `count`), not yet checked.
    pub fn headers(&self, from: u64, count: u64) -> Result<Vec<CertifiedHeader>> {
        match self {
            Source::Nodes(_) => {
                let answer = self.ask_any(
                    &format!("/v1/headers?from={from}&count={count}"),
                    HEADERS_ANSWER_MAX,
                )?;
                serde_json::from_value(answer["headers"].clone())
                    .context("the node's headers do not parse")
            }
            Source::Folder(dir) => {
                let mut out = Vec::new();
                for height in from..from + count {
                    let path = dir.join(format!("blocks/{height}.json"));
                    if !path.exists() {
                        break;
                    }
                    if fs::metadata(&path)?.len() > SMALL_ANSWER_MAX {
                        bail!("{} is larger than {SMALL_ANSWER_MAX} bytes", path.display());
                    }
                    let text = fs::read_to_string(&path)?;
                    out.push(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{} does not parse", path.display()))?,
                    );
                }
                Ok(out)
            }
        }
    }

    /// Fragment `index` of block `height`: the first copy that passes its proof
    /// against `commitment`, trying every node (or the folder's file), with the
    /// copies refused on the way and why.
    pub fn fragment(
        &self,
        height: u64,
        index: u32,
        commitment: &FragmentCommitment,
    ) -> (Option<Fragment>, Vec<String>) {
        let mut bad = Vec::new();
        let mut check = |from: &str, parsed: Result<Fragment, String>| {
            let checked = parsed.and_then(|f| {
                if f.index != index {
                    return Err(format!("claims index {} at position {index}", f.index));
                }
                f.check(commitment)
                    .map(|c| c.into_fragment())
                    .map_err(|e| e.to_string())
            });
            match checked {
                Ok(f) => Some(f),
                Err(reason) => {
                    bad.push(format!("fragment {index} from {from}: {reason}"));
                    None
                }
            }
        };
        match self {
            Source::Nodes(nodes) => {
                for node in nodes {
                    let path = format!("/v1/blocks/{height}/fragments/{index}");
                    let Ok(value) = node.get_json_within(&path, FRAGMENT_ANSWER_MAX) else {
                        continue;
                    };
                    let parsed = value["fragment"]
                        .as_str()
                        .ok_or_else(|| "answer has no fragment".to_string())
                        .and_then(decode_hex_fragment);
                    if let Some(good) = check(node.url(), parsed) {
                        return (Some(good), bad);
                    }
                }
                (None, bad)
            }
            Source::Folder(dir) => {
                let path = dir.join(format!("fragments/{height}/{index}.frag"));
                let parsed = match fs::metadata(&path) {
                    Err(_) => return (None, bad),
                    Ok(m) if m.len() > FRAGMENT_FILE_MAX as u64 => Err("file too large".into()),
                    Ok(_) => fs::read(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            codec::decode::<Fragment>(&bytes, FRAGMENT_FILE_MAX)
                                .map_err(|e| e.to_string())
                        }),
                };
                let good = check(&path.display().to_string(), parsed);
                (good, bad)
            }
        }
    }
}

fn decode_hex_fragment(text: &str) -> Result<Fragment, String> {
    if text.len() > 2 * FRAGMENT_FILE_MAX {
        return Err("fragment larger than any block allows".into());
    }
    let bytes = hex::decode(text).map_err(|e| e.to_string())?;
    codec::decode::<Fragment>(&bytes, FRAGMENT_FILE_MAX).map_err(|e| e.to_string())
}

/// The auditor's trust root.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A genesis file the auditor holds.
    File(PathBuf),
    /// The hash of the genesis the auditor expects the source to serve.
    Hash(Hash),
    /// None: the source's genesis is taken as it is (reported loudly).
    Source,
}

/// The genesis an audit trusts, and why.
pub struct Trusted {
    /// The genesis.
    pub genesis: Genesis,
    /// Its validator set.
    pub validators: ValidatorSet,
    /// The report's `trusted_genesis` entry.
    pub report: Value,
}

/// Settles the genesis to trust: the file given, the source's if its hash is the
/// one given, or the source's with a loud warning.
pub fn trusted(source: &Source, trust: &Trust) -> Result<Trusted> {
    let (genesis, from) = match trust {
        Trust::File(path) => {
            let genesis = Genesis::read(path)
                .with_context(|| format!("cannot read the trusted genesis {}", path.display()))?;
            genesis.validate()?;
            if let Ok(served) = source.served_genesis()
                && served.hash() != genesis.hash()
            {
                eprintln!(
                    "warning: {} serves genesis {}, not the trusted {} from {}: its history is checked against the trusted one",
                    source.describe(),
                    served.hash(),
                    genesis.hash(),
                    path.display()
                );
            }
            (genesis, format!("file {}", path.display()))
        }
        Trust::Hash(expected) => {
            let genesis = source.served_genesis()?;
            if genesis.hash() != *expected {
                bail!(
                    "{} serves genesis {}, not the trusted {expected}: this is another chain or a forged genesis",
                    source.describe(),
                    genesis.hash()
                );
            }
            (genesis, "hash given on the command line".to_string())
        }
        Trust::Source => {
            let genesis = source.served_genesis()?;
            eprintln!(
                "WARNING: no --genesis FILE or --genesis-hash HEX given: trusting the genesis that {} serves ({}). A node that lies can serve a genesis of its own keys and certify any history; pass the genesis file you got from the chain's operators.",
                source.describe(),
                genesis.hash()
            );
            (
                genesis,
                format!("UNVERIFIED: served by {}", source.describe()),
            )
        }
    };
    let validators = genesis.validator_set()?;
    let report = json!({
        "hash": genesis.hash().to_string(),
        "from": from,
        "chain_id": genesis.chain_id.to_string(),
        "data_shards": genesis.data_shards,
        "validators": genesis.validators.iter().map(|v| json!({
            "name": v.name,
            "public_key": v.public_key.to_string(),
        })).collect::<Vec<_>>(),
    });
    Ok(Trusted {
        genesis,
        validators,
        report,
    })
}

/// The one-line text form of a report's trust root.
pub fn trust_line(report: &Value) -> String {
    let t = &report["trusted_genesis"];
    let keys: Vec<String> = t["validators"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    let key = v["public_key"].as_str().unwrap_or_default();
                    key.chars().take(12).collect()
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "trusted genesis {} ({}), chain {}, validators [{}]",
        t["hash"].as_str().unwrap_or_default(),
        t["from"].as_str().unwrap_or_default(),
        t["chain_id"].as_str().unwrap_or_default(),
        keys.join(", ")
    )
}

/// What happened to each fragment index in a rebuild.
#[derive(Debug, Default, Serialize)]
pub struct FragmentReport {
    /// Indexes whose proof checked.
    pub good: Vec<u32>,
    /// Bad fragments: where from and why.
    pub bad: Vec<String>,
    /// Indexes nobody had.
    pub missing: Vec<u32>,
}

/// Rebuilds the body of a certified header from any k good fragments.
pub fn rebuild(
    source: &Source,
    certified: &CertifiedHeader,
) -> (Result<Vec<SignedTransfer>>, FragmentReport) {
    let commitment = certified.header.fragments;
    let n = commitment.params.n() as u32;
    let k = commitment.params.k();
    let mut report = FragmentReport::default();
    let mut good: BTreeMap<u32, Fragment> = BTreeMap::new();
    for index in 0..n {
        if good.len() >= k {
            break;
        }
        let (found, bad) = source.fragment(certified.height, index, &commitment);
        report.bad.extend(bad);
        match found {
            Some(f) => {
                report.good.push(index);
                good.insert(index, f);
            }
            None => report.missing.push(index),
        }
    }
    let fragments: Vec<Fragment> = good.into_values().take(k).collect();
    let result = coding::reconstruct(&commitment, fragments)
        .map_err(|e| anyhow!("block {}: {e}", certified.height))
        .and_then(|rebuilt| {
            codec::decode::<Vec<SignedTransfer>>(&rebuilt.body, BODY_BYTES_MAX).map_err(|e| {
                anyhow!(
                    "block {}: rebuilt body does not decode: {e}",
                    certified.height
                )
            })
        });
    (result, report)
}

/// Checks a certified header against the chain so far. `Err` says what is wrong.
fn check_header(
    certified: &CertifiedHeader,
    genesis: &Genesis,
    validators: &ValidatorSet,
    parent: Hash,
    height: u64,
) -> Result<(), String> {
    let header = &certified.header;
    // The certificate first: a history certified by keys outside the trusted set
    // is refused as such, whatever else it claims.
    let certificate = &certified.certificate;
    if certificate.seq.0 != height || certificate.digest.0 != header.hash() {
        return Err(
            "the header's hash is not what its commit certificate signs (header or certificate altered)"
                .into(),
        );
    }
    certificate.verify(validators).map_err(|e| {
        format!("commit certificate does not verify against the trusted validator set: {e}")
    })?;
    if certified.height != height || header.height != height {
        return Err(format!("header says height {}", header.height));
    }
    if header.chain != genesis.chain_id {
        return Err(format!("header is for chain {}", header.chain));
    }
    if header.parent != parent {
        return Err(format!(
            "parent {} is not the previous header's hash {parent}",
            header.parent
        ));
    }
    let params = header.fragments.params;
    if params.k() != genesis.data_shards as usize || params.n() != genesis.validators.len() {
        return Err(format!(
            "fragments k/n {}/{} differ from genesis {}/{}",
            params.k(),
            params.n(),
            genesis.data_shards,
            genesis.validators.len()
        ));
    }
    Ok(())
}

/// Checks a body against its header and replays it: the header must name the
/// state and the outcomes the replay of its parent gave (`outcomes`, which then
/// becomes this block's outcome root). `Err` says what is wrong.
fn check_body(
    header: &BlockHeader,
    txs: Vec<SignedTransfer>,
    (ledger, outcomes): (&mut Ledger, &mut Hash),
    chain: &mosaic_crypto::ChainId,
) -> Result<(), String> {
    if header.tx_count as usize != txs.len() || header.tx_root != tx_root(&txs) {
        return Err("transactions do not match the header's tx_root / tx_count".into());
    }
    coding::check_encoding(&body_bytes(&txs), &header.fragments)
        .map_err(|e| format!("body does not match the header's fragment root: {e}"))?;
    let mut verified = Vec::with_capacity(txs.len());
    for (i, result) in ledger::verify_batch(txs, chain).into_iter().enumerate() {
        let tx = result.map_err(|e| format!("transaction {i}: {e}"))?;
        if tx.transfer().valid_until < header.height {
            return Err(format!(
                "transaction {i} is expired (valid until height {}): validators must refuse a block that includes it",
                tx.transfer().valid_until
            ));
        }
        verified.push(tx);
    }
    let root = ledger.state_root();
    if header.state_root != root {
        return Err(format!(
            "state root {} differs from the replayed state {root}",
            header.state_root
        ));
    }
    if header.outcome_root != *outcomes {
        return Err(format!(
            "outcome root {} differs from the replayed outcomes of block {} ({outcomes})",
            header.outcome_root,
            header.height - 1
        ));
    }
    let execution = ledger.apply(header.height, &verified);
    ledger.record_failures(header.height, &execution.new_failures);
    *outcomes = outcome_root(&execution.outcomes);
    Ok(())
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} blocks ({per_sec}, {eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `audit verify`: Ok(summary) when the whole chain checks, Err naming the first
/// bad height otherwise.
pub fn verify(source: &Source, trust: &Trust, quiet: bool) -> Result<Value> {
    let Trusted {
        genesis,
        validators,
        report: trusted_genesis,
    } = trusted(source, trust)?;
    let mut ledger = genesis.ledger()?;
    let tip = source.tip()?;
    let bar = progress(tip, quiet);
    bar.set_message("verifying");
    let mut parent = genesis.hash();
    let mut outcomes = Hash::ZERO;
    let mut height = 1;
    let mut transactions = 0u64;
    while height <= tip {
        let batch = source.headers(height, 256)?;
        if batch.is_empty() {
            bail!("height {height}: header missing from the source");
        }
        for certified in batch {
            check_header(&certified, &genesis, &validators, parent, height).map_err(|reason| {
                anyhow!(
                    "height {height}: {reason} (trusted genesis {})",
                    genesis.hash()
                )
            })?;
            let txs = match source {
                Source::Nodes(_) => {
                    let block =
                        source.ask_any(&format!("/v1/blocks/{height}"), BLOCK_ANSWER_MAX)?;
                    serde_json::from_value::<Vec<SignedTransfer>>(block["transactions"].clone())
                        .map_err(|e| anyhow!("height {height}: transactions do not parse: {e}"))?
                }
                Source::Folder(_) => {
                    let (txs, report) = rebuild(source, &certified);
                    txs.map_err(|e| {
                        anyhow!("height {height}: {e}; bad fragments: {:?}", report.bad)
                    })?
                }
            };
            transactions += txs.len() as u64;
            check_body(
                &certified.header,
                txs,
                (&mut ledger, &mut outcomes),
                &genesis.chain_id,
            )
            .map_err(|reason| anyhow!("height {height}: {reason}"))?;
            parent = certified.header.hash();
            height += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(json!({
        "verified": true,
        "trusted_genesis": trusted_genesis,
        "chain_id": genesis.chain_id.to_string(),
        "height": tip,
        "transactions": transactions,
        "state_root": ledger.state_root().to_string(),
        "outcome_root": outcomes.to_string(),
    }))
}

/// `audit export`: the trusted genesis, the certified headers (each checked
/// against it) and every fragment that passes its proof.
pub fn export(source: &Source, trust: &Trust, out: &Path, quiet: bool) -> Result<Value> {
    let Trusted {
        genesis,
        validators,
        report: trusted_genesis,
    } = trusted(source, trust)?;
    let tip = source.tip()?;
    fs::create_dir_all(out.join("blocks"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    fs::write(
        out.join("genesis.json"),
        serde_json::to_string_pretty(&genesis)? + "\n",
    )?;
    let bar = progress(tip, quiet);
    bar.set_message("exporting");
    let mut fragments = 0u64;
    let mut refused = Vec::new();
    let mut short = Vec::new();
    let mut parent = genesis.hash();
    let mut height = 1;
    while height <= tip {
        let batch = source.headers(height, 256)?;
        if batch.is_empty() {
            break;
        }
        for certified in batch {
            check_header(&certified, &genesis, &validators, parent, height)
                .map_err(|reason| anyhow!("height {height}: {reason}; nothing more exported"))?;
            fs::write(
                out.join(format!("blocks/{}.json", certified.height)),
                serde_json::to_string_pretty(&certified)? + "\n",
            )?;
            let folder = out.join(format!("fragments/{}", certified.height));
            fs::create_dir_all(&folder)?;
            let commitment = certified.header.fragments;
            let mut good = 0usize;
            for index in 0..commitment.params.n() as u32 {
                let (found, bad) = source.fragment(certified.height, index, &commitment);
                refused.extend(bad);
                if let Some(fragment) = found {
                    fs::write(
                        folder.join(format!("{index}.frag")),
                        codec::encode(&fragment)?,
                    )?;
                    fragments += 1;
                    good += 1;
                }
            }
            if good < commitment.params.k() {
                short.push(certified.height);
            }
            parent = certified.header.hash();
            height = certified.height + 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(json!({
        "exported": out.display().to_string(),
        "trusted_genesis": trusted_genesis,
        "blocks": height - 1,
        "fragments": fragments,
        "refused_fragments": refused,
        "heights_below_k": ranges(&short),
    }))
}

/// `audit reconstruct`: rebuilds one block from fragments and checks it against its
/// certified header.
pub fn reconstruct(
    source: &Source,
    trust: &Trust,
    height: u64,
    out: Option<&Path>,
) -> Result<Value> {
    let Trusted {
        genesis,
        validators,
        report: trusted_genesis,
    } = trusted(source, trust)?;
    let certified = source
        .headers(height, 1)?
        .pop()
        .filter(|c| c.height == height)
        .ok_or_else(|| anyhow!("no certified header at height {height}"))?;
    // The parent link needs the previous header; the certificate alone proves the
    // header was committed by 2f+1 validators of the trusted set.
    let parent = certified.header.parent;
    check_header(&certified, &genesis, &validators, parent, height)
        .map_err(|reason| anyhow!("height {height}: {reason}"))?;
    let (txs, report) = rebuild(source, &certified);
    let txs = txs.map_err(|e| {
        anyhow!(
            "{e}\n  good fragments: {:?}\n  bad: {:?}\n  missing: {:?}",
            report.good,
            report.bad,
            report.missing
        )
    })?;
    if certified.header.tx_root != tx_root(&txs) || certified.header.tx_count as usize != txs.len()
    {
        bail!("height {height}: rebuilt transactions do not match the certified header");
    }
    let block = json!({
        "height": height,
        "hash": certified.header.hash().to_string(),
        "header": certified.header,
        "certificate": certified.certificate,
        "transactions": txs,
    });
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("block-{height}.json")));
    fs::write(&path, serde_json::to_string_pretty(&block)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(json!({
        "height": height,
        "trusted_genesis": trusted_genesis,
        "written": path.display().to_string(),
        "transactions": txs.len(),
        "fragments": report,
    }))
}

/// Sorted heights folded into `[first, last]` ranges.
fn ranges(heights: &[u64]) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &h in heights {
        match out.last_mut() {
            Some(last) if last[1] + 1 == h => last[1] = h,
            _ => out.push([h, h]),
        }
    }
    out
}

/// Ranges as text: `1-5, 9`.
pub fn ranges_text(value: &Value) -> String {
    value
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| match (r[0].as_u64(), r[1].as_u64()) {
                    (Some(a), Some(b)) if a == b => a.to_string(),
                    (Some(a), Some(b)) => format!("{a}-{b}"),
                    _ => r.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Heights shown per report, worst first.
const WORST_SHOWN: usize = 20;

/// `audit availability`: for each height in `from..=to` (default the whole
/// chain), how many distinct fragments the validators hold that pass their proof
/// against the certified header. The second value is whether some height has
/// fewer than k (cannot be rebuilt).
pub fn availability(
    source: &Source,
    trust: &Trust,
    from: u64,
    to: Option<u64>,
    quiet: bool,
) -> Result<(Value, bool)> {
    let Source::Nodes(nodes) = source else {
        bail!("audit availability asks the validators: pass --node A,B,C,... (every validator)");
    };
    let Trusted {
        genesis,
        validators,
        report: trusted_genesis,
    } = trusted(source, trust)?;
    let n = genesis.validators.len();
    let k = genesis.data_shards as usize;
    let tip = source.tip()?;
    let from = from.max(1);
    let to = to.unwrap_or(tip).min(tip);
    if from > to {
        bail!("nothing to audit: heights {from}..={to} (the chain's height is {tip})");
    }
    let heights = to - from + 1;
    // Certified headers of the range: each certificate checked against the trusted
    // set, links checked inside the range.
    let mut commitments: Vec<FragmentCommitment> = Vec::with_capacity(heights as usize);
    let bar = progress(heights * (nodes.len() as u64 + 1), quiet);
    bar.set_message("availability");
    let mut height = from;
    let mut parent = None;
    while height <= to {
        let batch = source.headers(height, 256.min(to - height + 1))?;
        if batch.is_empty() {
            bail!("height {height}: no node serves its header");
        }
        for certified in batch {
            if height > to {
                break;
            }
            let link = parent.unwrap_or(certified.header.parent);
            check_header(&certified, &genesis, &validators, link, height).map_err(|reason| {
                anyhow!(
                    "height {height}: {reason} (trusted genesis {})",
                    genesis.hash()
                )
            })?;
            parent = Some(certified.header.hash());
            commitments.push(certified.header.fragments);
            height += 1;
            bar.inc(1);
        }
    }
    // good[h - from] = the distinct fragment indexes that checked.
    let mut good: Vec<Vec<u32>> = vec![Vec::new(); heights as usize];
    let mut per_node = Vec::new();
    for node in nodes {
        let mut at = from;
        let mut held = 0u64;
        let mut bad = Vec::new();
        let mut error = None;
        let mut validator = None;
        while at <= to {
            let path = format!(
                "/v1/own-fragments?from={at}&count={}",
                (to - at + 1).min(1024)
            );
            let answer = match node.get_json_within(&path, OWN_FRAGMENTS_ANSWER_MAX) {
                Ok(a) => a,
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break;
                }
            };
            let (Some(answered_to), Some(index)) =
                (answer["to"].as_u64(), answer["validator"].as_u64())
            else {
                error = Some("the answer has no \"to\" or \"validator\"".into());
                break;
            };
            validator = Some(index);
            for entry in answer["fragments"].as_array().into_iter().flatten() {
                let Some(h) = entry["height"].as_u64().filter(|h| (at..=to).contains(h)) else {
                    bad.push(format!("an entry outside {at}..={to}: {entry}"));
                    continue;
                };
                let commitment = &commitments[(h - from) as usize];
                let parsed = entry["fragment"]
                    .as_str()
                    .ok_or_else(|| "no fragment".to_string())
                    .and_then(decode_hex_fragment);
                let own = placement::fragment_of(
                    u32::try_from(index).unwrap_or(u32::MAX),
                    h,
                    commitment.params.total_shards,
                );
                let checked = parsed.and_then(|f| {
                    if f.index != own {
                        return Err(format!(
                            "validator {index} keeps fragment {own} of height {h}, served {}",
                            f.index
                        ));
                    }
                    f.check(commitment).map_err(|e| e.to_string())
                });
                match checked {
                    Ok(_) => {
                        let slot = &mut good[(h - from) as usize];
                        if !slot.contains(&own) {
                            slot.push(own);
                            held += 1;
                        }
                    }
                    Err(reason) => bad.push(format!("height {h}: {reason}")),
                }
            }
            if answered_to < at {
                // Nothing past its tip: the rest counts as missing here.
                break;
            }
            bar.inc(answered_to - at + 1);
            at = answered_to + 1;
        }
        per_node.push(json!({
            "node": node.url(),
            "validator": validator,
            "good_fragments": held,
            "bad_fragments": bad.iter().take(WORST_SHOWN).collect::<Vec<_>>(),
            "bad_count": bad.len(),
            "error": error,
        }));
    }
    bar.finish_and_clear();
    let mut order: Vec<(usize, u64)> = good
        .iter()
        .enumerate()
        .map(|(i, g)| (g.len(), from + i as u64))
        .collect();
    order.sort();
    let below_k: Vec<u64> = {
        let mut v: Vec<u64> = order
            .iter()
            .filter(|(c, _)| *c < k)
            .map(|(_, h)| *h)
            .collect();
        v.sort();
        v
    };
    let below_n: Vec<u64> = {
        let mut v: Vec<u64> = order
            .iter()
            .filter(|(c, _)| *c < n)
            .map(|(_, h)| *h)
            .collect();
        v.sort();
        v
    };
    let mut by_count: BTreeMap<usize, u64> = BTreeMap::new();
    for (count, _) in &order {
        *by_count.entry(*count).or_default() += 1;
    }
    let lost = !below_k.is_empty();
    let report = json!({
        "trusted_genesis": trusted_genesis,
        "from": from,
        "to": to,
        "k": k,
        "n": n,
        "min_good": order.first().map_or(0, |(c, _)| *c),
        "heights_by_good_fragments": by_count.iter().map(|(c, h)| json!({"good": c, "heights": h})).collect::<Vec<_>>(),
        "worst": order.iter().take(WORST_SHOWN).map(|(c, h)| json!({"height": h, "good": c})).collect::<Vec<_>>(),
        "heights_below_k": ranges(&below_k),
        "heights_below_n": ranges(&below_n),
        "nodes": per_node,
    });
    Ok((report, lost))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;
    use mosaic_crypto::{ChainId, Keypair};
    use mosaic_node::block::{AfterParent, Block, Position};
    use mosaic_node::ledger::Transfer;

    /// Replay catches a header whose outcome root is not the outcomes of its
    /// parent, even with the state root right (what 2f+1 faulty validators could
    /// certify to show a payment as failed): and only then.
    #[test]
    fn a_header_with_forged_outcomes_fails_the_replay() {
        let chain = ChainId::new("audit-test").unwrap();
        let payer = Keypair::from_seed_for_tests(1);
        let mut ledger = Ledger::from_balances(&[(payer.public(), 100)]).unwrap();
        let pay = |nonce| {
            Transfer {
                chain: chain.clone(),
                from: payer.public(),
                to: Keypair::from_seed_for_tests(2).public(),
                amount: 5,
                nonce,
                valid_until: 100,
            }
            .sign(&payer)
        };
        let block = |height, after: AfterParent, txs: Vec<SignedTransfer>| {
            let position = Position {
                chain: chain.clone(),
                height,
                parent: Hash::ZERO,
            };
            Block::build(&position, 0, 0, after, txs, 2, 4).unwrap().0
        };
        let mut outcomes = Hash::ZERO;
        let first = block(
            1,
            AfterParent {
                state_root: ledger.state_root(),
                outcome_root: Hash::ZERO,
            },
            vec![pay(0)],
        );
        check_body(
            &first.header,
            first.txs,
            (&mut ledger, &mut outcomes),
            &chain,
        )
        .unwrap();
        assert_ne!(outcomes, Hash::ZERO, "block 1 applied a transfer");
        let state_root = ledger.state_root();
        for (forged, expect_ok) in [(Hash::from_bytes([9; 32]), false), (outcomes, true)] {
            let mut replayed = ledger.clone();
            let mut replayed_outcomes = outcomes;
            let second = block(
                2,
                AfterParent {
                    state_root,
                    outcome_root: forged,
                },
                vec![pay(1)],
            );
            let verdict = check_body(
                &second.header,
                second.txs,
                (&mut replayed, &mut replayed_outcomes),
                &chain,
            );
            match verdict {
                Ok(()) => assert!(expect_ok),
                Err(reason) => {
                    assert!(!expect_ok, "{reason}");
                    assert!(reason.contains("outcome root"), "{reason}");
                }
            }
        }
    }
}
