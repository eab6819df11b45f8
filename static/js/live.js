/* Live updates: one websocket to /ws/events/ per page (see docs/events.md).
 *
 * - task.updated goes to the task bar (Paddock.taskbar.applyEvent); while the socket is open and
 *   carries every event the user may see, the task bar's 2 s polling pauses.
 * - vm.updated re-draws the state of that VM wherever the page shows it ([data-vm-id]) and, on
 *   the VM's own page, re-reads the page header (power buttons follow the new state).
 * - host.updated re-draws a host's status dot ([data-host-id]).
 * - console.status tells a VM page who has its console open.
 * - On a task page the socket narrows to that task and streams its log and progress.
 *
 * - On connect and on every reconnect the page asks what the objects it shows are now
 *   ({"current": {vms, hosts, tasks}}: the VMs and hosts drawn with a state, the task bar's
 *   unfinished tasks, the task page's task); the answers are ordinary *.updated messages marked
 *   "current", so a change made before the socket was there (the page's own action, a reload,
 *   a dropped connection) is on screen as soon as the socket is.
 *
 * Every message is also dispatched on document as a "paddock:event" CustomEvent, so page
 * scripts (console, charts) can listen without a socket of their own. The connection comes
 * back with backoff (1, 2, 4 ... 30 s); a close with 4401 means the session is gone: log in.
 */
(function () {
  "use strict";

  const CLOSE_UNAUTHENTICATED = 4401;
  const BACKOFF_MAX = 30000;
  const STATE_LABELS = {
    running: "Running",
    paused: "Paused",
    shutoff: "Shut off",
    crashed: "Crashed",
    pmsuspended: "Suspended (PM)",
    unknown: "Unknown",
  };
  const HOST_LABELS = { online: "Online", offline: "Offline", unknown: "Unknown", error: "Error" };
  const FINAL_TASK_STATES = ["succeeded", "failed", "cancelled"];
  const MAX_CURRENT = 1000; // the socket answers at most this many ids at once

  const live = {
    ws: null,
    open: false,
    scope: "none", // "all" after hello, "objects" after a narrowing subscribe
    subscription: null, // what this page asked for (sent again after a reconnect)
    delay: 1000,
    connects: 0,
    timer: null,
    stopped: false,

    /* True while the socket delivers every task event the user may see: no polling needed. */
    feedsTasks: function () {
      return this.open && this.scope === "all";
    },

    isOpen: function () {
      return this.open;
    },

    url: function () {
      return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/events/";
    },

    connect: function () {
      if (this.stopped || !("WebSocket" in window)) return;
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (e) {
        this.retry();
        return;
      }
      this.ws = ws;
      ws.onmessage = (m) => {
        let event;
        try {
          event = JSON.parse(m.data);
        } catch (e) {
          return;
        }
        this.handle(event);
      };
      ws.onclose = (e) => {
        const wasOpen = this.open;
        this.open = false;
        this.scope = "none";
        this.ws = null;
        setLiveFlag(false);
        if (e.code === CLOSE_UNAUTHENTICATED) {
          this.stopped = true;
          const login = document.body.dataset.loginUrl || "/login/";
          location.href = login + "?next=" + encodeURIComponent(location.pathname + location.search);
          return;
        }
        if (wasOpen) this.delay = 1000;
        this.retry();
      };
      ws.onerror = () => {
        /* onclose follows and retries */
      };
    },

    retry: function () {
      if (this.stopped) return;
      clearTimeout(this.timer);
      const wait = this.delay;
      this.delay = Math.min(this.delay * 2, BACKOFF_MAX);
      this.timer = setTimeout(() => this.connect(), wait + Math.random() * 250);
    },

    send: function (data) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(data));
    },

    /* Narrow the socket to some objects ({"vms": [...], "tasks": [...]}), or widen it (null). */
    subscribe: function (spec) {
      this.subscription = spec;
      if (this.open) this.send(this.subscribeMessage());
    },

    /* Objects are added to the broad feed (keep_all): the task bar keeps its events. */
    subscribeMessage: function () {
      return this.subscription
        ? { subscribe: this.subscription, keep_all: true }
        : { subscribe: null };
    },

    askCurrent: function () {
      const objects = pageObjects();
      if (objects.vms.length || objects.hosts.length || objects.tasks.length) this.send({ current: objects });
    },

    handle: function (event) {
      switch (event.type) {
        case "hello":
          this.open = true;
          this.scope = "all";
          this.connects += 1;
          setLiveFlag(true);
          if (this.subscription) this.send(this.subscribeMessage());
          // What changed before this socket was there: the objects on the page, as they are.
          this.askCurrent();
          // Events missed while the socket was down: read the bar once.
          if (this.connects > 1) refreshTaskbar();
          break;
        case "current":
          break;
        case "subscribed":
          this.scope = event.scope;
          this.keepAll = !!event.keep_all;
          // Lines logged before the subscription took effect: the server's copy, once.
          if (taskPage.id && (event.scope === "objects" || event.keep_all)) taskPage.reload();
          break;
        case "task.updated":
          if (window.Paddock && window.Paddock.taskbar && !unchangedTask(event)) {
            window.Paddock.taskbar.applyEvent(event);
          }
          taskPage.updated(event);
          break;
        case "task.log":
          taskPage.log(event);
          break;
        case "vm.updated":
          applyVmState(event);
          break;
        case "host.updated":
          applyHostStatus(event);
          break;
        case "console.status":
          consoleStatus.apply(event);
          break;
        default:
          break;
      }
      document.dispatchEvent(new CustomEvent("paddock:event", { detail: event }));
    },
  };

  /* The ids of what the page shows with a live state, at most MAX_CURRENT in all. */
  function pageObjects() {
    let room = MAX_CURRENT;
    function ids(elements, read) {
      const seen = [];
      elements.forEach(function (el) {
        const id = Number(read(el));
        if (id > 0 && !seen.includes(id) && seen.length < room) seen.push(id);
      });
      room -= seen.length;
      return seen;
    }
    const tasks = ids(
      Array.from(document.querySelectorAll("#taskbar-rows tr[data-task]")).filter(
        (tr) => !FINAL_TASK_STATES.includes(tr.dataset.state)
      ),
      (tr) => tr.dataset.task
    );
    if (taskPage.id && !tasks.includes(taskPage.id) && room > 0) {
      tasks.push(taskPage.id);
      room -= 1;
    }
    const vms = ids(document.querySelectorAll("[data-vm-id][data-vm-state]"), (el) => el.dataset.vmId);
    const hosts = ids(document.querySelectorAll("[data-host-id][data-host-status]"), (el) => el.dataset.hostId);
    return { vms: vms, hosts: hosts, tasks: tasks };
  }

  /* A "current" answer for a task whose row already shows that final state: nothing to draw. */
  function unchangedTask(event) {
    if (!event.current) return false;
    const row = document.getElementById("task-row-" + event.id);
    return !!row && row.dataset.state === event.state && FINAL_TASK_STATES.includes(event.state);
  }

  function setLiveFlag(on) {
    document.documentElement.dataset.live = on ? "open" : "down";
  }

  function refreshTaskbar() {
    const body = document.getElementById("taskbar-rows");
    if (body && window.htmx) window.htmx.ajax("GET", body.getAttribute("hx-get"), { target: body, swap: "innerHTML" });
  }

  // --- VM state ---------------------------------------------------------------------------------

  /* Re-draw one state glyph (the vm_state template tag's markup or a tree icon's badge). */
  function setGlyph(svg, state) {
    const use = svg.querySelector("use");
    if (!use) return;
    const href = use.getAttribute("href") || "";
    use.setAttribute("href", href.replace(/#st-[a-z]+$/, "#st-" + state));
    svg.setAttribute("class", (svg.getAttribute("class") || "").replace(/\bi-st-[a-z]+\b/, "i-st-" + state));
  }

  function setStateClass(el, state) {
    el.className = el.className.replace(/\bstate-[a-z]+\b/, "state-" + state);
  }

  function paintState(root, state) {
    const label = STATE_LABELS[state] || state;
    const glyphState = STATE_LABELS[state] ? state : "unknown";
    root.dataset.vmState = state;
    const wraps = [root, ...root.querySelectorAll(".vm-ico, .state")];
    wraps.forEach(function (el) {
      if (!el.classList || !(el.classList.contains("vm-ico") || el.classList.contains("state"))) return;
      setStateClass(el, state);
      el.querySelectorAll("svg[class*='i-st-']").forEach((svg) => setGlyph(svg, glyphState));
      if (el.classList.contains("state")) {
        // With a label the text follows the glyph; without one the title carries it.
        const text = Array.from(el.childNodes).find((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
        if (text) text.textContent = label;
        else el.title = label;
      }
    });
    if (root.hasAttribute("data-vm-state-label")) root.textContent = label;
    root.querySelectorAll("[data-vm-state-label]").forEach((el) => (el.textContent = label));
    if (root.matches("a[title]")) {
      root.title = root.title.replace(/ — .*$/, " — " + label);
    }
  }

  let headerTimer = null;

  function applyVmState(event) {
    if (!event.id || !event.state) return;
    let changed = false;
    document.querySelectorAll('[data-vm-id="' + event.id + '"][data-vm-state]').forEach(function (el) {
      if (el.dataset.vmState !== event.state) {
        paintState(el, event.state);
        changed = true;
      }
    });
    // The VM's own page: its header (power buttons, lifecycle chip) comes from the server.
    // One action may send several messages in a row; read the header once they settle. A
    // "current" answer that matches what the page shows (a settled VM) needs no new header.
    const shownLock = document.body.dataset.vmLock;
    const sameLock = shownLock !== undefined && shownLock === String(event.lock || "");
    const settled = event.lifecycle === "ready" && event.state === event.desired_state && sameLock;
    if (event.current && !changed && settled) return;
    if (document.body.dataset.pageVm === String(event.id)) {
      clearTimeout(headerTimer);
      headerTimer = setTimeout(refreshHeader, 250);
    }
  }

  function refreshHeader() {
    const head = document.querySelector("main .obj-head");
    if (!head) return;
    fetch(location.href, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then(function (html) {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.querySelector("main .obj-head");
        if (!fresh) return;
        // The task holding the VM, as this header was drawn (what a "current" answer is held to).
        if (doc.body.dataset.vmLock !== undefined) document.body.dataset.vmLock = doc.body.dataset.vmLock;
        // Keep a menu that the user has open as it is.
        if (head.querySelector("details[open]")) return;
        head.replaceWith(fresh);
        if (window.htmx) window.htmx.process(fresh);
        document.dispatchEvent(new CustomEvent("paddock:header", { detail: { element: fresh } }));
      })
      .catch(function () {
        /* the next event or a reload will do */
      });
  }

  // --- host status ------------------------------------------------------------------------------

  function applyHostStatus(event) {
    if (!event.id || !event.status) return;
    const label = HOST_LABELS[event.status] || event.status;
    document.querySelectorAll('[data-host-id="' + event.id + '"][data-host-status]').forEach(function (el) {
      el.dataset.hostStatus = event.status;
      el.querySelectorAll(".dot").forEach((dot) => (dot.className = dot.className.replace(/\bdot-[a-z]+\b/, "dot-" + event.status)));
      el.querySelectorAll("[data-host-status-label]").forEach((l) => (l.textContent = label));
      if (el.matches("a[title]")) el.title = el.title.replace(/ — .*$/, " — " + label);
      if (event.last_error) el.dataset.hostError = event.last_error;
    });
  }

  // --- who has a VM's console open --------------------------------------------------------------

  const consoleStatus = {
    connected: {}, // vm id -> {vnc: [...], serial: [...]}

    apply: function (event) {
      const vm = String(event.vm);
      const per = (this.connected[vm] = this.connected[vm] || {});
      per[event.kind] = event.connected || [];
      this.render(vm);
    },

    render: function (vm) {
      const per = this.connected[vm] || {};
      const me = document.body.dataset.user || "";
      document.querySelectorAll('[data-console-status][data-vm-id="' + vm + '"]').forEach(function (el) {
        const parts = [];
        [["vnc", "display"], ["serial", "serial console"]].forEach(function ([kind, what]) {
          const names = (per[kind] || []).map((n) => (n === me ? n + " (you)" : n));
          if (names.length) parts.push(what + ": " + names.join(", "));
        });
        const text = el.querySelector("[data-console-status-text]");
        if (text) text.textContent = parts.length ? "Console in use by " + parts.join("; ") : "";
        el.hidden = !parts.length;
      });
    },

    /* The page's first picture, from the API (a role without the console right gets none). */
    load: function () {
      document.querySelectorAll("[data-console-status][data-status-url]").forEach((el) => {
        const vm = el.dataset.vmId;
        fetch(el.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then((r) => (r.ok ? r.json() : null))
          .then((body) => {
            if (!body) return;
            // An event that arrived meanwhile is newer than this answer.
            const per = (this.connected[vm] = this.connected[vm] || {});
            ["vnc", "serial"].forEach((kind) => {
              if (!(kind in per)) per[kind] = body[kind] || [];
            });
            this.render(vm);
          })
          .catch(function () {});
      });
    },
  };

  // --- the task page: log lines and progress as they happen -------------------------------------

  const taskPage = {
    id: null,

    init: function () {
      const el = document.querySelector("[data-task-live]");
      if (!el) return;
      this.id = Number(el.dataset.taskLive);
      if (el.dataset.taskFinal !== "1") live.subscription = { tasks: [this.id] };
    },

    root: function () {
      return document.querySelector('[data-task-live="' + this.id + '"]');
    },

    log: function (event) {
      if (event.id !== this.id) return;
      const root = this.root();
      const box = root && root.querySelector("[data-task-log]");
      if (!box) return;
      const empty = box.querySelector(".log-empty");
      if (empty) empty.remove();
      const line = document.createElement("div");
      const level = event.level || "info";
      line.className = "log-line log-" + level + " log-new";
      const ts = document.createElement("span");
      ts.className = "log-ts";
      ts.textContent = new Date().toTimeString().slice(0, 8);
      const lv = document.createElement("span");
      lv.className = "log-level";
      lv.textContent = level;
      const msg = document.createElement("span");
      msg.className = "log-msg";
      msg.textContent = event.line;
      line.append(ts, lv, msg);
      const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      box.appendChild(line);
      if (atBottom) box.scrollTop = box.scrollHeight;
    },

    updated: function (event) {
      if (event.id !== this.id) return;
      const root = this.root();
      if (!root) return;
      const pct = Math.max(0, Math.min(100, Number(event.progress) || 0));
      root.querySelectorAll("[data-task-progress]").forEach(function (bar) {
        bar.style.width = pct + "%";
        bar.className = bar.className.replace(/\btstate-bg-[a-z]+\b/, "tstate-bg-" + event.state);
      });
      root.querySelectorAll("[data-task-progress-text]").forEach((t) => (t.textContent = pct + "%"));
      root.dataset.taskState = event.state;
      // State, timing, result and error: the server's rendering, once the task is over (or
      // when it starts, for its start time).
      if (FINAL_TASK_STATES.includes(event.state) || root.dataset.taskShownState !== event.state) {
        root.dataset.taskShownState = event.state;
        this.reload();
      }
    },

    reload: function () {
      const root = this.root();
      if (!root || !root.dataset.liveUrl || !window.htmx) return;
      window.htmx.ajax("GET", root.dataset.liveUrl, { target: root, swap: "outerHTML" });
    },
  };

  function init() {
    setLiveFlag(false);
    taskPage.init();
    consoleStatus.load();
    live.connect();
    // Re-drawn parts (the task bar's rows, lazily loaded tree nodes) carry the server's state.
    window.addEventListener("pagehide", function () {
      live.stopped = true;
      if (live.ws) live.ws.close(1000);
    });
  }

  window.Paddock = window.Paddock || {};
  window.Paddock.live = live;

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
