// facedrop status page: polls /api/status and updates the page in place (no reload).
// Text goes in through textContent only, never innerHTML with data, so names stay text.
"use strict";
(function () {
  const body = document.body;
  const api = body.dataset.api || "/api/status";
  const pollMs = Math.max(500, parseInt(body.dataset.pollMs || "2000", 10));
  let digest = {};
  try { digest = JSON.parse(body.dataset.digest || "{}"); } catch (e) { digest = {}; }

  const $ = (id) => document.getElementById(id);
  const num = (v) => (v === null || v === undefined) ? "–" : Number(v).toLocaleString("en-US");
  const loss = (v) => (v === null || v === undefined) ? "–" : Number(v).toPrecision(4);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }

  function ago(iso) {
    if (!iso) return "";
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (!isFinite(s)) return "";
    if (s < 5) return "just now";
    return duration(s) + " ago";
  }

  function jobline(j) {
    const parts = [];
    if (j.progress !== null && j.progress !== undefined) parts.push((j.progress * 100).toFixed(1) + "%");
    if (j.total) parts.push(num(j.done) + " / " + num(j.total) + " " + (j.unit || ""));
    else if (j.done) parts.push(num(j.done) + " " + (j.unit || ""));
    if (j.rate) parts.push(j.rate.toPrecision(3) + " " + (j.unit || "") + "/s");
    if (j.eta_s !== null && j.eta_s !== undefined) parts.push("ETA " + duration(j.eta_s));
    if (j.elapsed_s) parts.push("running " + duration(j.elapsed_s));
    return parts.join(" · ");
  }

  function renderRunning(s) {
    const box = $("running");
    const frag = document.createDocumentFragment();
    if (!s.running.length) {
      const q = s.counts.queue_length;
      frag.appendChild(el("p", "idle", "Idle: nothing is running" + (q ? " (" + q + " waiting)" : "") + "."));
    }
    for (const j of s.running) {
      const job = el("div", "job");
      job.dataset.job = j.id;
      const head = el("div", "job-head");
      head.appendChild(el("span", "badge kind-" + j.kind, j.kind));
      head.appendChild(el("span", "job-name", j.name));
      if (j.model && j.model !== j.name) head.appendChild(el("span", "muted", "model " + j.model));
      job.appendChild(head);
      const bar = el("progress");
      bar.max = 1000;
      bar.value = Math.round((j.progress || 0) * 1000);
      job.appendChild(bar);
      job.appendChild(el("div", "job-meta", jobline(j)));
      if (j.message && j.message !== j.kind + " " + j.name) job.appendChild(el("div", "job-msg muted", j.message));
      frag.appendChild(job);
    }
    box.replaceChildren(frag);
  }

  function renderQueue(s) {
    const tbody = $("queue").tBodies[0];
    const frag = document.createDocumentFragment();
    if (!s.queue.length) {
      const tr = el("tr", "empty");
      const td = el("td", null, "The queue is empty.");
      td.colSpan = 6;
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    for (const j of s.queue) {
      const tr = el("tr");
      tr.appendChild(el("td", null, j.id));
      const kind = el("td");
      kind.appendChild(el("span", "badge kind-" + j.kind, j.kind));
      tr.appendChild(kind);
      const name = el("td", "name", j.name);
      if (j.message && j.message.startsWith("waiting")) name.appendChild(el("div", "muted wait-msg", j.message));
      if (j.preview_url) {
        const a = el("a");
        a.href = j.preview_url;
        const img = el("img", "preview");
        img.src = j.preview_url + "?t=" + encodeURIComponent(j.updated || "");
        img.alt = "preview of " + j.name + " swapped by the current save";
        a.appendChild(img);
        name.appendChild(a);
      }
      tr.appendChild(name);
      tr.appendChild(el("td", null, j.model || ""));
      tr.appendChild(el("td", null, j.status));
      const w = el("td", null, ago(j.created));
      w.title = j.created || "";
      tr.appendChild(w);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    $("queue-count").textContent = num(s.counts.queue_length);
  }

  function setField(card, field, text) {
    const e = card.querySelector('[data-field="' + field + '"]');
    if (e && e.textContent !== text) e.textContent = text;
    return e;
  }

  function updateModels(s) {
    const byName = new Map(s.models.map((m) => [m.name, m]));
    for (const card of document.querySelectorAll("article.model[data-model]")) {
      const m = byName.get(card.dataset.model);
      if (!m) continue;
      setField(card, "iterations", num(m.iterations || 0));
      setField(card, "loss-a", loss(m.loss.a));
      setField(card, "loss-b", loss(m.loss.b));
      setField(card, "stop-reason", m.stop_reason || "");
      const st = setField(card, "state", m.state);
      if (st) st.className = "badge state state-" + m.state_key;
      const bar = card.querySelector('[data-field="progress"]');
      if (bar && m.progress !== null) bar.value = Math.round(m.progress * 1000);
      const chart = card.querySelector('[data-field="chart"]');
      if (chart && chart.getAttribute("src") !== m.chart_url) chart.setAttribute("src", m.chart_url);
      const tl = card.querySelector("figure.timelapse");
      if (tl && tl._setFrames) tl._setFrames(m.timelapse);
    }
  }

  function initTimelapse(fig) {
    let frames = [];
    try { frames = JSON.parse(fig.dataset.frames || "[]"); } catch (e) { frames = []; }
    const img = fig.querySelector(".tl-img");
    const link = fig.querySelector(".tl-link");
    const range = fig.querySelector(".tl-range");
    const caption = fig.querySelector(".tl-caption");
    const prev = fig.querySelector(".tl-prev");
    const next = fig.querySelector(".tl-next");
    if (!img || !range) { fig._setFrames = null; return; }
    let index = frames.length - 1;
    function show(i) {
      if (!frames.length) return;
      index = Math.max(0, Math.min(frames.length - 1, i));
      const f = frames[index];
      if (img.getAttribute("src") !== f.url) img.setAttribute("src", f.url);
      if (link) link.setAttribute("href", f.url);
      range.max = String(frames.length - 1);
      range.value = String(index);
      caption.textContent = "iteration " + num(f.iterations) + " · " + (index + 1) + " of " + frames.length;
      prev.disabled = index === 0;
      next.disabled = index === frames.length - 1;
    }
    prev.addEventListener("click", () => show(index - 1));
    next.addEventListener("click", () => show(index + 1));
    range.addEventListener("input", () => show(parseInt(range.value, 10)));
    fig.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft") show(index - 1);
      if (e.key === "ArrowRight") show(index + 1);
    });
    fig._setFrames = (newFrames) => {
      if (!newFrames || !newFrames.length) return;
      const atLatest = index === frames.length - 1;
      const last = frames.length ? frames[frames.length - 1].url : null;
      frames = newFrames;
      if (newFrames[newFrames.length - 1].url !== last || atLatest) show(atLatest ? frames.length - 1 : index);
    };
    show(index);
  }

  function initAll(root) {
    for (const fig of root.querySelectorAll("figure.timelapse")) initTimelapse(fig);
  }

  // sections whose shape changes (a new person, output, failure, model) are re-rendered by the
  // server and swapped in; the live numbers are patched in place above
  async function refreshSections(changed) {
    const resp = await fetch(window.location.pathname, { cache: "no-store", credentials: "same-origin" });
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    for (const id of changed) {
      const fresh = doc.getElementById(id);
      const here = $(id);
      if (!fresh || !here) continue;
      here.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.importNode(n, true)));
      initAll(here);
    }
  }

  function update(s) {
    const live = $("live");
    live.dataset.state = s.daemon.state;
    $("live-text").textContent = s.daemon.state.replace("-", " ") + " · " + new Date().toLocaleTimeString("en-GB");
    const banner = $("daemon-banner");
    banner.textContent = s.daemon.message || "";
    banner.classList.toggle("hidden", !s.daemon.message || s.daemon.state === "running" || s.daemon.state === "idle");
    $("stat-queue").textContent = num(s.counts.queue_length);
    $("stat-running").textContent = num(s.running.length);
    $("stat-done").textContent = num(s.counts.jobs.done || 0);
    $("stat-failed").textContent = num(s.counts.jobs.failed || 0);
    $("stat-faces").textContent = num(s.counts.faces_extracted);
    $("stat-models").textContent = num(s.counts.models);
    $("stat-outputs").textContent = num(s.counts.outputs);
    $("stat-failed").parentElement.classList.toggle("bad", (s.counts.jobs.failed || 0) > 0);
    renderRunning(s);
    renderQueue(s);
    updateModels(s);
    const changed = Object.keys(s.digest || {}).filter((k) => digest[k] !== s.digest[k]);
    digest = s.digest || {};
    if (changed.length) refreshSections(changed).catch(() => {});
  }

  async function poll() {
    try {
      const resp = await fetch(api, { cache: "no-store", credentials: "same-origin" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      update(await resp.json());
    } catch (e) {
      $("live").dataset.state = "offline";
      $("live-text").textContent = "offline · retrying";
    } finally {
      window.setTimeout(poll, pollMs);
    }
  }

  initAll(document);
  window.setTimeout(poll, pollMs);
})();
