// meshnode dashboard: draws the mesh from GET /v1/events (Server-Sent Events), read with fetch so
// that an API key can go in the Authorization header (never in a URL). No framework, no build.
"use strict";

const KEY_STORE = "meshnode-api-key";
const MAX_EVENTS = 200;
const STALL_MS = 40000; // keep-alives come every 15 s: this long without a byte means a dead stream
const state = { self: null, members: new Map(), deployments: new Map(), traffic: { deployments: {}, links: [] }, jobs: {} };
const SVG = "http://www.w3.org/2000/svg";
let drawPending = false;

// -- the key: from #key=... once (the fragment never reaches the server), then this tab's storage
(function takeKeyFromFragment() {
  const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (match) {
    sessionStorage.setItem(KEY_STORE, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- the stream ------------------------------------------------------------------------------
function setConnection(kind, label) {
  const box = document.getElementById("connection");
  box.dataset.state = kind;
  box.querySelector(".label").textContent = label;
}

async function connect() {
  const headers = { Accept: "text/event-stream" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = "Bearer " + key;
  const abort = new AbortController();
  let watchdog = setTimeout(() => abort.abort(), STALL_MS);
  try {
    const response = await fetch("/v1/events", { headers, signal: abort.signal, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      clearTimeout(watchdog);
      askForKey(response.status === 403 ? "This key may not read the mesh." : null);
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    document.getElementById("key-form").hidden = true;
    setConnection("live", "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), STALL_MS);
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleMessage(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    console.debug("event stream ended:", error);
  }
  clearTimeout(watchdog);
  setConnection("reconnecting", "reconnecting…");
  setTimeout(connect, 1000);
}

function askForKey(problem) {
  setConnection("key", problem || "API key needed");
  const form = document.getElementById("key-form");
  form.hidden = false;
  form.querySelector("input").focus();
}

document.getElementById("key-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const input = document.getElementById("key-input");
  if (!input.value.trim()) return;
  sessionStorage.setItem(KEY_STORE, input.value.trim());
  input.value = "";
  setConnection("connecting", "connecting");
  connect();
});

function handleMessage(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const handler = HANDLERS[kind];
  if (handler) handler(JSON.parse(data.join("\n")));
  draw();
}

// -- what each event does to the picture, and what the feed says about it ---------------------
const HANDLERS = {
  snapshot(event) {
    state.self = event.self;
    state.members = new Map(event.members.map((m) => [m.id, m]));
    state.deployments = new Map(event.deployments.map((d) => [d.name, d]));
    state.traffic = event.traffic || { deployments: {}, links: [] };
    state.jobs = event.jobs || {};
  },
  failover(event) {
    const many = event.count > 1 ? event.count + " requests" : "a request";
    const reasons = [...new Set(event.reasons)].join(", ");
    feed(event.at, event.deployment + ": " + many + " failed over from " + event.refused_by.join(", ") + " (" + reasons + ") to " + event.served_by, "warn");
  },
  jobs(event) {
    state.jobs = event.counts;
  },
  member(event) {
    if (event.member) state.members.set(event.id, event.member);
    else if (state.members.has(event.id)) state.members.get(event.id).status = event.status;
    const name = event.name || event.id.slice(0, 8);
    const words = {
      alive: event.previous === null ? [name + " joined", "good"] : [name + " is alive again", "good"],
      suspect: [name + " is suspected", "warn"],
      dead: [name + " is dead", "bad"],
      left: [name + " left the mesh", "info"],
    }[event.status] || [name + " is " + event.status, "info"];
    feed(event.at, words[0], words[1]);
  },
  deployment(event) {
    if (event.change === "removed") {
      state.deployments.delete(event.name);
      feed(event.at, "deployment " + event.name + " removed", "info");
      return;
    }
    state.deployments.set(event.name, event.deployment);
    const dep = event.deployment;
    if (event.change === "declared") feed(event.at, "deployment " + event.name + " declared (" + dep.app + ")", "info");
    else if (event.desired) feed(event.at, event.name + " scaled " + event.desired[0] + " → " + event.desired[1], "info");
    else if (event.fields.includes("unschedulable") && dep.unschedulable) feed(event.at, event.name + " unschedulable: " + dep.unschedulable, "warn");
  },
  replica(event) {
    const member = state.members.get(event.node);
    if (member) {
      if (event.state === null) delete member.replicas[event.deployment];
      else member.replicas[event.deployment] = { ...(member.replicas[event.deployment] || {}), state: event.state, error: event.error };
    }
    const where = event.deployment + " on " + (event.node_name || event.node.slice(0, 8));
    if (event.state === null) feed(event.at, where + " stopped", "info");
    else if (event.previous === null) feed(event.at, where + " placed (" + event.state + ")", "info");
    else feed(event.at, where + ": " + event.previous + " → " + event.state + (event.error ? " (" + event.error + ")" : ""),
      event.state === "ready" ? "good" : event.state === "failed" ? "bad" : "info");
  },
};

function feed(at, text, tone) {
  const list = document.getElementById("events");
  const time = new Date(at || Date.now());
  list.prepend(el("li", { "data-tone": tone }, el("time", { datetime: time.toISOString() }, time.toLocaleTimeString([], { hour12: false })), el("span", {}, text)));
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

// -- drawing (at most once a frame, from the whole state: simple and fast enough for hundreds) ---
function draw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawSummary();
    drawTopology();
    drawNodes();
    drawDeployments();
    drawJobs();
  });
}

function drawSummary() {
  const members = [...state.members.values()];
  const alive = members.filter((m) => m.status === "alive").length;
  const deps = [...state.deployments.values()];
  const ready = deps.reduce((sum, d) => sum + d.ready, 0);
  const desired = deps.reduce((sum, d) => sum + d.desired, 0);
  const me = state.members.get(state.self);
  document.getElementById("self-node").textContent = me ? me.name : "this node";
  document.getElementById("summary").replaceChildren(
    el("span", {}, el("b", {}, alive + "/" + members.length), " nodes alive"),
    el("span", {}, el("b", {}, deps.length), " deployments"),
    el("span", {}, el("b", {}, ready + "/" + desired), " replicas ready"),
  );
}

function describeDevice(device) {
  if (!device) return "";
  const accelerators = (device.accelerators || []).map((a) => a.name || a.kind || String(a));
  const memory = device.memory ? " · " + (device.memory / 2 ** 30).toFixed(0) + " GiB" : "";
  const cores = device.cores ? " · " + device.cores + " cores" : "";
  return (accelerators.length ? accelerators.join(", ") : (device.kind || "cpu").toUpperCase() + (device.cpu ? " " + device.cpu : "")) + cores + memory;
}

function meter(label, fraction, text) {
  const width = Math.max(0, Math.min(100, fraction * 100)).toFixed(0) + "%";
  return el("div", { class: "meter" }, el("span", {}, label), el("div", { class: "bar" }, el("span", { style: "width:" + width })), el("span", { class: "value" }, text));
}

function nodeCard(member) {
  const load = member.load || {};
  const memFraction = load.mem_total ? load.mem_used / load.mem_total : 0;
  const replicas = Object.entries(member.replicas || {}).sort(([a], [b]) => a.localeCompare(b));
  return el("article", { class: "node", "data-node": member.name, "data-status": member.status },
    el("div", { class: "node-head" },
      el("span", { class: "node-name" }, member.name),
      member.id === state.self ? el("span", { class: "me" }, "this node") : null,
      el("span", { class: "status" }, member.status)),
    el("div", { class: "device" }, describeDevice(member.device)),
    el("div", { class: "addr" }, member.http + (member.reach === "relayed" ? " · relayed" : "")),
    meter("cpu", (load.cpu || 0) / 100, (load.cpu || 0).toFixed(0) + "%"),
    meter("mem", memFraction, (memFraction * 100).toFixed(0) + "%"),
    meter("busy", Math.min(1, (load.in_flight || 0) / 16), String(load.in_flight || 0)),
    modelsLine(member),
    replicas.length ? el("div", { class: "chips" }, replicas.map(([name, replica]) =>
      el("span", { class: "chip", "data-state": replica.state, title: replica.error || replica.state }, name + loadingNote(replica.state, replica.progress)))) : null);
}

function drawNodes() {
  const regions = new Map();
  for (const member of state.members.values()) {
    const region = member.region || "default region";
    const zone = member.zone || "default zone";
    if (!regions.has(region)) regions.set(region, new Map());
    const zones = regions.get(region);
    if (!zones.has(zone)) zones.set(zone, []);
    zones.get(zone).push(member);
  }
  const box = document.getElementById("nodes");
  if (!regions.size) return;
  box.replaceChildren(...[...regions.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([region, zones]) =>
    el("div", { class: "region" }, el("h3", {}, region),
      [...zones.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([zone, members]) =>
        el("div", { class: "zone" }, el("h4", {}, zone),
          el("div", { class: "cards" }, members.sort((a, b) => a.name.localeCompare(b.name)).map(nodeCard)))))));
}

function drawDeployments() {
  const box = document.getElementById("deployments");
  const deps = [...state.deployments.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (!deps.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No deployments yet."));
    return;
  }
  const rows = deps.map((d) => {
    const reason = d.unschedulable || d.missing;
    const traffic = state.traffic.deployments[d.name];
    const fraction = d.desired ? d.ready / d.desired : 1;
    return el("tr", { "data-deployment": d.name },
      el("td", {}, el("div", { class: "dep-name" }, d.name), el("div", { class: "app" }, d.app)),
      el("td", { class: "count" }, d.ready + " / " + d.desired, el("span", { class: "bar" }, el("span", { style: "width:" + (Math.min(1, fraction) * 100).toFixed(0) + "%" }))),
      el("td", {}, el("div", { class: "chips" }, (d.replicas || []).map((r) =>
        el("span", { class: "chip", "data-state": r.status, title: r.error || r.status }, r.node + (r.pinned ? " (pinned)" : "") + loadingNote(r.status, r.progress))))),
      el("td", { class: "num rate" }, traffic ? rate(traffic.rps) : "–"),
      el("td", { class: "num latency" }, traffic ? [traffic.p50_ms, traffic.p95_ms, traffic.p99_ms].map(ms).join(" / ") : "–"),
      el("td", { class: traffic && traffic.errors_ps > 0 ? "num errors bad" : "num errors" }, traffic ? rate(traffic.errors_ps) : "–"),
      el("td", { class: reason ? "reason" : "reason ok" }, reason || d.note || "all ready"));
  });
  box.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["deployment", "ready / desired", "replicas", "req/s", "p50 / p95 / p99", "errors/s", "placement"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
}

// The models in the node's store, and those it pulls from peers with how far it is.
function modelsLine(member) {
  const held = Object.keys(member.store || {}).sort();
  const pulls = Object.entries(member.pulls || {}).sort(([a], [b]) => a.localeCompare(b)).map(([name, p]) =>
    name + " " + Math.round(100 * (p.total ? p.done / p.total : 0)) + "%");
  if (!held.length && !pulls.length) return null;
  return el("div", { class: "models", title: "models in this node's store (and pulling)" },
    held.join(", ") + (pulls.length ? (held.length ? " · " : "") + "pulling " + pulls.join(", ") : ""));
}

// A replica pulling its model from peers shows how far it is.
function loadingNote(status, progress) {
  return status === "loading" ? " · loading " + Math.round((progress || 0) * 100) + "%" : "";
}

function rate(perSecond) {
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond >= 10 ? perSecond.toFixed(1) : perSecond.toFixed(2);
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1000 ? (value / 1000).toFixed(value >= 10000 ? 0 : 1) + " s" : value.toFixed(value >= 10 ? 0 : 1) + " ms";
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

// The mesh as a picture: nodes on a ring, ordered by region and zone so neighbours sit together,
// and a line for each link that carried requests in the last window, thicker for more.
function drawTopology() {
  const members = [...state.members.values()].filter((m) => m.status !== "left")
    .sort((a, b) => (a.region || "").localeCompare(b.region || "") || (a.zone || "").localeCompare(b.zone || "") || a.name.localeCompare(b.name));
  const box = document.getElementById("topology");
  if (!members.length) return;
  const size = 360, centre = size / 2, radius = members.length > 1 ? size / 2 - 48 : 0;
  const where = new Map(members.map((m, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / members.length;
    return [m.id, [centre + radius * Math.cos(angle), centre + radius * Math.sin(angle)]];
  }));
  const live = (id) => where.has(id) && state.members.get(id).status !== "dead";
  const links = state.traffic.links.filter((l) => live(l.from) && live(l.to) && l.rps > 0);
  const busiest = Math.max(1, ...links.map((l) => l.rps));
  const lines = links.map((l) => {
    const [x1, y1] = where.get(l.from), [xt, yt] = where.get(l.to);
    const length = Math.hypot(xt - x1, yt - y1) || 1;
    const x2 = xt - ((xt - x1) * 20) / length, y2 = yt - ((yt - y1) * 20) / length; // stop at the circle
    const line = svg("line", { x1, y1, x2, y2, class: "link", "marker-end": "url(#arrow)", "stroke-width": (1.5 + 6 * Math.sqrt(l.rps / busiest)).toFixed(1), "data-from": l.from, "data-to": l.to });
    line.append(svg("title", {}, state.members.get(l.from).name + " → " + state.members.get(l.to).name + ": " + rate(l.rps) + " req/s"));
    return line;
  });
  const labels = links.map((l) => {
    const [x1, y1] = where.get(l.from), [x2, y2] = where.get(l.to);
    return svg("text", { x: (x1 + 2 * x2) / 3, y: (y1 + 2 * y2) / 3 - 4, class: "link-rate" }, rate(l.rps) + "/s");
  });
  const nodes = members.map((m) => {
    const [x, y] = where.get(m.id);
    const busy = Object.values(m.replicas || {}).some((r) => r.state === "ready");
    return svg("g", { class: "topo-node", "data-status": m.status, "data-node": m.name, transform: "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")" },
      svg("circle", { r: busy ? 15 : 11 }), svg("text", { y: 30, class: "topo-name" }, m.name),
      svg("title", {}, m.name + " · " + m.status + (m.zone ? " · " + m.zone : "") + "\n" + describeDevice(m.device)));
  });
  const arrow = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 12, markerHeight: 12, orient: "auto-start-reverse" },
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }));
  box.replaceChildren(svg("svg", { viewBox: "0 0 " + size + " " + size, role: "img", "aria-label": "nodes and the links that carry requests" },
    svg("defs", {}, arrow), ...lines, ...labels, ...nodes));
}

const JOB_STATUSES = ["queued", "running", "completed", "failed", "cancelled"];

function drawJobs() {
  const section = document.getElementById("jobs-section");
  const names = Object.keys(state.jobs).sort();
  section.hidden = !names.length;
  if (!names.length) return;
  document.getElementById("jobs").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["deployment", ...JOB_STATUSES].map((h) => el("th", {}, h)))),
    el("tbody", {}, names.map((name) => el("tr", { "data-jobs": name }, el("td", {}, name),
      JOB_STATUSES.map((status) => el("td", { class: "num", "data-status": status }, state.jobs[name][status] || 0)))))));
}

connect();
