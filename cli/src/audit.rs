//! `mosaic audit`: verify a chain from genesis, export it, rebuild blocks from
//! fragments. Works against nodes (HTTP) or an exported folder:
//! ```text
//! genesis.json
//! blocks/<height>.json          {"height", "header", "certificate"}
//! fragments/<height>/<index>.frag   one fragment (canonical bytes, with its proof)
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mosaic_consensus::{CommitCertificate, ValidatorSet};
use mosaic_crypto::{Hash, codec};
use mosaic_node::block::{BODY_BYTES_MAX, BlockHeader, body_bytes, tx_root};
use mosaic_node::genesis::Genesis;
use mosaic_node::ledger::{self, Ledger, SignedTransfer};
use mosaic_storage::{Fragment, coding};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::Client;

/// Largest fragment file read.
const FRAGMENT_FILE_MAX: usize = BODY_BYTES_MAX + 1024 * 1024;

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
    fn first(&self) -> Result<&Client> {
        match self {
            Source::Nodes(nodes) => nodes.first().ok_or_else(|| anyhow!("no node given")),
            Source::Folder(_) => bail!("not a node source"),
        }
    }

    /// The genesis file.
    pub fn genesis(&self) -> Result<Genesis> {
        let genesis: Genesis = match self {
            Source::Nodes(_) => self.first()?.get_as("/v1/genesis")?,
            Source::Folder(dir) => Genesis::read(&dir.join("genesis.json"))?,
        };
        genesis.validate()?;
        Ok(genesis)
    }

    /// The highest height available.
    pub fn tip(&self) -> Result<u64> {
        match self {
            Source::Nodes(_) => {
                let status = self.first()?.get("/v1/status")?;
                status["height"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("status has no height: {status}"))
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

    /// Certified headers `from ..` (up to `count`).
    pub fn headers(&self, from: u64, count: u64) -> Result<Vec<CertifiedHeader>> {
        match self {
            Source::Nodes(_) => {
                let answer = self
                    .first()?
                    .get(&format!("/v1/headers?from={from}&count={count}"))?;
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

    /// Fragment `index` of block `height` from each source that has it (raw:
    /// not yet checked), labelled with where it came from.
    pub fn fragments(&self, height: u64, index: u32) -> Vec<(String, Result<Fragment, String>)> {
        match self {
            Source::Nodes(nodes) => {
                let mut out = Vec::new();
                for node in nodes {
                    let from = node.url().to_string();
                    if let Ok((200, value)) =
                        node.get_raw(&format!("/v1/blocks/{height}/fragments/{index}"))
                    {
                        {
                            let parsed = value["fragment"]
                                .as_str()
                                .ok_or_else(|| "answer has no fragment".to_string())
                                .and_then(|h| hex::decode(h).map_err(|e| e.to_string()))
                                .and_then(|bytes| {
                                    codec::decode::<Fragment>(&bytes, FRAGMENT_FILE_MAX)
                                        .map_err(|e| e.to_string())
                                });
                            out.push((from, parsed));
                            // One good copy per index is enough.
                            if out.last().is_some_and(|(_, r)| r.is_ok()) {
                                break;
                            }
                        }
                    }
                }
                out
            }
            Source::Folder(dir) => {
                let path = dir.join(format!("fragments/{height}/{index}.frag"));
                match fs::read(&path) {
                    Ok(bytes) if bytes.len() <= FRAGMENT_FILE_MAX => vec![(
                        path.display().to_string(),
                        codec::decode::<Fragment>(&bytes, FRAGMENT_FILE_MAX)
                            .map_err(|e| e.to_string()),
                    )],
                    Ok(_) => vec![(path.display().to_string(), Err("file too large".into()))],
                    Err(_) => Vec::new(),
                }
            }
        }
    }
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
        let found = source.fragments(certified.height, index);
        if found.is_empty() {
            report.missing.push(index);
        }
        for (from, fragment) in found {
            let checked = fragment.and_then(|f| {
                if f.index != index {
                    return Err(format!("claims index {} at position {index}", f.index));
                }
                f.check(&commitment)
                    .map(|c| c.into_fragment())
                    .map_err(|e| e.to_string())
            });
            match checked {
                Ok(f) => {
                    good.insert(index, f);
                }
                Err(reason) => report
                    .bad
                    .push(format!("fragment {index} from {from}: {reason}")),
            }
        }
        if good.contains_key(&index) {
            report.good.push(index);
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
    let certificate = &certified.certificate;
    if certificate.seq.0 != height || certificate.digest.0 != header.hash() {
        return Err(
            "the header's hash is not what its commit certificate signs (header or certificate altered)"
                .into(),
        );
    }
    certificate
        .verify(validators)
        .map_err(|e| format!("commit certificate does not verify: {e}"))
}

/// Checks a body against its header and replays it. `Err` says what is wrong.
fn check_body(
    header: &BlockHeader,
    txs: Vec<SignedTransfer>,
    ledger: &mut Ledger,
    chain: &mosaic_crypto::ChainId,
) -> Result<(), String> {
    if header.tx_count as usize != txs.len() || header.tx_root != tx_root(&txs) {
        return Err("transactions do not match the header's tx_root / tx_count".into());
    }
    coding::check_encoding(&body_bytes(&txs), &header.fragments)
        .map_err(|e| format!("body does not match the header's fragment root: {e}"))?;
    let mut verified = Vec::with_capacity(txs.len());
    for (i, result) in ledger::verify_batch(txs, chain).into_iter().enumerate() {
        verified.push(result.map_err(|e| format!("transaction {i}: {e}"))?);
    }
    let root = ledger.state_root();
    if header.state_root != root {
        return Err(format!(
            "state root {} differs from the replayed state {root}",
            header.state_root
        ));
    }
    ledger.apply(&verified);
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
pub fn verify(source: &Source, quiet: bool) -> Result<Value> {
    let genesis = source.genesis()?;
    let validators = genesis.validator_set()?;
    let mut ledger = genesis.ledger()?;
    let tip = source.tip()?;
    let bar = progress(tip, quiet);
    bar.set_message("verifying");
    let mut parent = genesis.hash();
    let mut height = 1;
    let mut transactions = 0u64;
    while height <= tip {
        let batch = source.headers(height, 256)?;
        if batch.is_empty() {
            bail!("height {height}: header missing from the source");
        }
        for certified in batch {
            check_header(&certified, &genesis, &validators, parent, height)
                .map_err(|reason| anyhow!("height {height}: {reason}"))?;
            let txs = match source {
                Source::Nodes(_) => {
                    let block = source.first()?.get(&format!("/v1/blocks/{height}"))?;
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
            check_body(&certified.header, txs, &mut ledger, &genesis.chain_id)
                .map_err(|reason| anyhow!("height {height}: {reason}"))?;
            parent = certified.header.hash();
            height += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(json!({
        "verified": true,
        "chain_id": genesis.chain_id.to_string(),
        "height": tip,
        "transactions": transactions,
        "state_root": ledger.state_root().to_string(),
    }))
}

/// `audit export`: genesis, certified headers and every fragment the nodes serve.
pub fn export(source: &Source, out: &Path, quiet: bool) -> Result<Value> {
    let genesis = source.genesis()?;
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
    let mut height = 1;
    while height <= tip {
        let batch = source.headers(height, 256)?;
        if batch.is_empty() {
            break;
        }
        for certified in batch {
            fs::write(
                out.join(format!("blocks/{}.json", certified.height)),
                serde_json::to_string_pretty(&certified)? + "\n",
            )?;
            let folder = out.join(format!("fragments/{}", certified.height));
            fs::create_dir_all(&folder)?;
            for index in 0..certified.header.fragments.params.n() as u32 {
                let good = source
                    .fragments(certified.height, index)
                    .into_iter()
                    .find_map(|(_, f)| f.ok());
                if let Some(fragment) = good {
                    fs::write(
                        folder.join(format!("{index}.frag")),
                        codec::encode(&fragment)?,
                    )?;
                    fragments += 1;
                }
            }
            height = certified.height + 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(
        json!({ "exported": out.display().to_string(), "blocks": height - 1, "fragments": fragments }),
    )
}

/// `audit reconstruct`: rebuilds one block from fragments and checks it against its
/// certified header.
pub fn reconstruct(source: &Source, height: u64, out: Option<&Path>) -> Result<Value> {
    let genesis = source.genesis()?;
    let validators = genesis.validator_set()?;
    let certified = source
        .headers(height, 1)?
        .pop()
        .filter(|c| c.height == height)
        .ok_or_else(|| anyhow!("no certified header at height {height}"))?;
    // The parent link needs the previous header; the certificate alone proves the
    // header was committed by 2f+1 validators.
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
        "written": path.display().to_string(),
        "transactions": txs.len(),
        "fragments": report,
    }))
}
