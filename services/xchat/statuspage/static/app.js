// Polls status.json every second and redraws the page. Plain DOM calls and textContent
// only (never innerHTML): every value shown comes from the mesh and is treated as text.
"use strict";

const POLL_MS = 1000;
const STALE_MS = 5000;
let lastOk = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function num(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return `${i ? value.toFixed(1) : value} ${units[i]}`;
}

function row(dl, term, ...value) {
  dl.append(el("dt", {}, term), el("dd", {}, ...value));
}

function nodeLine(n) {
  const mark = el("span", { class: n.healthy ? "ok" : "bad" }, n.healthy ? "✓ " : "✗ ");
  const name = n.name || n.monitor;
  if (!n.healthy) return el("div", { class: "node", "data-healthy": "false" }, mark, `${name}: ${n.error || "not ready"}`);
  return el("div", { class: "node", "data-healthy": "true" }, mark,
    `${name} (${n.version || "?"}): in ${num(n.in_msgs_per_s)}/s, out ${num(n.out_msgs_per_s)}/s, ${num(n.connections)} conn.`);
}

function regionCard(r) {
  const m = r.metrics;
  const card = el("article", { class: "region", "data-region": r.region, "data-state": r.state });
  card.append(el("h3", {}, `region ${r.region}`, el("span", { class: "state" }, r.state)));
  const dl = el("dl");
  row(dl, "services", el("span", { class: r.services === "SERVING" ? "ok" : "bad" }, r.services), ` ${r.grpc || ""}`);
  row(dl, "NATS", ...r.nodes.map(nodeLine));
  row(dl, "envelopes/s", `accepted ${num(m.accepted_per_s)}, delivered ${num(m.delivered_per_s)}, acked ${num(m.acknowledged_per_s)}`);
  row(dl, "publish errors/s", num(m.publish_errors_per_s));
  row(dl, "online devices", num(m.online_devices, 0));
  row(dl, "backlog", `${num(m.backlog_messages, 0)} msgs, ${bytes(m.backlog_bytes)}`);
  row(dl, "store", m.store_up === 1 ? el("span", { class: "ok" }, "reachable") : el("span", { class: "bad" }, m.up ? "unreachable" : `metrics: ${m.error || "down"}`));
  card.append(dl);
  return card;
}

function streamRow(s) {
  const leader = s.leader ? `${s.leader}${s.leader_region ? ` (region ${s.leader_region})` : ""}` : "none (election)";
  const replicas = s.replicas.map(
    (r) => `${r.name}${r.current ? "" : " (behind)"}: ${r.lag}, ${r.active_ms === null ? "–" : `${r.active_ms} ms`}`).join("; ");
  return el("tr", { "data-stream": s.name }, el("td", {}, s.name), el("td", { class: s.leader ? "" : "bad" }, leader),
    el("td", {}, num(s.messages, 0)), el("td", {}, bytes(s.bytes)), el("td", {}, s.max_lag === null ? "–" : s.max_lag),
    el("td", {}, replicas || "–"));
}

function chart(history) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  const points = history.filter((h) => h[1] !== null || h[2] !== null);
  if (points.length < 2) return;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const top = Math.max(1, ...points.map((h) => Math.max(h[1] || 0, h[2] || 0)));
  document.getElementById("chart-scale").textContent = `(last ${Math.round(t1 - t0)} s, top of the chart: ${num(top)}/s)`;
  for (const [index, cls] of [[1, "accepted"], [2, "delivered"]]) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", points.map((h) =>
      `${(600 * (h[0] - t0)) / Math.max(1, t1 - t0)},${115 - (110 * (h[index] || 0)) / top}`).join(" "));
    svg.append(line);
  }
}

function render(s) {
  const overall = document.getElementById("overall");
  overall.classList.remove("stale");
  overall.dataset.healthy = String(s.healthy);
  const down = s.regions.filter((r) => r.state !== "healthy").map((r) => `${r.region} ${r.state}`);
  overall.textContent = s.generated_at === null ? "waiting for the first probe" : s.healthy ? "all regions healthy" : down.join(", ");
  document.getElementById("updated").textContent = s.generated_at ? `updated ${s.generated_at}` : "";
  document.getElementById("regions").replaceChildren(...s.regions.map(regionCard));
  const d = s.delivery || {};
  document.getElementById("accepted-rate").textContent = num(d.accepted_per_s);
  document.getElementById("delivered-rate").textContent = num(d.delivered_per_s);
  document.getElementById("meta-leader").textContent = s.meta_leader || "none (election)";
  document.querySelector("#streams tbody").replaceChildren(...s.streams.map(streamRow));
  chart(s.history || []);
  const events = document.getElementById("events");
  if (s.events.length) {
    events.replaceChildren(...s.events.map((e) => el("li", { "data-kind": e.kind }, `${e.time} ${e.text}`)));
  }
}

async function poll() {
  try {
    const reply = await fetch("status.json", { cache: "no-store" });
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    render(await reply.json());
    lastOk = Date.now();
  } catch (err) {
    if (Date.now() - lastOk > STALE_MS) {
      const overall = document.getElementById("overall");
      overall.classList.add("stale");
      overall.textContent = `status page unreachable (${err.message})`;
    }
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
