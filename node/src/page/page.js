// The operator's page: polls /v1/overview and redraws; lookups ask the bounded
// JSON endpoints. Every value reaches the page through textContent or an
// attribute set by the DOM, never through markup.
"use strict";

(function () {
  const POLL_MS = 500;
  const CHART_SECONDS = 300;
  let last = null;
  let polling = false;
  let failures = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function show(value) {
    if (value === null || value === undefined) return "-";
    if (value === true) return "yes";
    if (value === false) return "no";
    return String(value);
  }

  function age(ms) {
    if (typeof ms !== "number") return "-";
    return ms < 10000 ? (ms / 1000).toFixed(1) + " s" : Math.floor(ms / 1000) + " s";
  }

  function setText(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = show(value);
  }

  function ranges(list) {
    if (!Array.isArray(list) || list.length === 0) return "none";
    return list.map((r) => (r[0] === r[1] ? String(r[0]) : r[0] + "-" + r[1])).join(", ");
  }

  function link(query, value, text) {
    return el("a", { href: "/?" + query + "=" + encodeURIComponent(String(value)) }, text === undefined ? String(value) : text);
  }

  function stateOf(v) {
    if (v.self) return ["this validator", "up"];
    if (v.reachable) return ["up", "up"];
    if (v.connected) return ["no recent report", "down"];
    return ["down", "down"];
  }

  function drawValidators(o) {
    const body = document.querySelector("#validators tbody");
    const rows = (o.validators || []).map((v) => {
      const [state, cls] = stateOf(v);
      const name = el("td", { class: "name" }, show(v.name));
      if (v.index === o.primary) name.append(" ", el("span", { class: "badge" }, "primary"));
      const key = String(v.public_key || "");
      return el(
        "tr",
        { class: cls, "data-index": v.index, "data-state": v.self ? "self" : cls },
        el("td", {}, show(v.index)),
        name,
        el("td", { class: "state" }, state + (v.view_changing ? " (changing view)" : "")),
        el("td", {}, show(v.height)),
        el("td", { class: !v.self && v.view !== o.view ? "differs" : null, title: !v.self && v.view !== o.view ? "not this validator's view" : null }, show(v.view)),
        el("td", {}, show(v.peers)),
        el("td", {}, show(v.syncing)),
        el("td", {}, age(v.commit_age_ms)),
        el("td", {}, v.self ? "-" : age(v.report_age_ms)),
        el("td", { class: "key", title: key }, key.slice(0, 12))
      );
    });
    body.replaceChildren(...rows);
  }

  function drawViewChanges(o) {
    const list = document.getElementById("view-changes");
    const items = (o.view_changes || [])
      .slice()
      .reverse()
      .map((c) =>
        el(
          "li",
          { "data-t": c.t },
          new Date(c.t).toLocaleTimeString() + ": view " + show(c.view) + " (primary " + show(c.primary) + "): " + show(c.reason)
        )
      );
    if (items.length === 0) items.push(el("li", {}, "none since this validator started"));
    list.replaceChildren(...items);
  }

  function drawFragments(o) {
    const a = o.availability || {};
    const body = document.querySelector("#fragments tbody");
    const rows = (a.counts || []).map((b) =>
      el(
        "tr",
        { class: b.rebuildable ? "up" : "down" },
        el("td", {}, show(b.good) + " of " + show(a.validators)),
        el("td", {}, show(b.heights)),
        el("td", {}, ranges(b.ranges) + (b.ranges_more ? ", ..." : ""))
      )
    );
    body.replaceChildren(...rows);
    const notes = [];
    if (Array.isArray(a.recent)) notes.push("Heights " + a.recent[0] + "-" + a.recent[1] + ": too recent to judge (not every validator has reported them yet).");
    if (Array.isArray(a.incomplete) && a.incomplete.length > 0) {
      notes.push("Validators " + a.incomplete.join(", ") + " have more unrepaired heights than they list: the counts above are upper bounds.");
    }
    setText("fragments-note", notes.join(" "));
    const s = o.scrub || {};
    setText(
      "scrub",
      "This validator's scrub: at height " + show(s.position) + ", " + show(s.passes) + " passes, " + show(s.checked) +
        " checked, " + show(s.missing) + " found bad, " + show(s.repaired) + " repaired, " + show(s.failed) + " repairs failed."
    );
  }

  function drawChart(o) {
    const history = (o.history || []).slice(-CHART_SECONDS);
    // The window grows with the history, from a minute up to five.
    const span = Math.max(60, history.length);
    const box = document.getElementById("chart");
    const W = 600, H = 160, P = 2;
    // Stretched to the box's width; strokes keep their width.
    const chart = svg("svg", {
      viewBox: "0 0 " + W + " " + H,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": "transfers committed per second and commit latency",
    });
    const maxRate = Math.max(1, ...history.map((s) => s.transfers));
    const maxMs = Math.max(1, ...history.map((s) => s.p99_ms || 0));
    const step = (W - 2 * P) / span;
    const offset = span - history.length;
    history.forEach((s, i) => {
      const h = ((H - 2 * P) * s.transfers) / maxRate;
      chart.append(svg("rect", { x: P + (offset + i) * step, y: H - P - h, width: Math.max(step * 0.85, 0.5), height: h, class: "bar" }));
    });
    for (const [key, cls] of [["p50_ms", "p50"], ["p99_ms", "p99"]]) {
      // A second without commits breaks the line: no latency is drawn across it.
      let points = [];
      const flush = () => {
        if (points.length > 1) chart.append(svg("polyline", { points: points.join(" "), class: cls, "vector-effect": "non-scaling-stroke" }));
        else if (points.length === 1) {
          const [x, y] = points[0].split(",");
          chart.append(svg("circle", { cx: x, cy: y, r: 1.5, class: cls + " dot" }));
        }
        points = [];
      };
      history.forEach((s, i) => {
        if (typeof s[key] === "number") {
          points.push((P + (offset + i + 0.5) * step).toFixed(1) + "," + (H - P - ((H - 2 * P) * s[key]) / maxMs).toFixed(1));
        } else flush();
      });
      flush();
    }
    box.replaceChildren(chart);
    setText(
      "legend",
      "Bars: transfers committed per second (top: " + maxRate + "/s). Lines: p50 (green) and p99 (red) commit latency, proposal seen to executed (top: " +
        maxMs.toFixed(0) + " ms). Last " + history.length + " s, newest at the right."
    );
    const recent = history.slice(-10);
    const sum = (k) => recent.reduce((t, s) => t + (s[k] || 0), 0);
    const secs = Math.max(recent.length, 1);
    const lat = recent.filter((s) => typeof s.p50_ms === "number");
    const worst = (k) => (lat.length ? Math.max(...lat.map((s) => s[k])).toFixed(1) + " ms" : "-");
    setText(
      "rates",
      "Last " + recent.length + " s: " + (sum("transfers") / secs).toFixed(1) + " transfers/s, " + (sum("blocks") / secs).toFixed(1) +
        " blocks/s, p50 up to " + worst("p50_ms") + ", p99 up to " + worst("p99_ms") + ", " + (sum("unavailable") / secs).toFixed(1) +
        " answers of 503/s; mempool " + show(o.mempool_transactions) + ", backlog " + show(o.backlog) + "."
    );
  }

  function draw(o) {
    last = o;
    setText("chain", o.chain_id);
    setText("me", o.validator);
    setText("height", o.height);
    setText("view", o.view_changing ? o.view + " (changing)" : o.view);
    setText("primary", o.primary);
    setText("mempool", o.mempool_transactions);
    setText("backlog", o.backlog);
    drawValidators(o);
    drawViewChanges(o);
    drawFragments(o);
    drawChart(o);
  }

  // A node that takes the connection and never answers must not freeze the page.
  async function fetchWithin(path, ms) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ms);
    try {
      return await fetch(path, { cache: "no-store", signal: abort.signal });
    } catch (e) {
      throw new Error(e && e.name === "AbortError" ? "no answer within " + ms / 1000 + " s" : String((e && e.message) || e));
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const answer = await fetchWithin("/v1/overview", 2000);
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      draw(await answer.json());
      failures = 0;
      setText("live", "Live: updated " + new Date().toLocaleTimeString());
    } catch (e) {
      failures += 1;
      setText("live", "This validator is not answering (" + e.message + "); retried " + failures + " times, retrying.");
    } finally {
      polling = false;
    }
  }

  // Lookups.

  function kv(rows) {
    const table = el("table", { class: "kv" });
    for (const [k, v] of rows) table.append(el("tr", {}, el("th", {}, k), el("td", {}, v instanceof Node ? v : show(v))));
    return table;
  }

  function result(title, ...children) {
    document.getElementById("result").replaceChildren(el("h3", {}, title), ...children);
  }

  async function ask(path) {
    const answer = await fetchWithin(path, 30000);
    let body;
    try {
      body = await answer.json();
    } catch (e) {
      throw new Error("HTTP " + answer.status + ": not JSON");
    }
    if (!answer.ok) throw new Error((body && body.error) || "HTTP " + answer.status);
    return body;
  }

  function nameOf(index) {
    const v = last && (last.validators || []).find((x) => x.index === index);
    return v ? index + " " + show(v.name) : String(index);
  }

  function fragmentHolder(v, height) {
    if (!v.reachable && !v.self) return "unknown (down from here)";
    if ((v.unrepaired || []).some((r) => r[0] <= height && height <= r[1])) return "missing (its scrub could not repair it yet)";
    if (typeof v.height === "number" && v.height < height) return "not yet (at height " + v.height + ")";
    return "held";
  }

  async function showBlock(height) {
    const b = await ask("/v1/blocks/" + encodeURIComponent(height) + "?view=hashes");
    const h = b.header || {};
    const signers = ((b.certificate || {}).signatures || []).map((s) => (Array.isArray(s) ? s[0] : s));
    const signerList = el("span", {}, signers.map(nameOf).join(", ") || "-");
    const transfers = el("ol", { class: "hashes" });
    for (const id of b.transaction_hashes || []) transfers.append(el("li", {}, link("tx", id)));
    const fragments = el("ul", {});
    if (last) {
      for (const v of last.validators || []) fragments.append(el("li", {}, "fragment " + v.index + " (" + show(v.name) + "): " + fragmentHolder(v, b.height)));
    }
    result(
      "Block " + show(b.height),
      kv([
        ["hash", b.hash],
        ["parent", b.height > 1 ? link("block", b.height - 1, String(h.parent)) : show(h.parent)],
        ["next", last && b.height < last.height ? link("block", b.height + 1, "block " + (b.height + 1)) : "-"],
        ["proposer", nameOf(h.proposer)],
        ["view", h.view],
        ["transfers", h.tx_count],
        ["state root", h.state_root],
        ["certificate signers", signerList],
        ["rebuilt from fragments", b.body_rebuilt_from_fragments],
      ]),
      el("h4", {}, "Fragments (k = " + show(last && last.data_shards) + " rebuild it)"),
      fragments,
      el("h4", {}, "Transfers"),
      transfers
    );
  }

  async function showTx(hash) {
    const t = await ask("/v1/transactions/" + encodeURIComponent(hash));
    const rows = [];
    for (const [k, v] of Object.entries(t)) {
      if (k === "height" && typeof v === "number") rows.push([k, link("block", v)]);
      else if ((k === "from" || k === "to") && typeof v === "string") rows.push([k, link("account", v)]);
      else rows.push([k, typeof v === "object" && v !== null ? JSON.stringify(v) : v]);
    }
    const status = el("p", { id: "tx-status", class: "status " + show(t.status) }, show(t.status));
    result("Transfer " + String(hash).slice(0, 16) + "...", status, kv(rows));
  }

  async function showAccount(address) {
    const a = await ask("/v1/accounts/" + encodeURIComponent(address));
    const rows = Object.entries(a).map(([k, v]) => [k, typeof v === "object" && v !== null ? JSON.stringify(v) : v]);
    result("Account " + String(address).slice(0, 16) + "...", kv(rows));
  }

  async function lookup(kind, q) {
    q = String(q || "").trim();
    try {
      if (kind === "block") {
        if (!/^[0-9]{1,20}$/.test(q)) throw new Error("a block lookup takes a height");
        await showBlock(q);
      } else if (kind === "tx" || kind === "account") {
        if (!/^[0-9a-fA-F]{64}$/.test(q)) throw new Error("a " + (kind === "tx" ? "transfer" : "account") + " lookup takes 64 hex characters");
        await (kind === "tx" ? showTx(q.toLowerCase()) : showAccount(q.toLowerCase()));
      }
    } catch (e) {
      result("Lookup failed", el("p", { class: "error" }, e.message));
    }
  }

  function start() {
    for (const form of document.querySelectorAll("form.lookup")) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const data = new FormData(form);
        const kind = String(data.get("kind"));
        const q = String(data.get("q") || "");
        history.pushState(null, "", "/?" + kind + "=" + encodeURIComponent(q));
        lookup(kind, q);
      });
    }
    const fromAddress = () => {
      const params = new URLSearchParams(location.search);
      for (const kind of ["block", "tx", "account"]) {
        if (params.has(kind)) {
          poll().then(() => lookup(kind, params.get(kind)));
          return;
        }
      }
      document.getElementById("result").replaceChildren();
    };
    // Back and forward show the lookup of the address they go to.
    window.addEventListener("popstate", fromAddress);
    fromAddress();
    poll();
    setInterval(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
