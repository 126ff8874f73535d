//! `mosaic block` for people: a summary of a block answer (`/v1/blocks/{h}`).

use std::fmt::Write as _;

use serde_json::Value;

/// Transfers listed before "... and N more".
const TRANSFERS_SHOWN: usize = 20;

/// A readable summary of `block` (the node's JSON answer), naming validators by
/// `status` (the node's `/v1/status`, when it answered) and linking to `page`.
pub fn describe(block: &Value, status: Option<&Value>, page: &str) -> String {
    let header = &block["header"];
    let name = |index: &Value| -> String {
        let Some(i) = index.as_u64() else {
            return "?".into();
        };
        let named = status
            .and_then(|s| s["validators"].as_array())
            .and_then(|vs| vs.iter().find(|v| v["index"].as_u64() == Some(i)))
            .and_then(|v| v["name"].as_str());
        match named {
            Some(n) => format!("{i} ({n})"),
            None => i.to_string(),
        }
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "block {}", text(&block["height"]));
    let _ = writeln!(out, "  hash         {}", text(&block["hash"]));
    let _ = writeln!(out, "  parent       {}", text(&header["parent"]));
    let _ = writeln!(out, "  proposer     {}", name(&header["proposer"]));
    let _ = writeln!(out, "  view         {}", text(&header["view"]));
    let _ = writeln!(out, "  transfers    {}", text(&header["tx_count"]));
    let _ = writeln!(out, "  state root   {}", text(&header["state_root"]));
    let certificate = &block["certificate"];
    let signers: Vec<String> = certificate["signatures"]
        .as_array()
        .map(|sigs| {
            sigs.iter()
                .map(|s| name(s.get(0).unwrap_or(&Value::Null)))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  certificate  view {}, {} signers: {}",
        text(&certificate["view"]),
        signers.len(),
        signers.join(", ")
    );
    let params = &header["fragments"]["params"];
    let _ = writeln!(
        out,
        "  fragments    {} made, any {} rebuild the body ({} bytes); root {}",
        text(&params["total_shards"]),
        text(&params["data_shards"]),
        text(&params["body_len"]),
        text(&header["fragments"]["root"]),
    );
    if block["body_rebuilt_from_fragments"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "  body         rebuilt from fragments (this node no longer keeps it)"
        );
    }
    let transfers = block["transactions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for tx in transfers.iter().take(TRANSFERS_SHOWN) {
        let t = &tx["transfer"];
        let _ = writeln!(
            out,
            "    {} -> {}  {}  (nonce {})",
            short(&text(&t["from"])),
            short(&text(&t["to"])),
            text(&t["amount"]),
            text(&t["nonce"]),
        );
    }
    if transfers.len() > TRANSFERS_SHOWN {
        let _ = writeln!(
            out,
            "    ... and {} more (--json lists them all)",
            transfers.len() - TRANSFERS_SHOWN
        );
    }
    let _ = write!(out, "  page         {page}");
    out
}

fn short(key: &str) -> String {
    if key.len() > 16 {
        format!("{}...", &key[..key.floor_char_boundary(12)])
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_block_reads_as_a_summary() {
        let block = json!({
            "height": 3, "hash": "ab12",
            "header": {"parent": "cd34", "proposer": 1, "view": 0, "tx_count": 25, "state_root": "ef56",
                        "fragments": {"params": {"total_shards": 4, "data_shards": 2, "body_len": 900}, "root": "77"}},
            "certificate": {"view": 0, "signatures": [[0, "s"], [1, "s"], [2, "s"]]},
            "transactions": (0..25).map(|i| json!({"transfer": {"from": "a".repeat(64), "to": "b".repeat(64), "amount": i, "nonce": i}})).collect::<Vec<_>>(),
        });
        let status =
            json!({"validators": [{"index": 0, "name": "v0"}, {"index": 1, "name": "v1"}]});
        let text = describe(&block, Some(&status), "http://x/?block=3");
        assert!(text.starts_with("block 3\n"), "{text}");
        assert!(text.contains("proposer     1 (v1)"), "{text}");
        assert!(text.contains("3 signers: 0 (v0), 1 (v1), 2"), "{text}");
        assert!(
            text.contains("4 made, any 2 rebuild the body (900 bytes)"),
            "{text}"
        );
        assert!(
            text.contains("aaaaaaaaaaaa... -> bbbbbbbbbbbb...  19  (nonce 19)"),
            "{text}"
        );
        assert!(!text.contains("(nonce 20)"), "{text}");
        assert!(text.contains("... and 5 more"), "{text}");
        assert!(text.ends_with("page         http://x/?block=3"), "{text}");
    }
}
