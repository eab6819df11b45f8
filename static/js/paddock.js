/* Paddock UI shell: resource tree, task bar, search, small conveniences. No framework; htmx
 * does the server round trips (lazy tree nodes, task bar polling, search suggestions). */
(function () {
  "use strict";

  const OPEN_KEY = "paddock.tree.open";

  // --- resource tree ---------------------------------------------------------------------

  function loadOpenSet() {
    try {
      return new Set(JSON.parse(localStorage.getItem(OPEN_KEY) || "[]"));
    } catch (e) {
      return new Set();
    }
  }

  function saveOpenSet(set) {
    try {
      localStorage.setItem(OPEN_KEY, JSON.stringify(Array.from(set).slice(-500)));
    } catch (e) {
      /* storage full or disabled: the tree just forgets */
    }
  }

  const openSet = loadOpenSet();

  function setOpen(node, open, remember) {
    if (!node || !node.classList.contains("node")) return;
    node.classList.toggle("open", open);
    node.setAttribute("aria-expanded", open ? "true" : "false");
    const twisty = node.querySelector(":scope > .tree-row > .twisty");
    if (twisty) twisty.setAttribute("aria-label", open ? "Collapse" : "Expand");
    if (open) {
      // Lazy children: the <ul> carries hx-get with the trigger "paddock:expand once".
      const lazy = node.querySelector(":scope > ul.lazy");
      if (lazy && window.htmx) {
        window.htmx.process(lazy); // idempotent; makes sure htmx listens before the event
        window.htmx.trigger(lazy, "paddock:expand");
      }
    }
    if (remember && node.dataset.node) {
      if (open) openSet.add(node.dataset.node);
      else openSet.delete(node.dataset.node);
      saveOpenSet(openSet);
    }
  }

  function restoreTree(root) {
    root.querySelectorAll(".node[data-node]").forEach(function (node) {
      if (openSet.has(node.dataset.node)) setOpen(node, true, false);
    });
  }

  function markCurrent(root) {
    const tree = document.getElementById("tree");
    if (!tree) return;
    const here = location.pathname + location.search;
    const links = Array.from(root.querySelectorAll("a.tree-link"));
    let best = links.find((a) => a.getAttribute("href") === here);
    if (!best) best = links.find((a) => a.getAttribute("href") === location.pathname);
    if (!best) return;
    tree.querySelectorAll("a.tree-link.current").forEach((a) => a.classList.remove("current"));
    best.classList.add("current");
    best.setAttribute("aria-current", "page");
    // Keep the current object in view, without stealing focus.
    const box = tree.getBoundingClientRect();
    const r = best.getBoundingClientRect();
    if (r.top < box.top || r.bottom > box.bottom) best.scrollIntoView({ block: "center" });
  }

  function revealPath(tree) {
    (tree.dataset.reveal || "").split(/\s+/).filter(Boolean).forEach(function (id) {
      const node = tree.querySelector('.node[data-node="' + id + '"]');
      if (node) {
        // Open every ancestor too.
        let p = node.parentElement && node.parentElement.closest(".node");
        while (p) {
          setOpen(p, true, false);
          p = p.parentElement && p.parentElement.closest(".node");
        }
        setOpen(node, true, false);
      }
    });
  }

  function visibleLinks(tree) {
    return Array.from(tree.querySelectorAll("a.tree-link")).filter(function (a) {
      return a.offsetParent !== null;
    });
  }

  function initTree() {
    const tree = document.getElementById("tree");
    if (!tree) return;
    restoreTree(tree);
    revealPath(tree);
    markCurrent(tree);

    tree.addEventListener("click", function (ev) {
      const twisty = ev.target.closest(".twisty");
      if (!twisty) return;
      ev.preventDefault();
      const node = twisty.closest(".node");
      setOpen(node, !node.classList.contains("open"), true);
    });

    tree.addEventListener("dblclick", function (ev) {
      const link = ev.target.closest("a.tree-link");
      const node = link && link.closest(".node");
      if (node) {
        ev.preventDefault();
        setOpen(node, !node.classList.contains("open"), true);
      }
    });

    // Arrow keys walk the tree like a file manager's.
    tree.addEventListener("keydown", function (ev) {
      const link = ev.target.closest("a.tree-link");
      if (!link) return;
      const links = visibleLinks(tree);
      const i = links.indexOf(link);
      const node = link.closest(".node, .leaf");
      let target = null;
      switch (ev.key) {
        case "ArrowDown":
          target = links[i + 1];
          break;
        case "ArrowUp":
          target = links[i - 1];
          break;
        case "ArrowRight":
          if (node && node.classList.contains("node")) {
            if (!node.classList.contains("open")) setOpen(node, true, true);
            else target = links[i + 1];
          }
          break;
        case "ArrowLeft":
          if (node && node.classList.contains("node") && node.classList.contains("open")) {
            setOpen(node, false, true);
          } else {
            const parent = node && node.parentElement.closest(".node");
            if (parent) target = parent.querySelector(":scope > .tree-row > a.tree-link");
          }
          break;
        case "Home":
          target = links[0];
          break;
        case "End":
          target = links[links.length - 1];
          break;
        default:
          return;
      }
      ev.preventDefault();
      if (target) target.focus();
    });

    // Children that arrive later: re-open remembered nodes, mark the current object.
    document.body.addEventListener("htmx:afterSwap", function (ev) {
      if (!tree.contains(ev.target)) return;
      restoreTree(ev.target);
      revealPath(tree);
      markCurrent(ev.target);
    });
  }

  // --- task bar -----------------------------------------------------------------------------

  const taskbar = {
    el: null,

    init: function () {
      this.el = document.getElementById("taskbar");
      if (!this.el) return;
      const toggle = this.el.querySelector("[data-taskbar-toggle]");
      toggle.addEventListener("click", () => this.setCollapsed(!this.el.classList.contains("collapsed")));
      this.el.addEventListener("click", function (ev) {
        if (ev.target.closest("a, button")) return;
        const row = ev.target.closest("tr[data-href]");
        if (row) location.href = row.dataset.href;
      });
      document.body.addEventListener("htmx:afterSwap", (ev) => {
        if (ev.target.id === "taskbar-rows" || (ev.target.closest && ev.target.closest("#taskbar-rows"))) {
          this.summarize();
        }
      });
      this.summarize();
    },

    setCollapsed: function (collapsed) {
      this.el.classList.toggle("collapsed", collapsed);
      this.el.querySelector("[data-taskbar-toggle]").setAttribute("aria-expanded", collapsed ? "false" : "true");
      // A cookie, so the server renders the bar the same way on the next page (no flicker).
      document.cookie = "paddock_taskbar=" + (collapsed ? "collapsed" : "open") + "; path=/; max-age=31536000; SameSite=Lax";
    },

    summarize: function () {
      const out = document.getElementById("taskbar-summary");
      if (!out) return;
      const rows = this.el.querySelectorAll("tr.task-row");
      let running = 0;
      let failed = 0;
      rows.forEach(function (r) {
        if (r.dataset.state === "running" || r.dataset.state === "queued") running += 1;
        if (r.dataset.state === "failed") failed += 1;
      });
      const parts = [];
      if (running) parts.push('<span class="ts-running">' + running + " running</span>");
      if (failed) parts.push('<span class="ts-failed">' + failed + " failed recently</span>");
      out.innerHTML = parts.join(" · ");
      this.settleBusyBanners();
    },

    /* A page that said "busy with task #N" says so no longer once the bar shows N finished. */
    settleBusyBanners: function () {
      document.querySelectorAll("[data-busy-task]").forEach(function (banner) {
        const id = banner.dataset.busyTask;
        const row = document.getElementById("task-row-" + id);
        const state = row && row.dataset.state;
        if (!state || state === "queued" || state === "running") return;
        banner.removeAttribute("data-busy-task");
        banner.classList.remove("alert-info");
        banner.classList.add(state === "succeeded" ? "alert-success" : "alert-error");
        const spinner = banner.querySelector(".spin");
        if (spinner) spinner.remove();
        const text = banner.querySelector("[data-busy-text]");
        const link = document.createElement("a");
        link.href = location.pathname + location.search;
        link.textContent = "Reload";
        text.textContent = "Task #" + id + " " + state + ". ";
        text.appendChild(link);
        text.appendChild(document.createTextNode(" to see the result."));
      });
    },

    /* Re-render one task's row from the server. This is the single entry point for live
     * updates: the websocket consumer will call it with the task id of each "task.updated"
     * event, and polling can then stop. A task not yet in the bar is added on top. */
    refreshRow: function (taskId) {
      const body = document.getElementById("taskbar-rows");
      if (!body || !window.htmx) return Promise.resolve();
      const url = "/tasks/" + encodeURIComponent(taskId) + "/row/";
      const existing = document.getElementById("task-row-" + taskId);
      if (existing) {
        return window.htmx.ajax("GET", url, { target: existing, swap: "outerHTML" });
      }
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      return window.htmx.ajax("GET", url, { target: body, swap: "afterbegin" });
    },

    /* What a websocket "task.updated" event will be handed to. */
    applyEvent: function (event) {
      if (event && event.type === "task.updated" && event.id) return this.refreshRow(event.id);
      return Promise.resolve();
    },
  };

  // --- search -----------------------------------------------------------------------------

  function initSearch() {
    const form = document.querySelector("form[data-search]");
    if (!form) return;
    const input = form.querySelector("input[name=q]");
    const pop = document.getElementById("search-pop");

    function close() {
      pop.innerHTML = "";
    }

    document.addEventListener("keydown", function (ev) {
      const typing = ev.target.closest("input, textarea, select, [contenteditable]");
      if (ev.key === "/" && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
        ev.preventDefault();
        input.focus();
        input.select();
      }
    });

    form.addEventListener("keydown", function (ev) {
      const items = Array.from(pop.querySelectorAll("a"));
      const i = items.indexOf(document.activeElement);
      if (ev.key === "Escape") {
        close();
        input.blur();
      } else if (ev.key === "ArrowDown" && items.length) {
        ev.preventDefault();
        (items[i + 1] || items[0]).focus();
      } else if (ev.key === "ArrowUp" && items.length) {
        ev.preventDefault();
        if (i <= 0) input.focus();
        else items[i - 1].focus();
      }
    });

    document.addEventListener("click", function (ev) {
      if (!form.contains(ev.target)) close();
    });
  }

  // --- small conveniences -----------------------------------------------------------------

  function initMenus() {
    document.addEventListener("click", function (ev) {
      document.querySelectorAll("details[data-menu][open]").forEach(function (menu) {
        if (!menu.contains(ev.target)) menu.removeAttribute("open");
      });
    });
    document.addEventListener("keydown", function (ev) {
      if (ev.key !== "Escape") return;
      document.querySelectorAll("details[data-menu][open]").forEach(function (menu) {
        menu.removeAttribute("open");
      });
    });
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      area.remove();
    }
    return Promise.resolve();
  }

  function initCopy() {
    document.addEventListener("click", function (ev) {
      const btn = ev.target.closest("[data-copy]");
      if (!btn) return;
      const source = document.querySelector(btn.dataset.copy);
      if (!source) return;
      copyText(source.textContent.trim()).then(function () {
        btn.classList.add("copied");
        const label = btn.querySelector("span");
        const before = label ? label.textContent : null;
        if (label) label.textContent = "Copied";
        setTimeout(function () {
          btn.classList.remove("copied");
          if (label) label.textContent = before;
        }, 1500);
      });
    });
  }

  function initConfirm() {
    document.addEventListener("submit", function (ev) {
      const form = ev.target.closest("form[data-confirm]");
      if (form && !window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }

  function initAlerts() {
    document.addEventListener("click", function (ev) {
      const btn = ev.target.closest("[data-dismiss]");
      if (btn) btn.closest(".alert").remove();
    });
  }

  function init() {
    initTree();
    taskbar.init();
    initSearch();
    initMenus();
    initCopy();
    initConfirm();
    initAlerts();
    document.documentElement.dataset.ready = "1";
  }

  window.Paddock = { taskbar: taskbar, tree: { setOpen: setOpen } };

  // After htmx's own DOMContentLoaded handler (this script is deferred after htmx's).
  if (document.readyState === "complete") init();
  else document.addEventListener("DOMContentLoaded", init);
})();
