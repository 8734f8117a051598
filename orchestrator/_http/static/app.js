// The dashboard: plain JS, no framework, no build step.
//
// The token lives in sessionStorage (this tab only) and goes out as
// `Authorization: Bearer`. The browser's EventSource cannot send that
// header, so the event stream is read with fetch() streaming instead (no
// token ever appears in a URL, a log line or the history).
"use strict";
(() => {
  const TOKEN_KEY = "orchestrator.token";
  const STATES = ["queued", "active", "completed", "failed", "cancelled"];
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const PAGE = 25;
  const $ = (sel, root = document) => root.querySelector(sel);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let me = null;
  let stream = null;           // AbortController of the event stream
  let statsTimer = null;
  let statsSoon = null;
  const list = { filters: {}, cursors: [null], page: 0, next: null, jobs: [] };
  const seen = new Map();      // job id -> [{state, progress, at}] observed live in this tab
  let shown = null;            // the job on the detail page

  // -- helpers -----------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const svg = (tag, attrs = {}, ...children) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : String(c));
    return node;
  };
  // replaceChildren() that takes nested lists and skips null.
  const fill = (node, ...children) => node.replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }
  const time = (iso) => el("time", { datetime: iso, title: iso }, when(iso));
  const badge = (state) => el("span", { class: `state ${state}`, "data-testid": "state" }, state);
  const bar = (p, big) => el("span", { class: big ? "bar big" : "bar", title: `${Math.round(p * 100)}%` },
    el("i", { style: `width:${Math.round(p * 100)}%` }));
  const mayCancel = (job) => me && !TERMINAL.has(job.state) && (me.role === "admin" || job.owner.user_id === me.user_id);

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
    const res = await fetch(path, { ...options, headers });
    const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
    if (res.status === 401) { signOut("The token was refused (unknown, expired or revoked)."); throw new Error("unauthenticated"); }
    if (!res.ok) {
      const err = new Error(body?.message || `HTTP ${res.status}`);
      err.status = res.status; err.field = body?.field;
      throw err;
    }
    return body;
  }

  // -- signing in and out ------------------------------------------------

  function signOut(message) {
    token = null; me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    stream?.abort(); stream = null;
    clearInterval(statsTimer);
    $("#login-error").textContent = message || "";
    route();
  }

  async function signIn(candidate) {
    token = candidate;
    try {
      me = await api("/api/me");
    } catch (e) {
      if (e.message !== "unauthenticated") signOut(e.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#who").textContent = `${me.user_id} @ ${me.org_id}${me.role === "admin" ? " (admin)" : ""}`;
    const kinds = $("#submit-kind");
    kinds.replaceChildren(...me.kinds.map((k) => el("option", { value: k }, k)));
    startStream();
    clearInterval(statsTimer);
    statsTimer = setInterval(loadStats, 10000);
    route();
  }

  // -- routing -----------------------------------------------------------

  function route() {
    const signedIn = Boolean(token && me);
    const match = location.hash.match(/^#\/jobs\/([0-9a-f-]{36})$/);
    $("#login").hidden = signedIn;
    $("#logout").hidden = !signedIn;
    $("#overview").hidden = !signedIn || Boolean(match);
    $("#detail").hidden = !signedIn || !match;
    if (!signedIn) { $("#who").textContent = ""; $("#token").focus(); return; }
    if (match) showJob(match[1]);
    else { shown = null; loadJobs(); loadStats(); }
  }

  // -- the job list ------------------------------------------------------

  function matches(job) {
    const f = list.filters;
    return (!f.state || job.state === f.state) && (!f.kind || job.kind === f.kind)
      && (!f.queue || job.queue === f.queue) && (!f.owner || job.owner.user_id === f.owner);
  }

  // Whether a job belongs on the first page as it is shown now: it matches
  // the filters and is not older than the page's oldest job.
  function belongsOnFirstPage(job) {
    if (list.page !== 0 || !matches(job)) return false;
    const last = list.jobs[list.jobs.length - 1];
    return !last || list.jobs.length < PAGE || job.created_at >= last.created_at;
  }

  const newestFirst = (a, b) => (a.created_at < b.created_at) - (a.created_at > b.created_at) || (a.id < b.id) - (a.id > b.id);

  async function loadJobs() {
    const params = new URLSearchParams({ limit: PAGE, ...list.filters });
    const cursor = list.cursors[list.page];
    if (cursor) params.set("cursor", cursor);
    let page;
    try { page = await api(`/api/jobs?${params}`); } catch (e) { return; }
    // Events may have overtaken this answer: keep the newest of each job,
    // and the jobs submitted since it was read.
    const ids = new Set(page.jobs.map((j) => j.id));
    list.jobs = page.jobs.map((j) => { const k = known.get(j.id); return k && older(j, k) < 0 ? k : j; });
    list.next = page.next_cursor;
    for (const job of known.values()) if (!ids.has(job.id) && belongsOnFirstPage(job)) list.jobs.push(job);
    list.jobs.sort(newestFirst);
    renderJobs();
  }

  function jobRow(job) {
    const cancel = mayCancel(job)
      ? el("button", { class: "danger", "data-testid": "cancel", onclick: (ev) => cancelJob(job, ev.target) }, "Cancel")
      : null;
    return el("tr", { "data-job": job.id },
      el("td", {}, el("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 8))),
      el("td", {}, job.kind), el("td", {}, job.queue), el("td", {}, job.owner.user_id),
      el("td", {}, badge(job.state)), el("td", {}, bar(job.progress)),
      el("td", {}, time(job.created_at)), el("td", {}, cancel));
  }

  function renderJobs() {
    $("#jobs tbody").replaceChildren(...(list.jobs.length
      ? list.jobs.map(jobRow)
      : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No jobs."))]));
    $("#prev-page").disabled = list.page === 0;
    $("#first-page").disabled = list.page === 0;
    $("#next-page").disabled = !list.next;
    $("#page-no").textContent = `page ${list.page + 1}`;
  }

  async function cancelJob(job, button) {
    button.disabled = true; button.textContent = "Cancelling…";
    try {
      const outcome = await api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
      button.textContent = outcome.cancelled ? "Cancelled" : outcome.reason;
    } catch (e) {
      button.textContent = e.status === 403 ? "Not allowed" : "Failed";
      button.title = e.message;
    }
  }

  // -- live updates ------------------------------------------------------

  // Records can arrive out of order (a POST's answer after the events of a
  // job that already finished): a job only moves forward in (attempt,
  // state, progress), so an older record is ignored.
  const RANK = { queued: 0, active: 1, completed: 2, failed: 2, cancelled: 2 };
  const older = (a, b) => a.attempt - b.attempt || RANK[a.state] - RANK[b.state] || a.progress - b.progress;
  const known = new Map();     // job id -> newest record seen

  function onJob(job) {
    const newest = known.get(job.id);
    if (newest && older(job, newest) < 0) return;
    known.set(job.id, job);
    const history = seen.get(job.id) || [];
    const last = history[history.length - 1];
    if (!last || last.state !== job.state || last.progress !== job.progress) {
      history.push({ state: job.state, progress: job.progress, at: new Date().toISOString() });
      seen.set(job.id, history.slice(-50));
    }
    const i = list.jobs.findIndex((j) => j.id === job.id);
    if (i >= 0) {
      list.jobs[i] = job;
      $(`#jobs tr[data-job="${job.id}"]`)?.replaceWith(jobRow(job));
    } else if (belongsOnFirstPage(job)) {
      // The first page grows while live; the cursors of older pages stay right.
      list.jobs.push(job);
      list.jobs.sort(newestFirst);
      if (list.jobs.length > PAGE * 4) loadJobs(); else renderJobs();
    }
    if (shown === job.id) renderJob(job);
    clearTimeout(statsSoon);
    statsSoon = setTimeout(loadStats, 1000);
  }

  function refresh() {
    if (shown) showJob(shown); else if (me) { loadJobs(); loadStats(); }
  }

  function setLive(on) {
    const live = $("#live");
    live.className = on ? "live on" : "live off";
    live.textContent = on ? "live" : "reconnecting…";
  }

  function startStream() {
    stream?.abort();
    const ctl = new AbortController();
    stream = ctl;
    (async () => {
      let delay = 500, first = true;
      while (!ctl.signal.aborted) {
        try {
          const res = await fetch("/api/events", { headers: { Authorization: `Bearer ${token}` }, signal: ctl.signal });
          if (res.status === 401) { signOut("The token was refused (unknown, expired or revoked)."); return; }
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
              let name = "message"; const data = [];
              for (const line of block.split("\n")) {
                if (line.startsWith("event:")) name = line.slice(6).trim();
                else if (line.startsWith("data:")) data.push(line.slice(5).trim());
              }
              if (name === "ready") { setLive(true); delay = 500; if (!first) refresh(); first = false; }
              else if (name === "job") onJob(JSON.parse(data.join("\n")));
              else if (name === "resync") refresh();
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        setLive(false);
        await sleep(delay);
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }

  // -- counts and the chart ----------------------------------------------

  async function loadStats() {
    if (!me || shown) return;
    let stats;
    try { stats = await api("/api/stats?minutes=15"); } catch (e) { return; }
    const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
    const queues = new Map();
    for (const c of stats.counts) {
      totals[c.state] += c.count;
      if (!queues.has(c.queue)) queues.set(c.queue, Object.fromEntries(STATES.map((s) => [s, 0])));
      queues.get(c.queue)[c.state] = c.count;
    }
    $("#state-totals").replaceChildren(...STATES.map((s) =>
      el("div", { class: `total ${s}`, "data-testid": `total-${s}` }, el("b", {}, totals[s]), el("span", {}, s))));
    $("#counts").replaceChildren(
      el("tr", {}, el("th", {}, "queue"), ...STATES.map((s) => el("th", {}, s))),
      ...[...queues].map(([q, n]) => el("tr", {}, el("td", {}, q), ...STATES.map((s) => el("td", {}, n[s])))));
    drawChart(stats.minutes);
  }

  function drawChart(minutes) {
    const W = 600, H = 170, left = 34, right = 34, top = 10, bottom = 22;
    const w = (W - left - right) / Math.max(minutes.length, 1);
    const done = Math.max(1, ...minutes.map((m) => m.completed + m.failed));
    const depth = Math.max(1, ...minutes.map((m) => m.queued));
    const y = (v, max) => top + (H - top - bottom) * (1 - v / max);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "throughput and queue depth" });
    chart.append(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis" }));
    minutes.forEach((m, i) => {
      const x = left + i * w + w * 0.15, bw = w * 0.7;
      const yc = y(m.completed, done), yf = y(m.completed + m.failed, done);
      chart.append(svg("rect", { x, y: yc, width: bw, height: H - bottom - yc, fill: "var(--completed)", rx: 2 },
        svg("title", {}, `${when(m.start)}: ${m.completed} completed`)));
      if (m.failed) chart.append(svg("rect", { x, y: yf, width: bw, height: yc - yf, fill: "var(--failed)", rx: 2 }));
      if (i % 3 === 0 || i === minutes.length - 1) {
        chart.append(svg("text", { x: x + bw / 2, y: H - 6, "text-anchor": "middle" },
          new Date(m.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
      }
    });
    const points = minutes.map((m, i) => `${left + i * w + w / 2},${y(m.queued, depth)}`).join(" ");
    chart.append(svg("polyline", { points, fill: "none", stroke: "var(--active)", "stroke-width": 2.5, "stroke-linejoin": "round" }));
    chart.append(svg("text", { x: 4, y: top + 8 }, done));
    chart.append(svg("text", { x: W - right + 4, y: top + 8, fill: "var(--active)" }, depth));
    const legend = el("div", { class: "legend" },
      el("span", {}, el("i", { style: "background:var(--completed)" }), "completed / min"),
      el("span", {}, el("i", { style: "background:var(--failed)" }), "failed / min"),
      el("span", {}, el("i", { style: "background:var(--active)" }), "waiting in queue (right scale)"));
    $("#chart").replaceChildren(chart, legend);
  }

  // -- one job -----------------------------------------------------------

  async function showJob(id) {
    shown = id;
    try {
      const job = await api(`/api/jobs/${id}`);
      const newest = known.get(id);
      renderJob(newest && older(job, newest) < 0 ? newest : job);
    } catch (e) {
      $("#job-card").replaceChildren(el("p", { class: "error" }, e.status === 404 ? "No such job in your organisation." : e.message));
    }
  }

  function renderJob(job) {
    const steps = [el("li", { class: "queued" }, `Submitted by ${job.owner.user_id}`, time(job.created_at))];
    if (new Date(job.run_at) - new Date(job.created_at) > 1000) steps.push(el("li", { class: "queued" }, "Due", time(job.run_at)));
    if (job.attempt > 1) steps.push(el("li", { class: "failed" }, `${job.attempt - 1} earlier attempt(s) ended and were retried`));
    if (job.started_at) steps.push(el("li", { class: "active" }, `Attempt ${job.attempt} of ${job.max_attempts} started`, time(job.started_at)));
    if (job.cancel_requested && !TERMINAL.has(job.state)) steps.push(el("li", { class: "cancelled" }, "Cancel requested"));
    if (job.completed_at) steps.push(el("li", { class: job.state }, `${job.state[0].toUpperCase()}${job.state.slice(1)}`, time(job.completed_at)));
    const live = (seen.get(job.id) || []).map((s) =>
      el("li", { class: s.state }, `${s.state} · ${Math.round(s.progress * 100)}%`, time(s.at)));
    const cancel = mayCancel(job)
      ? el("button", { class: "danger", "data-testid": "cancel", onclick: (ev) => cancelJob(job, ev.target) }, "Cancel job")
      : null;
    fill($("#job-card"),
      el("div", { class: "job-head" }, el("h1", { class: "mono", "data-testid": "job-id" }, job.id), badge(job.state), cancel),
      bar(job.progress, true),
      el("dl", { class: "kv" },
        el("dt", {}, "kind"), el("dd", {}, job.kind), el("dt", {}, "queue"), el("dd", {}, job.queue),
        el("dt", {}, "owner"), el("dd", {}, `${job.owner.user_id} @ ${job.owner.org_id}`),
        el("dt", {}, "priority"), el("dd", {}, job.priority), el("dt", {}, "progress"), el("dd", {}, `${Math.round(job.progress * 100)}%`)),
      el("h2", {}, "Timeline"), el("ol", { class: "timeline" }, steps),
      job.error ? [el("h2", {}, "Error"), el("pre", { class: "error" }, JSON.stringify(job.error, null, 2))] : null,
      el("h2", {}, "Payload"), el("pre", {}, JSON.stringify(job.payload, null, 2)),
      job.result !== null ? [el("h2", {}, "Result"), el("pre", {}, JSON.stringify(job.result, null, 2))] : null,
      live.length ? [el("h2", {}, "Seen live in this tab"), el("ol", { class: "timeline" }, live)] : null);
  }

  // -- wiring ------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("#token").value.trim()); });
    $("#logout").addEventListener("click", () => signOut(""));
    $("#filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      list.filters = Object.fromEntries([...new FormData(ev.target)].filter(([, v]) => v));
      list.cursors = [null]; list.page = 0; loadJobs();
    });
    $("#next-page").addEventListener("click", () => { if (list.next) { list.cursors[++list.page] = list.next; loadJobs(); } });
    $("#prev-page").addEventListener("click", () => { if (list.page > 0) { list.page--; loadJobs(); } });
    $("#first-page").addEventListener("click", () => { list.page = 0; list.cursors = [null]; loadJobs(); });
    $("#submit-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = $("#submit-result");
      let payload;
      try { payload = JSON.parse($("#submit-payload").value || "null"); } catch (e) { out.textContent = `Payload is not JSON: ${e.message}`; out.className = "error"; return; }
      try {
        const job = await api("/api/jobs", { method: "POST", body: JSON.stringify({ kind: $("#submit-kind").value, payload }) });
        out.className = ""; out.replaceChildren("Queued ", el("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 8)));
        onJob(job);
      } catch (e) { out.className = "error"; out.textContent = e.message; }
    });
    window.addEventListener("hashchange", route);
    if (token) signIn(token); else route();
  });
})();
