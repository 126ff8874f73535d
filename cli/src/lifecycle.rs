//! A transfer's life seen from the client: signed once with a last valid height,
//! submitted to one of several nodes, and followed until it commits, fails, is
//! dropped or expires. When the node in use stops answering, the same signed bytes
//! go to the next one (same hash, so at most one inclusion can ever apply).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use mosaic_crypto::{ChainId, PublicKey, keyfile};
use mosaic_node::genesis::Genesis;
use mosaic_node::ledger::{SignedTransfer, Transfer};
use serde_json::{Value, json};

use crate::client::{self, Client};

/// The local testnet whose validators are the default nodes.
pub const TESTNET_DIR: &str = "testnet/data";
/// How long one request to one node may take before the next node is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often --wait asks.
const POLL: Duration = Duration::from_millis(100);
/// How often --wait sends the transfer again to a node that does not know it.
const RESEND: Duration = Duration::from_secs(2);

/// What `mosaic tx transfer` was asked.
#[derive(Debug, Clone)]
pub struct TransferArgs {
    /// The sender's key file.
    pub key_file: PathBuf,
    /// Recipient.
    pub to: PublicKey,
    /// Amount.
    pub amount: u64,
    /// Nonce (default: asked from the node).
    pub nonce: Option<u64>,
    /// Heights past the tip it stays valid.
    pub valid_for: u64,
    /// Follow it to the end.
    pub wait: bool,
    /// Longest wait.
    pub timeout: Duration,
    /// What --wait checks the end against (`None`: the node's word is taken).
    pub genesis: Option<Genesis>,
}

/// The nodes, with the one in use first; rotating moves to the next.
struct Nodes {
    urls: Vec<String>,
    at: usize,
    /// Say nothing on stderr (--json).
    quiet: bool,
}

impl Nodes {
    fn new(urls: &[String], quiet: bool) -> Result<Self> {
        if urls.is_empty() {
            bail!("no node given: pass --node URL");
        }
        Ok(Nodes {
            urls: urls.to_vec(),
            at: 0,
            quiet,
        })
    }
    fn client(&self) -> Client {
        Client::with_timeout(&self.urls[self.at], REQUEST_TIMEOUT)
    }
    fn url(&self) -> &str {
        &self.urls[self.at]
    }
    fn rotate(&mut self) {
        self.at = (self.at + 1) % self.urls.len();
    }
}

/// Answers of one node's GET `path`, trying the nodes in turn (a node that
/// answers with an error status counts as an answer).
fn get_first(nodes: &mut Nodes, path: &str) -> Result<Value> {
    let mut errors = Vec::new();
    for _ in 0..nodes.urls.len() {
        match nodes.client().get_raw(path) {
            Ok((status, value)) if (200..300).contains(&status) => return Ok(value),
            Ok((status, value)) => bail!("{}", client::error_text(status, &value)),
            Err(e) => {
                errors.push(format!("{e:#}"));
                let from = nodes.url().to_string();
                nodes.rotate();
                if !nodes.quiet && nodes.urls.len() > 1 {
                    eprintln!("{from} did not answer; trying {}", nodes.url());
                }
            }
        }
    }
    bail!("no node answered: {}", errors.join("; "))
}

/// The nonce a new transfer of `sender` takes: the highest `pending_nonce` (the
/// committed nonce plus the run of its transfers pending in turn) that any node
/// reports, so a transfer sent before the last one committed, to the same node or
/// another, does not reuse its nonce. Asks every node; one that does not answer is
/// skipped, and at least one must answer.
fn next_nonce(nodes: &Nodes, sender: &PublicKey, quiet: bool) -> Result<u64> {
    let path = format!("/v1/accounts/{sender}");
    let mut best: Option<u64> = None;
    let mut errors = Vec::new();
    for url in &nodes.urls {
        match Client::with_timeout(url, REQUEST_TIMEOUT).get_raw(&path) {
            Ok((200, value)) => {
                let pending = value["pending_nonce"].as_u64().or(value["nonce"].as_u64());
                match pending {
                    Some(n) => best = Some(best.map_or(n, |b| b.max(n))),
                    None => errors.push(format!("{url}: the answer has no nonce")),
                }
            }
            Ok((code, value)) => {
                errors.push(format!("{url}: {}", client::error_text(code, &value)))
            }
            Err(e) => errors.push(format!("{url}: {e:#}")),
        }
    }
    if !quiet && best.is_some() && !errors.is_empty() {
        eprintln!(
            "nonce from the nodes that answered ({} did not: {})",
            errors.len(),
            errors.join("; ")
        );
    }
    best.ok_or_else(|| {
        anyhow!(
            "no node told the sender's nonce: {}; pass --nonce N to sign without asking",
            errors.join("; ")
        )
    })
}

/// How a submission went at one node.
enum Submitted {
    Accepted,
    /// The node could not take it now (503): another may.
    Busy(String),
    /// The node did not answer.
    Unreachable(String),
}

fn submit(nodes: &Nodes, tx: &SignedTransfer) -> Result<Submitted> {
    match nodes.client().post("/v1/transactions", tx) {
        Ok((202, _)) => Ok(Submitted::Accepted),
        // The same signed bytes are already in a block (an earlier node took them
        // and answered too late): follow it to its end like an accepted one.
        Ok((409, answer))
            if answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("already committed")) =>
        {
            Ok(Submitted::Accepted)
        }
        Ok((503, answer)) => Ok(Submitted::Busy(client::error_text(503, &answer))),
        Ok((code, answer)) => bail!("{}", client::error_text(code, &answer)),
        Err(e) => Ok(Submitted::Unreachable(format!("{e:#}"))),
    }
}

/// Submits `tx` to the nodes in turn until one answers 202.
fn submit_somewhere(nodes: &mut Nodes, tx: &SignedTransfer, json: bool) -> Result<()> {
    let mut refusals = Vec::new();
    for _ in 0..nodes.urls.len() {
        match submit(nodes, tx)? {
            Submitted::Accepted => return Ok(()),
            Submitted::Busy(why) | Submitted::Unreachable(why) => {
                let from = nodes.url().to_string();
                nodes.rotate();
                if !json && nodes.urls.len() > 1 {
                    eprintln!(
                        "{from} did not accept it ({why}); sending the same signed transfer to {}",
                        nodes.url()
                    );
                }
                refusals.push(format!("{from}: {why}"));
            }
        }
    }
    bail!(
        "no node accepted transfer {}: {}. A node that failed mid-request may still have it: \
         check `mosaic tx status {}`; after height {} it can never commit and its nonce may be sent again",
        tx.hash(),
        refusals.join("; "),
        tx.hash(),
        tx.transfer.valid_until
    )
}

/// `mosaic tx transfer`.
pub fn transfer(args: &TransferArgs, urls: &[String], json: bool) -> Result<()> {
    let key = keyfile::read_key_file(&args.key_file)?;
    let mut nodes = Nodes::new(urls, json)?;
    let status = get_first(&mut nodes, "/v1/status")?;
    let chain = ChainId::new(
        status["chain_id"]
            .as_str()
            .ok_or_else(|| anyhow!("node status has no chain id"))?,
    )?;
    let tip = status["height"]
        .as_u64()
        .ok_or_else(|| anyhow!("node status has no height"))?;
    let nonce = match args.nonce {
        Some(n) => n,
        None => next_nonce(&nodes, &key.public(), json)?,
    };
    let tx = Transfer {
        chain,
        from: key.public(),
        to: args.to,
        amount: args.amount,
        nonce,
        valid_until: tip.saturating_add(args.valid_for),
    }
    .sign(&key);
    let hash = tx.hash().to_string();
    submit_somewhere(&mut nodes, &tx, json)?;
    let page = format!("{}/?tx={hash}", nodes.url().trim_end_matches('/'));
    if !json {
        println!("{hash}");
        // On stderr: `hash=$(mosaic tx transfer ...)` keeps working.
        eprintln!("follow it on the validator's page: {page}");
    }
    if !args.wait {
        if json {
            println!(
                "{}",
                json!({ "hash": hash, "status": "pending", "nonce": nonce, "valid_until": tx.transfer.valid_until, "node": nodes.url(), "page": page })
            );
        }
        return Ok(());
    }
    follow(&mut nodes, &tx, args, json)
}

/// What --wait does with an answer when it checks proofs.
enum Checked {
    /// The end, proven: printed, and the command's result.
    Ended(Result<()>),
    /// Nothing proven yet: ask again.
    Waiting,
    /// The node said something its proofs do not show: ask the next one.
    Suspect(String),
}

/// Checks an answer that claims an end (`value` from the node in use) against
/// proofs: a committed or failed status by the node's own transfer proof, any
/// other end, and any answer once the chain is past `valid_until`, by
/// [`crate::verify::settle`] over every node.
fn check_end(
    nodes: &Nodes,
    tx: &SignedTransfer,
    value: &Value,
    genesis: &Genesis,
    json: bool,
) -> Checked {
    let hash = tx.hash().to_string();
    let proven = match value["status"].as_str() {
        Some("committed" | "failed") => {
            match crate::verify::check_status(
                &hash,
                nodes.url(),
                value,
                genesis,
                crate::client::Patience::Poll,
            ) {
                Ok(proven) => Some(proven),
                Err(crate::verify::Unproven::Refused(reason)) => return Checked::Suspect(reason),
                Err(crate::verify::Unproven::NotYet(_)) => return Checked::Waiting,
            }
        }
        _ => crate::verify::settle(&tx.transfer, &nodes.urls, genesis),
    };
    let Some(proven) = proven else {
        return match value["status"].as_str() {
            Some("expired") => Checked::Suspect(format!(
                "{} says expired, but no proof shows the nonce unused past height {}",
                nodes.url(),
                tx.transfer.valid_until
            )),
            Some("dropped") if value["final"].as_bool() != Some(false) => {
                Checked::Suspect(format!(
                    "{} says it can never commit ({}), but no proof shows it",
                    nodes.url(),
                    value["reason"].as_str().unwrap_or_default()
                ))
            }
            _ => Checked::Waiting,
        };
    };
    let text = crate::verify::describe_status(&proven);
    Checked::Ended(match proven["status"].as_str() {
        Some("committed") => {
            crate::print(json, &proven, || text);
            Ok(())
        }
        _ => {
            if json {
                println!("{proven}");
            }
            Err(anyhow!("{text}"))
        }
    })
}

/// Waits for `tx` to end, moving to another node (and submitting it there again)
/// whenever the one in use stops answering.
fn follow(nodes: &mut Nodes, tx: &SignedTransfer, args: &TransferArgs, json: bool) -> Result<()> {
    let hash = tx.hash().to_string();
    let valid_until = tx.transfer.valid_until;
    let timeout = args.timeout;
    let start = Instant::now();
    let mut last_sent = Instant::now();
    let mut last_settle: Option<Instant> = None;
    loop {
        match nodes.client().get_raw(&format!("/v1/transactions/{hash}")) {
            Ok((200, value)) => {
                let tip = value["tip"].as_u64().unwrap_or(0);
                let claims_end = crate::lifecycle::rank(&value) >= FINAL_RANK || tip > valid_until;
                // Proofs over every node are asked at most once per RESEND.
                let due = last_settle.is_none_or(|t| t.elapsed() >= RESEND)
                    || matches!(value["status"].as_str(), Some("committed" | "failed"));
                if let (Some(genesis), true, true) = (&args.genesis, claims_end, due) {
                    last_settle = Some(Instant::now());
                    match check_end(nodes, tx, &value, genesis, json) {
                        Checked::Ended(result) => return result,
                        Checked::Waiting => {}
                        Checked::Suspect(reason) => {
                            if !json {
                                eprintln!(
                                    "refused: {reason}; sending the same signed transfer to the next node and waiting there"
                                );
                            }
                            nodes.rotate();
                            let _ = submit(nodes, tx);
                            last_sent = Instant::now();
                        }
                    }
                    if start.elapsed() > timeout {
                        bail!(
                            "no verified end within {} s; it may still commit up to height {valid_until}: check with `mosaic tx status {hash}`",
                            timeout.as_secs()
                        );
                    }
                    std::thread::sleep(POLL);
                    continue;
                }
                if args.genesis.is_some() && claims_end {
                    std::thread::sleep(POLL);
                    continue;
                }
                match value["status"].as_str() {
                    Some("committed") => {
                        crate::print(json, &value, || {
                            format!("committed at height {}", value["height"])
                        });
                        return Ok(());
                    }
                    Some("failed") => {
                        if json {
                            println!("{value}");
                        }
                        bail!(
                            "transaction failed at height {}: {}",
                            value["height"],
                            value["reason"].as_str().unwrap_or_default()
                        );
                    }
                    Some("dropped") if value["final"].as_bool() != Some(false) => {
                        if json {
                            println!("{value}");
                        }
                        bail!(
                            "transaction {hash} can never commit: {}",
                            value["reason"].as_str().unwrap_or_default()
                        );
                    }
                    Some("expired") => {
                        if json {
                            println!("{value}");
                        }
                        bail!(
                            "transaction {hash} expired: {}",
                            value["reason"].as_str().unwrap_or_default()
                        );
                    }
                    // One validator let it go; another may still include it: hand
                    // the same bytes to the next node and wait there, up to expiry.
                    Some("dropped") if tip > valid_until => {
                        if json {
                            println!(
                                "{}",
                                json!({ "hash": hash, "status": "expired", "final": true, "valid_until": valid_until, "tip": tip })
                            );
                        }
                        bail!(
                            "transaction {hash} expired: valid until height {valid_until}, the chain is at {tip} and it is not committed, so it never will be; the nonce {} may be sent again",
                            tx.transfer.nonce
                        );
                    }
                    Some("dropped") if last_sent.elapsed() >= RESEND => {
                        if !json {
                            eprintln!(
                                "{}; sending the same signed transfer to the next node and waiting until height {valid_until}",
                                value["reason"].as_str().unwrap_or("dropped here")
                            );
                        }
                        last_sent = Instant::now();
                        nodes.rotate();
                        let _ = submit(nodes, tx);
                    }
                    Some("unknown") if tip > valid_until => {
                        if json {
                            println!(
                                "{}",
                                json!({ "hash": hash, "status": "expired", "valid_until": valid_until, "tip": tip })
                            );
                        }
                        bail!(
                            "transaction {hash} expired: valid until height {valid_until}, the chain is at {tip} and it is not committed, so it never will be; the nonce {} may be sent again",
                            tx.transfer.nonce
                        );
                    }
                    Some("unknown") if last_sent.elapsed() >= RESEND => {
                        // This node has not got it (it came here after another one
                        // failed, or gossip did not reach it): hand it over again.
                        last_sent = Instant::now();
                        if let Ok(Submitted::Busy(why)) = submit(nodes, tx) {
                            if !json {
                                eprintln!(
                                    "{} cannot take it now ({why}); trying the next node",
                                    nodes.url()
                                );
                            }
                            nodes.rotate();
                        }
                    }
                    _ => {}
                }
            }
            Ok((code, value)) => {
                if !json {
                    eprintln!("{}: {}", nodes.url(), client::error_text(code, &value));
                }
                nodes.rotate();
            }
            Err(e) => {
                let from = nodes.url().to_string();
                nodes.rotate();
                if !json {
                    eprintln!(
                        "{from} stopped answering ({e:#}); sending the same signed transfer to {} and waiting there",
                        nodes.url()
                    );
                }
                if let Ok(Submitted::Accepted) = submit(nodes, tx) {
                    last_sent = Instant::now();
                }
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "not committed within {} s; it may still commit up to height {valid_until}: check with `mosaic tx status {hash}`",
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The rank from which an answer says the transfer's life is over.
pub(crate) const FINAL_RANK: u8 = 3;

/// How final an answer is: a node that saw the end outranks one that did not, a
/// block's verdict outranks a node's own (expiry, a used nonce), and a transfer
/// pending at one node outranks another node's local drop (that node let it go;
/// the first may still get it included).
pub(crate) fn rank(value: &Value) -> u8 {
    match value["status"].as_str() {
        Some("committed" | "failed") => 4,
        Some("expired") => 3,
        Some("dropped") if value["final"].as_bool() != Some(false) => 3,
        Some("pending") => 2,
        Some("dropped") => 1,
        _ => 0,
    }
}

/// `mosaic tx status`: asks every node and reports the most final answer.
pub fn status(hash: &str, urls: &[String]) -> Result<Value> {
    let mut best: Option<Value> = None;
    let mut errors = Vec::new();
    for url in urls {
        match Client::with_timeout(url, REQUEST_TIMEOUT)
            .get_raw(&format!("/v1/transactions/{hash}"))
        {
            Ok((200, mut value)) => {
                if let Some(map) = value.as_object_mut() {
                    map.insert("node".into(), json!(url));
                }
                if best.as_ref().is_none_or(|b| rank(&value) > rank(b)) {
                    best = Some(value);
                }
                if best.as_ref().is_some_and(|b| rank(b) == 4) {
                    break;
                }
            }
            Ok((code, value)) => {
                errors.push(format!("{url}: {}", client::error_text(code, &value)))
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    best.ok_or_else(|| anyhow!("no node answered: {}", errors.join("; ")))
}

/// One line for a status answer.
pub fn describe_status(value: &Value) -> String {
    let hash = value["hash"].as_str().unwrap_or_default();
    let reason = value["reason"].as_str().unwrap_or_default();
    let node = value["node"].as_str().unwrap_or_default();
    match value["status"].as_str().unwrap_or_default() {
        "committed" => format!(
            "{hash} committed at height {} (index {})",
            value["height"], value["index"]
        ),
        "failed" => format!("{hash} failed at height {}: {reason}", value["height"]),
        "dropped" => format!("{hash} dropped: {reason} ({node})"),
        "expired" => format!("{hash} expired: {reason} ({node})"),
        "pending" => format!("{hash} pending at {node}: {reason} (tip {})", value["tip"]),
        _ => format!(
            "{hash} unknown to every node asked (tip {}): {reason}",
            value["tip"]
        ),
    }
}
