//! What `mosaic testnet init` writes for operators who already run Prometheus and
//! Grafana: `monitoring/prometheus.yml` (a scrape config with every validator's
//! `/metrics`) and `monitoring/grafana-dashboard.json` (a dashboard to import).
//! docs/DEPLOY.md says how to use them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::testnet::TestnetFile;

/// A dashboard panel: title, unit, and queries (PromQL, legend).
type Panel = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The dashboard's panels.
const PANELS: &[Panel] = &[
    (
        "Height",
        "none",
        &[("mosaic_height{job=\"mosaic\"}", "validator {{validator}}")],
    ),
    (
        "Transfers committed per second",
        "ops",
        &[(
            "sum by (validator) (rate(mosaic_transactions_committed_total{job=\"mosaic\"}[1m]))",
            "validator {{validator}}",
        )],
    ),
    (
        "Commit latency (proposal seen to executed)",
        "s",
        &[
            (
                "histogram_quantile(0.5, sum by (le) (rate(mosaic_commit_latency_seconds_bucket{job=\"mosaic\"}[1m])))",
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) (rate(mosaic_commit_latency_seconds_bucket{job=\"mosaic\"}[1m])))",
                "p99",
            ),
        ],
    ),
    (
        "View and view changes",
        "none",
        &[
            (
                "mosaic_view{job=\"mosaic\"}",
                "view, validator {{validator}}",
            ),
            (
                "increase(mosaic_view_changes_total{job=\"mosaic\"}[5m])",
                "view changes in 5 min, validator {{validator}}",
            ),
        ],
    ),
    (
        "Mempool and load shedding",
        "none",
        &[
            (
                "mosaic_mempool_transactions{job=\"mosaic\"}",
                "mempool, validator {{validator}}",
            ),
            (
                "rate(mosaic_api_unavailable_responses_total{job=\"mosaic\"}[1m])",
                "503/s, validator {{validator}}",
            ),
        ],
    ),
    (
        "Validators up and connected peers",
        "none",
        &[
            ("up{job=\"mosaic\"}", "scraped, validator {{validator}}"),
            (
                "mosaic_peers_connected{job=\"mosaic\"}",
                "peers, validator {{validator}}",
            ),
        ],
    ),
    (
        "Fragments: scrub repairs",
        "none",
        &[
            (
                "increase(mosaic_scrub_fragments_missing_total{job=\"mosaic\"}[15m])",
                "found bad, validator {{validator}}",
            ),
            (
                "increase(mosaic_scrub_fragments_repaired_total{job=\"mosaic\"}[15m])",
                "repaired, validator {{validator}}",
            ),
            (
                "increase(mosaic_scrub_repairs_failed_total{job=\"mosaic\"}[15m])",
                "repairs failed, validator {{validator}}",
            ),
        ],
    ),
];

/// Host and port of an API URL (`http://127.0.0.1:8000` -> `127.0.0.1:8000`).
fn target(api: &str) -> &str {
    let rest = api.split_once("://").map_or(api, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// The scrape config for `file`'s validators.
pub fn prometheus(file: &TestnetFile) -> String {
    // JSON strings are YAML double-quoted scalars: no value can break the file.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = format!(
        "# Prometheus scrape config for the Mosaic testnet {} (written by `mosaic testnet init`).\n\
         # prometheus --config.file=prometheus.yml   (docs/DEPLOY.md, \"Monitoring\")\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         scrape_configs:\n  - job_name: mosaic\n    metrics_path: /metrics\n    static_configs:\n",
        file.chain_id.replace('\n', " ")
    );
    for node in &file.nodes {
        out += &format!(
            "      - targets: [{}]\n        labels: {{ validator: {}, chain: {} }}\n",
            quote(target(&node.api)),
            quote(&node.index.to_string()),
            quote(&file.chain_id),
        );
    }
    out
}

/// A Grafana dashboard (import it, choosing the Prometheus data source).
pub fn grafana(file: &TestnetFile) -> Value {
    let panels: Vec<Value> = PANELS
        .iter()
        .enumerate()
        .map(|(i, (title, unit, queries))| {
            let targets: Vec<Value> = queries
                .iter()
                .zip('A'..)
                .map(|((expr, legend), id)| {
                    json!({
                        "datasource": { "type": "prometheus", "uid": "${DS_PROMETHEUS}" },
                        "expr": expr,
                        "legendFormat": legend,
                        "refId": id.to_string(),
                    })
                })
                .collect();
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": { "type": "prometheus", "uid": "${DS_PROMETHEUS}" },
                "gridPos": { "h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8 },
                "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
                "options": { "legend": { "displayMode": "list", "placement": "bottom" } },
                "targets": targets,
            })
        })
        .collect();
    json!({
        "__inputs": [{
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }],
        "title": format!("Mosaic testnet {}", file.chain_id),
        "uid": null,
        "tags": ["mosaic"],
        "timezone": "browser",
        "refresh": "5s",
        "time": { "from": "now-30m", "to": "now" },
        "schemaVersion": 39,
        "panels": panels,
    })
}

/// Writes both files under `dir/monitoring/`; returns the folder.
pub fn write(dir: &Path, file: &TestnetFile) -> Result<PathBuf> {
    let folder = dir.join("monitoring");
    fs::create_dir_all(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
    fs::write(folder.join("prometheus.yml"), prometheus(file))
        .with_context(|| format!("cannot write {}/prometheus.yml", folder.display()))?;
    fs::write(
        folder.join("grafana-dashboard.json"),
        serde_json::to_string_pretty(&grafana(file))? + "\n",
    )
    .with_context(|| format!("cannot write {}/grafana-dashboard.json", folder.display()))?;
    Ok(folder)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::testnet::NodeEntry;

    fn file() -> TestnetFile {
        TestnetFile {
            chain_id: "mosaic-testnet".into(),
            nodes: (0..4)
                .map(|i| NodeEntry {
                    index: i,
                    api: format!("http://127.0.0.1:{}", 8000 + i),
                    p2p: format!("/ip4/127.0.0.1/tcp/{}", 9000 + i),
                    peer_id: String::new(),
                })
                .collect(),
            local: true,
            netns: None,
        }
    }

    #[test]
    fn the_scrape_config_names_every_validator() {
        let yml = prometheus(&file());
        for i in 0..4 {
            assert!(
                yml.contains(&format!(
                    "- targets: [\"127.0.0.1:{}\"]\n        labels: {{ validator: \"{i}\", chain: \"mosaic-testnet\" }}",
                    8000 + i
                )),
                "{yml}"
            );
        }
        assert!(yml.contains("job_name: mosaic"));
    }

    #[test]
    fn every_dashboard_query_names_a_metric_the_node_exports() {
        let exported = mosaic_node::metrics::Metrics::new().render();
        let dashboard = grafana(&file());
        let panels = dashboard["panels"].as_array().unwrap();
        assert_eq!(panels.len(), PANELS.len());
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut found = 0;
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("mosaic_") {
                        assert!(
                            exported.lines().any(|l| l.starts_with(word)),
                            "{word} (in {expr}) is not in the node's /metrics"
                        );
                        found += 1;
                    }
                }
                assert!(found > 0 || expr.starts_with("up{"), "{expr}");
            }
        }
    }
}
