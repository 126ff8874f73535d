//! A cluster of in-process validators on 127.0.0.1 for the node's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mosaic_crypto::{ChainId, Keypair, PublicKey};
use mosaic_node::config::NodeConfig;
use mosaic_node::genesis::{Genesis, GenesisBalance, GenesisValidator};
use mosaic_node::ledger::{SignedTransfer, Transfer};
use mosaic_node::service::{self, NodeHandle, TestOptions};
use serde_json::Value;

pub const CHAIN: &str = "test-chain";
pub const FUNDS: u64 = 1_000_000;

pub fn validator_key(i: usize) -> Keypair {
    Keypair::from_seed_for_tests(i as u64)
}

pub fn client_key(i: usize) -> Keypair {
    Keypair::from_seed_for_tests(1_000 + i as u64)
}

pub fn genesis(n: usize, clients: usize) -> Genesis {
    let f = (n - 1) / 3;
    Genesis {
        chain_id: ChainId::new(CHAIN).unwrap(),
        data_shards: (f + 1) as u16,
        validators: (0..n)
            .map(|i| GenesisValidator {
                name: format!("v{i}"),
                public_key: validator_key(i).public(),
            })
            .collect(),
        balances: (0..clients)
            .map(|i| GenesisBalance {
                address: client_key(i).public(),
                amount: FUNDS,
            })
            .collect(),
    }
}

/// The last valid height of the test transfers (far enough for any test chain).
pub const VALID_UNTIL: u64 = 100_000;

pub fn transfer(from: usize, to: &PublicKey, amount: u64, nonce: u64) -> SignedTransfer {
    Transfer {
        chain: ChainId::new(CHAIN).unwrap(),
        from: client_key(from).public(),
        to: *to,
        amount,
        nonce,
        valid_until: VALID_UNTIL,
    }
    .sign(&client_key(from))
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub genesis: Genesis,
    pub nodes: Vec<Option<NodeHandle>>,
    pub configs: Vec<NodeConfig>,
    pub options: Vec<TestOptions>,
}

fn base_config(dir: &std::path::Path, i: usize, body_window_blocks: u64) -> NodeConfig {
    let mut config: NodeConfig = toml::from_str(&format!(
        "key_file = \"unused\"\ngenesis_file = \"unused\"\ndata_dir = {:?}\napi_address = \"127.0.0.1:0\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
        dir.join(format!("node{i}")).display().to_string()
    ))
    .unwrap();
    config.consensus.view_change_timeout_ms = 1_000;
    config.consensus.view_change_timeout_max_ms = 8_000;
    config.storage.body_window_blocks = body_window_blocks;
    config.batching.delay_ms = 5;
    config
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Cluster {
    /// Starts n validators; each bootstraps from the ones started before it.
    pub async fn start(n: usize, clients: usize, body_window_blocks: u64) -> Cluster {
        Self::start_with(
            n,
            clients,
            body_window_blocks,
            vec![TestOptions::default(); n],
        )
        .await
    }

    pub async fn start_with(
        n: usize,
        clients: usize,
        body_window_blocks: u64,
        options: Vec<TestOptions>,
    ) -> Cluster {
        Self::start_tuned(n, clients, body_window_blocks, options, |_| {}).await
    }

    /// Like `start_with`, with `tune` applied to every node's config first.
    pub async fn start_tuned(
        n: usize,
        clients: usize,
        body_window_blocks: u64,
        options: Vec<TestOptions>,
        tune: impl Fn(&mut NodeConfig),
    ) -> Cluster {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            genesis: genesis(n, clients),
            configs: (0..n)
                .map(|i| {
                    let mut config = base_config(dir.path(), i, body_window_blocks);
                    tune(&mut config);
                    config
                })
                .collect(),
            dir,
            nodes: Vec::new(),
            options,
        };
        for i in 0..n {
            let bootstrap = cluster.addresses();
            cluster.configs[i].bootstrap = bootstrap;
            let node = cluster.launch(i).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    async fn launch(&self, i: usize) -> NodeHandle {
        service::start(
            self.configs[i].clone(),
            self.genesis.clone(),
            validator_key(i),
            self.options[i].clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("node {i} failed to start: {e}"))
    }

    /// The p2p addresses (with /p2p/) of the running nodes.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .flat_map(|n| {
                n.listen_addresses
                    .iter()
                    .map(move |a| format!("{a}/p2p/{}", n.peer_id))
            })
            .collect()
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.stop().await.unwrap();
        }
    }

    /// Restarts node i with its data dir, bootstrapping from the running nodes.
    pub async fn restart(&mut self, i: usize) {
        self.configs[i].bootstrap = self.addresses();
        let node = self.launch(i).await;
        self.nodes[i] = Some(node);
    }

    pub fn url(&self, i: usize) -> String {
        let node = self.nodes[i].as_ref().expect("node is running");
        format!("http://{}", node.api_address)
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// GET url: (status, JSON body).
pub async fn get(url: String) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let mut response = agent().get(&url).call().unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

/// GET url: the raw text.
pub async fn get_text(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        agent()
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap()
}

/// POST raw bytes: (status, JSON body).
pub async fn post(url: String, body: Vec<u8>) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let mut response = agent()
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])
            .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

pub async fn submit(url: &str, tx: &SignedTransfer) -> (u16, Value) {
    post(
        format!("{url}/v1/transactions"),
        serde_json::to_vec(tx).unwrap(),
    )
    .await
}

pub async fn height(url: &str) -> u64 {
    get(format!("{url}/v1/status")).await.1["height"]
        .as_u64()
        .unwrap_or(0)
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

pub async fn tx_status(url: &str, hash: &str) -> Value {
    get(format!("{url}/v1/transactions/{hash}")).await.1
}

pub async fn balance(url: &str, key: &PublicKey) -> u64 {
    get(format!("{url}/v1/accounts/{key}")).await.1["balance"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

pub fn data_dir(cluster: &Cluster, i: usize) -> PathBuf {
    cluster.configs[i].data_dir.clone()
}
