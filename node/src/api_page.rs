//! The operator's page: `GET /` on every validator's API, the testnet at a glance.
//!
//! The page is built into the binary ([`PAGE_JS`], [`PAGE_CSS`]: no CDN, no build
//! step, works offline). Its first answer is rendered here with every value
//! escaped, so that with JavaScript off it still shows the validator set, the view
//! changes and fragment availability (and reloads every few seconds); with
//! JavaScript on, `page.js` polls `GET /v1/overview` twice a second and the
//! lookups ask the existing bounded endpoints (`/v1/blocks/{h}?view=hashes`,
//! `/v1/transactions/{hash}`, `/v1/accounts/{address}`). The answers carry a
//! Content-Security-Policy that runs no inline script, so a hostile string that
//! escaped escaping would still not run.

use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, ApiState, ok};
use crate::chain::lock;
use crate::overview::REPORT_RANGES_MAX;

/// The page's script.
pub const PAGE_JS: &str = include_str!("page/page.js");
/// The page's style sheet.
pub const PAGE_CSS: &str = include_str!("page/page.css");
/// A peer whose last report is older than this (milliseconds) is shown as down,
/// even if its connection has not closed yet.
pub const REPORT_FRESH_MS: u64 = 3_000;
/// Height ranges listed per good-fragment count at most.
const AVAILABILITY_RANGES_MAX: usize = 64;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `GET /v1/overview`: the validator set as this validator sees it and as each
/// peer last reported, the last minutes of commits, view changes, and fragment
/// availability (bounded: n validators, 300 seconds, 32 view changes).
pub async fn overview(State(state): State<ApiState>) -> ApiResult {
    Ok(ok(overview_value(&state)))
}

/// Everything the page shows, as JSON.
pub fn overview_value(state: &ApiState) -> Value {
    let now = Instant::now();
    let (tip, tip_hash, mempool, backlog) = {
        let shared = lock(&state.shared);
        (
            shared.tip.height,
            shared.tip.hash,
            shared.mempool.len(),
            shared.backlog.queued(),
        )
    };
    let live = state.live_status();
    let snapshot = state.overview.snapshot(now);
    let scrub = &state.metrics.scrub;
    let (own_unrepaired, own_more) = scrub.unrepaired.ranges(REPORT_RANGES_MAX);
    let me = state.info.index as usize;
    let mut holdings: Vec<Option<Holding>> = Vec::new();
    let validators: Vec<Value> = state
        .info
        .genesis
        .validators
        .iter()
        .zip(&state.info.validator_peers)
        .enumerate()
        .map(|(i, (v, peer))| {
            let mut row = json!({
                "index": i,
                "name": v.name,
                "public_key": v.public_key.to_string(),
                "peer_id": peer.to_string(),
                "self": i == me,
            });
            if i == me {
                row["connected"] = json!(true);
                row["reachable"] = json!(true);
                row["height"] = json!(tip);
                row["view"] = json!(live.view);
                row["primary"] = json!(live.primary);
                row["view_changing"] = json!(live.view_changing);
                row["peers"] = json!(live.peers.len());
                row["syncing"] = json!(live.syncing);
                row["commit_age_ms"] = json!(snapshot.commit_age_ms);
                row["scrub_position"] = json!(scrub.position.get());
                row["scrub_passes"] = json!(scrub.passes.get());
                row["unrepaired"] = json!(own_unrepaired);
                row["unrepaired_more"] = json!(own_more);
                row["report_age_ms"] = Value::Null;
                holdings.push(Some(Holding {
                    height: tip,
                    unrepaired: own_unrepaired.clone(),
                    more: own_more,
                    syncing: live.syncing,
                }));
                return row;
            }
            let connected = live.peers.iter().any(|p| *p == peer.to_string());
            let reported = snapshot.reports.get(i).cloned().flatten();
            let fresh = reported
                .as_ref()
                .is_some_and(|r| r.age_ms <= REPORT_FRESH_MS);
            let reachable = connected && fresh;
            row["connected"] = json!(connected);
            row["reachable"] = json!(reachable);
            match reported {
                Some(r) => {
                    row["report_age_ms"] = json!(r.age_ms);
                    row["height"] = json!(r.height);
                    row["view"] = json!(r.report.view);
                    row["primary"] = json!(r.report.primary);
                    row["view_changing"] = json!(r.report.view_changing);
                    row["peers"] = json!(r.report.peers);
                    row["syncing"] = json!(r.report.syncing);
                    // Its age when it reported, plus the report's age.
                    row["commit_age_ms"] =
                        json!(r.report.commit_age_ms.map(|a| a.saturating_add(r.age_ms)));
                    row["scrub_position"] = json!(r.report.scrub_position);
                    row["scrub_passes"] = json!(r.report.scrub_passes);
                    row["unrepaired"] = json!(r.report.unrepaired);
                    row["unrepaired_more"] = json!(r.report.unrepaired_more);
                    holdings.push(reachable.then(|| Holding {
                        height: r.height,
                        unrepaired: r.report.unrepaired.clone(),
                        more: r.report.unrepaired_more,
                        syncing: r.report.syncing,
                    }));
                }
                None => {
                    row["report_age_ms"] = Value::Null;
                    holdings.push(None);
                }
            }
            row
        })
        .collect();
    json!({
        "chain_id": state.info.chain.to_string(),
        "validator": me,
        "height": tip,
        "tip_hash": tip_hash.to_string(),
        "view": live.view,
        "primary": live.primary,
        "view_changing": live.view_changing,
        "syncing": live.syncing,
        "network_height": live.network_height.max(tip),
        "data_shards": state.info.data_shards,
        "mempool_transactions": mempool,
        "backlog": backlog,
        "validators": validators,
        "history": snapshot.history,
        "view_changes": snapshot.view_changes,
        "scrub": {
            "position": scrub.position.get(),
            "passes": scrub.passes.get(),
            "checked": scrub.checked.get(),
            "missing": scrub.missing.get(),
            "repaired": scrub.repaired.get(),
            "failed": scrub.failed.get(),
        },
        "availability": availability(tip, &holdings, state.info.data_shards),
    })
}

/// What a validator holds, as far as this validator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The height it executed.
    pub height: u64,
    /// Heights its scrub found bad and could not repair yet (sorted, disjoint).
    pub unrepaired: Vec<[u64; 2]>,
    /// Whether it has more unrepaired heights than listed.
    pub more: bool,
    /// Whether it is catching up (its missing heights above its height are real
    /// gaps, not heights committed since its report).
    pub syncing: bool,
}

/// Heights by how many validators hold a good own fragment of them, as far as this
/// validator knows: a validator counts for the heights up to the one it reported,
/// except those its scrub found bad and could not repair; one that is down or has
/// not reported counts for none (`None` in `holdings`, by validator index).
/// Heights above the lowest height a validator in step reported are too recent to
/// judge (reports are up to a second or two old): they are given as `recent`, not
/// counted. A validator catching up counts as lacking what it has not reached.
pub fn availability(tip: u64, holdings: &[Option<Holding>], k: usize) -> Value {
    let n = holdings.len();
    let incomplete: Vec<usize> = holdings
        .iter()
        .enumerate()
        .filter(|(_, h)| h.as_ref().is_some_and(|h| h.more))
        .map(|(i, _)| i)
        .collect();
    let settled = holdings
        .iter()
        .flatten()
        .filter(|h| !h.syncing)
        .map(|h| h.height)
        .min()
        .unwrap_or(tip)
        .min(tip);
    let recent = (settled < tip).then(|| [settled + 1, tip]);
    let counted_total = holdings.iter().flatten().count();
    if settled == 0 {
        return json!({
            "tip": tip, "settled": 0, "recent": recent, "validators": n, "counted": counted_total,
            "data_shards": k, "counts": [], "incomplete": incomplete,
        });
    }
    let tip = settled;
    // Boundaries where a validator stops counting (+1 at `from`, -1 after `to`
    // for each range it lacks), swept once in height order.
    let mut events: Vec<(u64, i64)> = Vec::new();
    let mut counted = 0i64;
    for Holding {
        height, unrepaired, ..
    } in holdings.iter().flatten()
    {
        counted += 1;
        let held_to = (*height).min(tip);
        if held_to < tip {
            events.push((held_to + 1, 1));
            events.push((tip + 1, -1));
        }
        for &[from, to] in unrepaired {
            let (from, to) = (from.max(1), to.min(held_to));
            if from <= to {
                events.push((from, 1));
                events.push((to + 1, -1));
            }
        }
    }
    events.sort_unstable();
    let mut by_count: Vec<(i64, u64, Vec<[u64; 2]>, bool)> = Vec::new();
    let mut lacking = 0i64;
    let mut start = 1u64;
    let mut i = 0;
    while start <= tip {
        while i < events.len() && events[i].0 <= start {
            lacking += events[i].1;
            i += 1;
        }
        let end = events.get(i).map_or(tip, |e| (e.0 - 1).min(tip));
        let good = counted - lacking;
        let slot = match by_count.iter().position(|b| b.0 == good) {
            Some(slot) => slot,
            None => {
                by_count.push((good, 0, Vec::new(), false));
                by_count.len() - 1
            }
        };
        let bucket = &mut by_count[slot];
        bucket.1 += end - start + 1;
        if bucket.2.len() < AVAILABILITY_RANGES_MAX {
            bucket.2.push([start, end]);
        } else {
            bucket.3 = true;
        }
        start = end + 1;
    }
    by_count.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
    let counts: Vec<Value> = by_count
        .into_iter()
        .map(|(good, heights, ranges, more)| {
            json!({
                "good": good,
                "heights": heights,
                "rebuildable": good >= k as i64,
                "ranges": ranges,
                "ranges_more": more,
            })
        })
        .collect();
    json!({
        "tip": recent.map_or(tip, |r| r[1]),
        "settled": settled,
        "recent": recent,
        "validators": n,
        "counted": counted,
        "data_shards": k,
        "counts": counts,
        "incomplete": incomplete,
    })
}

/// `GET /assets/page.js` and `GET /assets/page.css`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

/// See [`script`].
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The query of `GET /lookup`.
#[derive(Debug, serde::Deserialize)]
pub struct LookupQuery {
    kind: String,
    q: String,
}

/// `GET /lookup?kind=block|tx|account&q=...`: the forms' target with JavaScript
/// off: a redirect to the JSON endpoint that answers the lookup (built only from a
/// parsed height or 64 hex characters, so it never leaves this API).
pub async fn lookup(
    query: Result<axum::extract::Query<LookupQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let axum::extract::Query(LookupQuery { kind, q }) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad lookup ({}): use /lookup?kind=block|tx|account&q=...",
            e.body_text()
        ))
    })?;
    let q = q.trim();
    let target = match kind.as_str() {
        "block" => {
            let height: u64 = q.parse().map_err(|_| {
                ApiError::bad_request("a block lookup takes a height (a non-negative integer)")
            })?;
            format!("/v1/blocks/{height}?view=hashes")
        }
        "tx" | "account" if is_hex64(q) => {
            let q = q.to_ascii_lowercase();
            if kind == "tx" {
                format!("/v1/transactions/{q}")
            } else {
                format!("/v1/accounts/{q}")
            }
        }
        "tx" | "account" => {
            return Err(ApiError::bad_request(
                "a transfer or account lookup takes 64 hex characters",
            ));
        }
        _ => {
            return Err(ApiError::bad_request("kind must be block, tx or account"));
        }
    };
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response())
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// HTML-escapes `text` for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /`: the page, rendered with the overview of now.
pub async fn page(State(state): State<ApiState>) -> Response {
    let html = render(&overview_value(&state));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => escape(s),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => escape(&other.to_string()),
    }
}

fn age(value: &Value) -> String {
    match value.as_u64() {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} s", ms / 1000),
    }
}

fn ranges_text(ranges: &Value) -> String {
    let list: Vec<String> = ranges
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| match (r[0].as_u64(), r[1].as_u64()) {
                    (Some(a), Some(b)) if a == b => a.to_string(),
                    (Some(a), Some(b)) => format!("{a}-{b}"),
                    _ => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The page's HTML for `overview` (an [`overview_value`]), every value escaped.
pub fn render(o: &Value) -> String {
    let mut rows = String::new();
    for v in o["validators"].as_array().into_iter().flatten() {
        let state = if v["self"] == json!(true) {
            "this validator"
        } else if v["reachable"] == json!(true) {
            "up"
        } else if v["connected"] == json!(true) {
            "no recent report"
        } else {
            "down"
        };
        let class = if state == "down" || state == "no recent report" {
            "down"
        } else {
            "up"
        };
        let is_primary = v["index"] == o["primary"];
        rows.push_str(&format!(
            "<tr class=\"{class}\" data-index=\"{index}\"><td>{index}</td><td class=\"name\">{name}{primary}</td>\
             <td class=\"state\">{state}</td><td>{height}</td><td>{view}</td><td>{peers}</td><td>{syncing}</td>\
             <td>{commit}</td><td>{report}</td><td class=\"key\" title=\"{key}\">{key_short}</td></tr>\n",
            index = text(&v["index"]),
            name = text(&v["name"]),
            primary = if is_primary { " <span class=\"badge\">primary</span>" } else { "" },
            height = text(&v["height"]),
            view = text(&v["view"]),
            peers = text(&v["peers"]),
            syncing = text(&v["syncing"]),
            commit = age(&v["commit_age_ms"]),
            report = if v["self"] == json!(true) { "-".into() } else { age(&v["report_age_ms"]) },
            key = text(&v["public_key"]),
            key_short = escape(&v["public_key"].as_str().unwrap_or("").chars().take(12).collect::<String>()),
        ));
    }
    let mut changes = String::new();
    for c in o["view_changes"].as_array().into_iter().flatten().rev() {
        changes.push_str(&format!(
            "<li data-t=\"{t}\">view {view} (primary {primary}): {reason}</li>\n",
            t = text(&c["t"]),
            view = text(&c["view"]),
            primary = text(&c["primary"]),
            reason = text(&c["reason"]),
        ));
    }
    if changes.is_empty() {
        changes.push_str("<li>none since this validator started</li>\n");
    }
    let mut fragments = String::new();
    let avail = &o["availability"];
    for b in avail["counts"].as_array().into_iter().flatten() {
        fragments.push_str(&format!(
            "<tr class=\"{class}\"><td>{good} of {n}</td><td>{heights}</td><td>{ranges}</td></tr>\n",
            class = if b["rebuildable"] == json!(true) { "up" } else { "down" },
            good = text(&b["good"]),
            n = text(&avail["validators"]),
            heights = text(&b["heights"]),
            ranges = ranges_text(&b["ranges"]),
        ));
    }
    let mut notes = Vec::new();
    if let (Some(from), Some(to)) = (avail["recent"][0].as_u64(), avail["recent"][1].as_u64()) {
        notes.push(format!(
            "Heights {from}-{to}: too recent to judge (not every validator has reported them yet)."
        ));
    }
    if let Some(cut) = avail["incomplete"].as_array().filter(|c| !c.is_empty()) {
        let list: Vec<String> = cut.iter().map(text).collect();
        notes.push(format!(
            "Validators {} have more unrepaired heights than they list: the counts above are upper bounds.",
            list.join(", ")
        ));
    }
    let notes = notes.join(" ");
    let scrub = &o["scrub"];
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mosaic validator {me}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/page.css">
<noscript><meta http-equiv="refresh" content="5"></noscript>
<script src="/assets/page.js" defer></script>
</head>
<body>
<header>
<h1>Mosaic <span id="chain" title="chain id">{chain}</span></h1>
<p id="summary">Validator <b id="me">{me}</b> · height <b id="height">{height}</b> · view <b id="view">{view}</b> · primary <b id="primary">{primary}</b> · mempool <b id="mempool">{mempool}</b> · backlog <b id="backlog">{backlog}</b></p>
<p id="live" class="muted"><noscript>JavaScript is off: this page reloads every 5 s.</noscript></p>
</header>
<main>
<section id="validators-section">
<h2>Validators</h2>
<div class="scroll"><table id="validators">
<thead><tr><th>#</th><th>name</th><th>state</th><th>height</th><th>view</th><th>peers</th><th>syncing</th><th>last commit</th><th>report age</th><th>key</th></tr></thead>
<tbody>
{rows}</tbody></table></div>
<p class="muted">Rows other than this validator's are what each peer last reported of itself (once a second); down: no connection from here, or no report for 3 s.</p>
</section>
<section id="commits-section">
<h2>Commits</h2>
<div id="chart" class="chart"><p class="muted">The chart needs JavaScript; <a href="/metrics">/metrics</a> has the counters.</p></div>
<p id="legend" class="muted"></p>
<p id="rates" class="muted"></p>
</section>
<section id="view-changes-section">
<h2>View changes</h2>
<ul id="view-changes">
{changes}</ul>
</section>
<section id="fragments-section">
<h2>Fragments</h2>
<p>Heights by validators holding a good own fragment (k = {k} rebuild a block), as this validator knows from the reports.</p>
<div class="scroll"><table id="fragments"><thead><tr><th>good fragments</th><th>heights</th><th>ranges</th></tr></thead>
<tbody>
{fragments}</tbody></table></div>
<p id="fragments-note" class="muted">{notes}</p>
<p id="scrub" class="muted">This validator's scrub: at height {scrub_position}, {scrub_passes} passes, {scrub_checked} checked, {scrub_missing} found bad, {scrub_repaired} repaired, {scrub_failed} repairs failed.</p>
</section>
<section id="lookup-section">
<h2>Lookup</h2>
<form class="lookup" action="/lookup" method="get"><input type="hidden" name="kind" value="block"><label>Block <input name="q" inputmode="numeric" placeholder="height" required></label> <button>Show</button></form>
<form class="lookup" action="/lookup" method="get"><input type="hidden" name="kind" value="tx"><label>Transfer <input name="q" placeholder="64 hex characters" required></label> <button>Show</button></form>
<form class="lookup" action="/lookup" method="get"><input type="hidden" name="kind" value="account"><label>Account <input name="q" placeholder="public key, 64 hex characters" required></label> <button>Show</button></form>
<div id="result"></div>
</section>
</main>
</body>
</html>
"#,
        me = text(&o["validator"]),
        chain = text(&o["chain_id"]),
        height = text(&o["height"]),
        view = text(&o["view"]),
        primary = text(&o["primary"]),
        mempool = text(&o["mempool_transactions"]),
        backlog = text(&o["backlog"]),
        k = text(&o["data_shards"]),
        scrub_position = text(&scrub["position"]),
        scrub_passes = text(&scrub["passes"]),
        scrub_checked = text(&scrub["checked"]),
        scrub_missing = text(&scrub["missing"]),
        scrub_repaired = text(&scrub["repaired"]),
        scrub_failed = text(&scrub["failed"]),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn hostile_names_are_escaped_in_the_page() {
        let hostile = r#"<img src=x onerror="alert(1)">'"&"#;
        let overview = json!({
            "chain_id": hostile, "validator": 0, "height": 3, "view": 0, "primary": 0,
            "mempool_transactions": 0, "backlog": 0, "data_shards": 2,
            "validators": [
                {"index": 0, "name": hostile, "public_key": hostile, "self": true, "height": 3},
                {"index": 1, "name": "</td></tr><script>x()</script>", "public_key": "k", "self": false,
                 "connected": false, "reachable": false, "height": null},
            ],
            "view_changes": [{"t": 1, "view": 1, "primary": 1, "reason": hostile}],
            "availability": {"validators": 2, "counts": [{"good": 1, "heights": 3, "rebuildable": false, "ranges": [[1, 3]]}]},
            "scrub": {"position": hostile},
        });
        let html = render(&overview);
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script>x()"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#39;&quot;&amp;"));
        assert!(html.contains("&lt;/td&gt;&lt;/tr&gt;&lt;script&gt;x()&lt;/script&gt;"));
        // The only script is the page's own file.
        assert_eq!(html.matches("<script").count(), 1);
    }

    fn holding(height: u64, unrepaired: Vec<[u64; 2]>) -> Option<Holding> {
        Some(Holding {
            height,
            unrepaired,
            more: false,
            syncing: false,
        })
    }

    #[test]
    fn availability_counts_validators_per_height() {
        // 4 validators, k = 2, tip 10: validator 1 lacks 3-4, validator 2 is
        // catching up at height 8 and lacks 4, validator 3 is down.
        let mut behind = holding(8, vec![[4, 4]]);
        behind.as_mut().unwrap().syncing = true;
        let holdings = vec![holding(10, vec![]), holding(10, vec![[3, 4]]), behind, None];
        let a = availability(10, &holdings, 2);
        let counts = a["counts"].as_array().unwrap();
        let by_good: Vec<(i64, u64, Value)> = counts
            .iter()
            .map(|c| {
                (
                    c["good"].as_i64().unwrap(),
                    c["heights"].as_u64().unwrap(),
                    c["ranges"].clone(),
                )
            })
            .collect();
        assert_eq!(
            by_good,
            vec![
                (3, 6, json!([[1, 2], [5, 8]])),
                (2, 3, json!([[3, 3], [9, 10]])),
                (1, 1, json!([[4, 4]])),
            ]
        );
        assert_eq!(a["counted"], json!(3));
        assert_eq!(a["recent"], Value::Null);
        assert_eq!(counts[2]["rebuildable"], json!(false));
        let total: u64 = by_good.iter().map(|b| b.1).sum();
        assert_eq!(total, 10, "every height is in exactly one count");
    }

    #[test]
    fn heights_newer_than_a_report_are_recent_not_missing() {
        // Validator 1 reported height 8 a moment ago while this one is at 10.
        let holdings = vec![holding(10, vec![]), holding(8, vec![[2, 2]])];
        let a = availability(10, &holdings, 1);
        assert_eq!(a["recent"], json!([9, 10]));
        assert_eq!(a["settled"], json!(8));
        assert_eq!(
            a["counts"],
            json!([
                {"good": 2, "heights": 7, "rebuildable": true, "ranges": [[1, 1], [3, 8]], "ranges_more": false},
                {"good": 1, "heights": 1, "rebuildable": true, "ranges": [[2, 2]], "ranges_more": false},
            ])
        );
    }

    #[test]
    fn availability_of_an_empty_chain_and_of_cut_off_lists() {
        assert_eq!(
            availability(0, &[holding(0, vec![])], 1)["counts"],
            json!([])
        );
        let mut cut = holding(5, vec![[4, 5]]);
        cut.as_mut().unwrap().more = true;
        let a = availability(5, &[holding(9, vec![]), cut], 1);
        assert_eq!(a["incomplete"], json!([1]));
        assert_eq!(
            a["counts"],
            json!([
                {"good": 2, "heights": 3, "rebuildable": true, "ranges": [[1, 3]], "ranges_more": false},
                {"good": 1, "heights": 2, "rebuildable": true, "ranges": [[4, 5]], "ranges_more": false},
            ])
        );
    }
}
