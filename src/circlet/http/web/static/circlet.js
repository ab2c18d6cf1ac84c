// circlet's page scripts: progressive enhancement only; every page works without them.
// Dashboard: refresh the build rows. Build page: refresh header and steps while the build
// runs, stream running logs (server-sent events), load log tails and earlier windows,
// timestamps on demand, container tabs. Workflow graph: refresh it while the workflow runs.
"use strict";
(function () {
  const FRAGMENT = { headers: { "x-circlet-fragment": "1" }, credentials: "same-origin" };
  const MAX_LOG_CHARS = 2000000; // a log panel never holds much more than this

  function fetchOk(url) {
    return fetch(url, FRAGMENT).then(function (r) {
      if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
      return r;
    });
  }

  // ---------------------------------------------------------------- dashboard rows
  function pollRows(tbody) {
    let live = tbody.dataset.live === "1";
    function tick() {
      if (document.hidden) { return schedule(); }
      fetchOk(tbody.dataset.poll).then(function (r) {
        if (!r.ok) { return; }
        live = r.headers.get("x-circlet-live") === "1";
        return r.text().then(function (html) { tbody.innerHTML = html; });
      }).catch(function () {}).then(schedule);
    }
    function schedule() { setTimeout(tick, live ? 3000 : 6000); }
    schedule();
  }

  // ---------------------------------------------------------------- logs
  const streams = new Set();

  function nearBottom(pre) { return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40; }

  function note(text) {
    const span = document.createElement("span");
    span.className = "note";
    span.textContent = text + "\n";
    return span;
  }

  function setWindow(pre, data) {
    pre.innerHTML = data.html;
    pre.dataset.start = data.start;
    pre.dataset.end = data.end;
    updateEarlier(pre);
    pre.scrollTop = pre.scrollHeight;
  }

  function updateEarlier(pre) {
    const button = pre.closest(".panel").querySelector(".earlier");
    if (button) { button.hidden = !(Number(pre.dataset.start) > 0); }
  }

  function loadTail(pre) {
    pre.dataset.loading = "1";
    return fetchOk(pre.dataset.url).then(function (r) { return r.json(); }).then(function (data) {
      setWindow(pre, data);
      delete pre.dataset.loading;
      if (pre.dataset.running === "1") { stream(pre); }
    }).catch(function () { delete pre.dataset.loading; });
  }

  function loadEarlier(pre) {
    const start = Number(pre.dataset.start || 0);
    if (start <= 0) { return; }
    fetchOk(pre.dataset.url + "?end=" + start).then(function (r) { return r.json(); }).then(function (data) {
      const height = pre.scrollHeight;
      pre.insertAdjacentHTML("afterbegin", data.html);
      pre.dataset.start = data.start;
      pre.scrollTop += pre.scrollHeight - height; // keep the reader's place
      updateEarlier(pre);
    }).catch(function () {});
  }

  function stream(pre) {
    if (pre._source || !window.EventSource) { return; }
    const source = new EventSource(pre.dataset.url + "/events?offset=" + (pre.dataset.end || 0));
    pre._source = source;
    streams.add(source);
    source.addEventListener("chunk", function (event) {
      const data = JSON.parse(event.data);
      const follow = nearBottom(pre);
      pre.insertAdjacentHTML("beforeend", data.html);
      pre.dataset.end = data.end;
      if (pre.innerHTML.length > MAX_LOG_CHARS) { // too much for a page: keep the tail only
        source.close(); streams.delete(source); pre._source = null;
        loadTail(pre);
        return;
      }
      if (follow) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("skipped", function (event) {
      const data = JSON.parse(event.data);
      pre.appendChild(note("… " + (data.to - data.from) + " bytes skipped (output came too fast); the raw log has them …"));
    });
    source.addEventListener("end", function () {
      source.close(); streams.delete(source); pre._source = null;
      pre.dataset.running = "0";
    });
    function later(ms) { // the server is busy (too many streams) or the stream broke: try again
      source.close(); streams.delete(source); pre._source = null;
      setTimeout(function () { if (pre.isConnected && pre.dataset.running === "1") { stream(pre); } }, ms);
    }
    source.addEventListener("busy", function (event) { later(JSON.parse(event.data).retry_ms || 5000); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) { later(5000); }
    });
  }

  function shown(pre) {
    const details = pre.closest("details");
    return details && details.open && !pre.closest(".panel").hidden;
  }

  function show(pre) { // load a log the reader can now see, once
    if (pre.dataset.end === undefined && !pre.dataset.loading) { loadTail(pre); }
  }

  function initLogs(root) {
    root.querySelectorAll(".tabs").forEach(initTabs);
    root.querySelectorAll("pre.log").forEach(function (pre) {
      if (pre.dataset.end !== undefined) {
        pre.scrollTop = pre.scrollHeight;
        if (pre.dataset.running === "1") { stream(pre); }
      } else if (shown(pre)) {
        show(pre);
      }
      const panel = pre.closest(".panel");
      panel.querySelector(".earlier").addEventListener("click", function () { loadEarlier(pre); });
      const stamps = panel.querySelector(".stamps");
      stamps.addEventListener("click", function () {
        const on = pre.classList.toggle("show-ts");
        stamps.setAttribute("aria-pressed", on ? "true" : "false");
      });
    });
    root.querySelectorAll("details.step").forEach(function (details) {
      details.addEventListener("toggle", function () {
        if (!details.open) { return; }
        details.querySelectorAll("pre.log").forEach(function (pre) {
          if (shown(pre)) { show(pre); }
        });
      });
    });
  }

  function initTabs(list) {
    const tabs = Array.from(list.querySelectorAll("[role=tab]"));
    function select(tab, focus) {
      tabs.forEach(function (t) {
        const on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        const panel = document.getElementById(t.getAttribute("aria-controls"));
        panel.hidden = !on;
        const pre = panel.querySelector("pre.log");
        if (on && pre && shown(pre)) { show(pre); }
      });
      if (focus) { tab.focus(); }
    }
    tabs.forEach(function (tab, i) {
      tab.addEventListener("click", function () { select(tab, false); });
      tab.addEventListener("keydown", function (event) {
        const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
        if (step) { event.preventDefault(); select(tabs[(i + step + tabs.length) % tabs.length], true); }
      });
    });
    const first = tabs.find(function (t) { return t.getAttribute("aria-selected") === "true"; }) || tabs[0];
    if (first) { select(first, false); }
  }

  // ---------------------------------------------------------------- build page refresh
  function pollBuild(live) {
    function tick() {
      if (live.dataset.unfinished !== "1") { return; }
      if (document.hidden) { return setTimeout(tick, 1500); }
      fetchOk(live.dataset.stateUrl + "?sig=" + encodeURIComponent(live.dataset.sig)).then(function (r) {
        if (r.status !== 200) { return; }
        live.dataset.sig = r.headers.get("x-circlet-sig") || "";
        return r.text().then(function (html) { replace(live, html); });
      }).catch(function () {}).then(function () { setTimeout(tick, 1500); });
    }
    setTimeout(tick, 1500);
  }

  function replace(live, html) {
    const opened = {}, stamps = {}, scroll = {};
    live.querySelectorAll("details.step").forEach(function (d) { opened[d.id] = d.open; });
    live.querySelectorAll("pre.log").forEach(function (pre) {
      stamps[pre.dataset.url] = pre.classList.contains("show-ts");
      scroll[pre.dataset.url] = nearBottom(pre) ? null : pre.scrollTop;
    });
    const focused = document.activeElement && document.activeElement.id;
    streams.forEach(function (s) { s.close(); });
    streams.clear();
    const graph = document.getElementById("wf"); // it refreshes itself: keep it as it is
    live.innerHTML = html;
    const slot = document.getElementById("wf");
    if (graph && slot && slot !== graph) { slot.replaceWith(graph); }
    live.dataset.unfinished = live.querySelector(".buildhead .status.run, .buildhead .status.wait") ? "1" : "0";
    live.querySelectorAll("details.step").forEach(function (d) {
      if (d.id in opened && !d.querySelector(".status.bad")) { d.open = opened[d.id]; }
    });
    live.querySelectorAll("pre.log").forEach(function (pre) {
      if (stamps[pre.dataset.url]) { pre.classList.add("show-ts"); }
    });
    initLogs(live);
    live.querySelectorAll("pre.log").forEach(function (pre) {
      const top = scroll[pre.dataset.url];
      if (top !== undefined && top !== null) { pre.scrollTop = top; }
    });
    if (focused && document.getElementById(focused)) { document.getElementById(focused).focus(); }
  }

  // ---------------------------------------------------------------- workflow graph
  // Refreshed while the workflow is not finished (on its page and on the build pages of its
  // jobs, even after that build ended): jobs started later appear by themselves. Approve and
  // Cancel workflow are sent in the background and the graph redrawn, without leaving the page.
  let graphTimer = null;

  function pollGraph(now) {
    const wf = document.getElementById("wf");
    if (!wf) { return; }
    clearTimeout(graphTimer);
    function schedule(ms) { graphTimer = setTimeout(function () { pollGraph(false); }, ms); }
    if (!now && wf.dataset.live !== "1") { return; }
    if (!now && document.hidden) { return schedule(2000); }
    const url = wf.dataset.poll + (wf.dataset.poll.indexOf("?") < 0 ? "?" : "&") + "sig=" + encodeURIComponent(wf.dataset.sig);
    fetchOk(url).then(function (r) {
      if (r.status !== 200 && r.status !== 204) { return; }
      wf.dataset.live = r.headers.get("x-circlet-live") || "0";
      if (r.status !== 200) { return; }
      wf.dataset.sig = r.headers.get("x-circlet-sig") || "";
      return r.text().then(function (html) {
        const focused = document.activeElement && wf.contains(document.activeElement);
        wf.innerHTML = html;
        if (focused) { const h = wf.querySelector("h2"); if (h) { h.tabIndex = -1; h.focus(); } }
      });
    }).catch(function () {}).then(function () {
      if (wf.dataset.live === "1") { schedule(wf.querySelector(".status.hold") ? 4000 : 1500); }
    });
  }

  function initGraphForms() {
    document.addEventListener("submit", function (event) {
      const form = event.target;
      const wf = document.getElementById("wf");
      if (!wf || !form.classList.contains("wfact") || !wf.contains(form) || !window.fetch) { return; }
      event.preventDefault();
      const button = form.querySelector("button");
      if (button) { button.disabled = true; }
      const error = wf.querySelector(".wferror");
      fetch(form.action, {
        method: "POST", credentials: "same-origin", headers: FRAGMENT.headers,
        body: new URLSearchParams(new FormData(form)),
      }).then(function (r) {
        if (r.ok) { wf.dataset.live = "1"; wf.dataset.sig = ""; return pollGraph(true); }
        return r.json().then(function (data) {
          if (error) { error.textContent = data.message || ("HTTP " + r.status); error.hidden = false; }
          if (button) { button.disabled = false; }
        });
      }).catch(function () { form.submit(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("tbody[data-poll]").forEach(pollRows);
    const live = document.getElementById("live");
    if (live) {
      initLogs(live);
      pollBuild(live);
    }
    initGraphForms();
    pollGraph(false);
  });
})();
