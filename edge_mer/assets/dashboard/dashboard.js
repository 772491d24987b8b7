// edge-mer live dashboard: plain JS, no library. Reads the /ws decision stream and polls /healthz.
"use strict";
(function () {
  const TOKEN_KEY = "edge-mer-token";
  const HISTORY = 60;
  const HEALTH_EVERY_MS = 2000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const COLORS = ["#0f62fe", "#da1e28", "#24a148", "#8a3ffc", "#ff832b", "#007d79", "#f1c21b", "#9f1853", "#6f6f6f"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The frame size is not in the stream: the smallest common one holding every box seen so far.
  const FRAMES = [[320, 240], [640, 480], [1280, 720], [1920, 1080], [3840, 2160]];
  let frame = FRAMES[0];
  const $ = (id) => document.getElementById(id);
  const history = [];  // the last HISTORY decisions' probabilities
  const classes = [];  // every class seen, in order of first appearance
  let health = null;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = null;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function authHeaders() {
    const t = token();
    return t ? { "Authorization": "Bearer " + t } : {};
  }

  // Whether the server accepts our token (or needs none): /state answers 200 or 404 then, 401 otherwise.
  async function probe() {
    const resp = await fetch("/state", { headers: authHeaders(), cache: "no-store" });
    return resp.status !== 401;
  }

  function askToken(message) {
    setStatus("unauthorized", "token required");
    $("token-form").hidden = false;
    $("token-error").textContent = message || "";
    $("token-input").focus();
  }

  function scheduleRetry() {
    setStatus("reconnecting", "reconnecting in " + (backoff / 1000).toFixed(1) + " s");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }

  async function connect() {
    clearTimeout(retryTimer);
    let allowed;
    try {
      allowed = await probe();
    } catch (err) {  // the server is down: try again later
      scheduleRetry();
      return;
    }
    if (!allowed) {
      askToken(token() ? "token refused" : "");
      return;
    }
    $("token-form").hidden = true;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const query = token() ? "?token=" + encodeURIComponent(token()) : "";
    const ws = new WebSocket(scheme + location.host + "/ws" + query);
    ws.onopen = () => { backoff = BACKOFF_MIN_MS; setStatus("live", "live (waiting for a decision)"); };
    ws.onmessage = (event) => {
      let decision;
      try { decision = JSON.parse(event.data); } catch (err) { return; }
      setStatus("live");
      show(decision);
    };
    ws.onclose = () => scheduleRetry();
  }

  function fmt(value) { return typeof value === "number" ? value.toFixed(3) : "-"; }

  function show(d) {
    $("decision").dataset.t = String(d.t);
    $("label").textContent = d.label;
    $("valence").textContent = fmt(d.valence);
    $("arousal").textContent = fmt(d.arousal);
    const point = $("va-point");
    point.setAttribute("cx", String(clamp(d.valence) * 100));
    point.setAttribute("cy", String(-clamp(d.arousal) * 100));  // arousal up
    history.push(d.probs || {});
    if (history.length > HISTORY) history.shift();
    for (const name of Object.keys(d.probs || {})) if (!classes.includes(name)) classes.push(name);
    drawChart();
    showModalities(d.modalities || {});
    showFaces(d.faces || []);
    showExtras(d);
  }

  // Present only with a probabilistic rule (uncertainty) or a multi-label head (labels_active).
  function showExtras(d) {
    const u = $("uncertainty"), active = $("labels-active");
    u.hidden = !d.uncertainty;
    if (d.uncertainty) {
      const x = d.uncertainty, iv = x.interval || [];
      u.textContent = "uncertainty: entropy " + fmt(x.entropy) + " nats \u00b7 agreement " + fmt(x.agreement) +
        " \u00b7 " + Math.round((x.level || 0) * 100) + "% interval [" + fmt(iv[0]) + ", " + fmt(iv[1]) + "]";
    }
    active.hidden = !d.labels_active;
    if (d.labels_active) {
      const names = Object.entries(d.labels_active).sort((a, b) => b[1] - a[1])
        .map(([name, score]) => name + " " + fmt(score));
      active.textContent = "active labels: " + (names.length ? names.join(", ") : "none");
    }
  }

  function clamp(v) { return typeof v === "number" ? Math.max(-1, Math.min(1, v)) : 0; }

  function drawChart() {
    const canvas = $("probs-chart");
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#e0e0e0";
    ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
    const step = w / (HISTORY - 1);
    const x0 = w - (history.length - 1) * step;  // the newest decision at the right edge
    canvas.dataset.points = String(history.length);
    classes.forEach((name, i) => {
      ctx.strokeStyle = COLORS[i % COLORS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      history.forEach((probs, j) => {
        const y = h - 2 - (probs[name] || 0) * (h - 4);
        if (j === 0) ctx.moveTo(x0 + j * step, y); else ctx.lineTo(x0 + j * step, y);
      });
      ctx.stroke();
      const last = history[history.length - 1][name] || 0;  // the newest value as a dot (one decision: no line)
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath();
      ctx.arc(w - 3, h - 2 - last * (h - 4), 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    const legend = $("probs-legend");
    if (legend.childElementCount !== classes.length) {
      legend.replaceChildren(...classes.map((name, i) => {
        const span = document.createElement("span");
        span.textContent = "\u25A0 " + name;
        span.style.color = COLORS[i % COLORS.length];
        return span;
      }));
    }
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function evidenceAge(modality) {
    const source = health && health.sources ? health.sources[modality] : null;
    const age = source ? source.last_chunk_age_s : null;
    return typeof age === "number" ? age.toFixed(2) + " s" : "-";
  }

  function showModalities(modalities) {
    const rows = Object.entries(modalities).map(([name, m]) => {
      const tr = document.createElement("tr");
      tr.dataset.modality = name;
      tr.dataset.valid = String(Boolean(m.valid));
      const age = cell(evidenceAge(name));
      age.className = "age";
      tr.append(cell(name), cell(m.valid ? "yes" : "no"), cell(m.label || "-"), cell(m.reason || ""), age);
      return tr;
    });
    $("modalities").tBodies[0].replaceChildren(...rows);
  }

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function showFaces(faces) {
    const el = $("faces");
    for (const f of faces) {
      const right = f.box[0] + f.box[2], bottom = f.box[1] + f.box[3];
      if (right > frame[0] || bottom > frame[1]) {
        frame = FRAMES.find(([w, h]) => right <= w && bottom <= h) || [right, bottom];
      }
    }
    el.setAttribute("viewBox", "0 0 " + frame[0] + " " + frame[1]);
    const items = [];
    for (const f of faces) {
      const [x, y, w, h] = f.box;
      items.push(svg("rect", { x: x, y: y, width: w, height: h, "data-face-id": f.id,
                               class: "face-box" + (f.valid ? "" : " invalid") }));
      const text = svg("text", { x: x + 2, y: y > 14 ? y - 3 : y + h + 12, class: "face-label" });
      text.textContent = "#" + f.id + " " + (f.label || f.reason || "?") + (f.primary ? " *" : "");
      items.push(text);
    }
    el.replaceChildren(...items);
    el.dataset.count = String(faces.length);
  }

  async function pollHealth() {
    const el = $("health");
    try {
      const resp = await fetch("/healthz", { cache: "no-store" });
      health = await resp.json();
      el.dataset.status = health.status || "unknown";
      el.textContent = "health: " + (health.status || "unknown") +
        (typeof health.uptime_s === "number" ? " (up " + health.uptime_s.toFixed(0) + " s)" : "");
      for (const row of document.querySelectorAll("#modalities tr[data-modality]")) {
        row.querySelector(".age").textContent = evidenceAge(row.dataset.modality);
      }
    } catch (err) {
      el.dataset.status = "unreachable";
      el.textContent = "health: unreachable";
    }
  }

  function onToken(event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    backoff = BACKOFF_MIN_MS;
    connect();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", onToken);
    pollHealth();
    setInterval(pollHealth, HEALTH_EVERY_MS);
    connect();
  });
})();
