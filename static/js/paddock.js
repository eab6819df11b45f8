/* Paddock UI shell: resource tree, task bar, search, action dialogs, the create wizard and small
 * conveniences. No framework; htmx does the server round trips of the shell (lazy tree nodes,
 * task bar polling, search suggestions), fetch those of the dialogs and the wizard. */
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
  // The lazy lists already asked for (not an attribute: htmx would see the element changed).
  const expanded = new WeakSet();

  function setOpen(node, open, remember) {
    if (!node || !node.classList.contains("node")) return;
    node.classList.toggle("open", open);
    node.setAttribute("aria-expanded", open ? "true" : "false");
    const twisty = node.querySelector(":scope > .tree-row > .twisty");
    if (twisty) twisty.setAttribute("aria-label", open ? "Collapse" : "Expand");
    if (open) {
      // Lazy children: the <ul> carries hx-get with the trigger "paddock:expand once". Each
      // list is asked once: htmx.process on a list whose classes changed (htmx-request while
      // it loads) would set it up again, and "once" would then load it a second time.
      const lazy = node.querySelector(":scope > ul.lazy");
      if (lazy && window.htmx && !expanded.has(lazy)) {
        expanded.add(lazy);
        window.htmx.process(lazy); // makes sure htmx listens before the event
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
      if (openSet.has(node.dataset.node) && !otherGroup(node)) setOpen(node, true, false);
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
    const box = (tree.closest(".sidebar") || tree).getBoundingClientRect(); // what scrolls
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

  // --- the tree's grouping: hosts and tenants, or tags (html[data-tree-group], theme.js) -------

  const GROUP_KEY = "paddock.tree.group";

  function treeGroup() {
    return document.documentElement.dataset.treeGroup === "tag" ? "tag" : "host";
  }

  /* Whether a node sits under the grouping not shown (its list should not load). */
  function otherGroup(node) {
    const top = node.closest("[data-group]");
    return !!top && top.dataset.group !== treeGroup();
  }

  function setTreeGroup(tree, group) {
    if (group === "tag") document.documentElement.dataset.treeGroup = "tag";
    else delete document.documentElement.dataset.treeGroup;
    try {
      if (group === "tag") localStorage.setItem(GROUP_KEY, "tag");
      else localStorage.removeItem(GROUP_KEY);
    } catch (e) {
      /* storage disabled: the grouping lasts for this page */
    }
    document.querySelectorAll("button[data-tree-group]").forEach(function (btn) {
      btn.setAttribute("aria-pressed", btn.dataset.treeGroup === treeGroup() ? "true" : "false");
    });
    // The shown grouping's first level: the tags open at once, like the datacenter.
    const tags = tree.querySelector('.node[data-node="tags"]');
    if (group === "tag" && tags) tags.classList.add("open");
    tree.querySelectorAll(":scope > ul > .node.open").forEach(function (node) {
      if (!otherGroup(node)) setOpen(node, true, false);
    });
  }

  // --- the tree as a drawer on a narrow screen ----------------------------------------------

  function setDrawer(open) {
    document.body.classList.toggle("drawer-open", open);
    document.querySelectorAll("[data-drawer-toggle]").forEach(function (btn) {
      btn.setAttribute("aria-expanded", open ? "true" : "false");
    });
    if (open) {
      const tree = document.getElementById("tree");
      const current = tree && tree.querySelector("a.tree-link.current");
      (current || tree || document.body).focus({ preventScroll: true });
    }
  }

  function initDrawer() {
    document.addEventListener("click", function (ev) {
      if (ev.target.closest("[data-drawer-toggle]")) {
        setDrawer(!document.body.classList.contains("drawer-open"));
      } else if (ev.target.closest("[data-drawer-close]")) {
        setDrawer(false);
      } else if (ev.target.closest(".sidebar a[href]")) {
        setDrawer(false); // it closes on navigation
      }
    });
    document.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && document.body.classList.contains("drawer-open")) setDrawer(false);
    });
    window.addEventListener("pageshow", function () {
      setDrawer(false);
    });
  }

  function initTree() {
    const tree = document.getElementById("tree");
    if (!tree) return;
    if (treeGroup() === "tag") {
      const tags = tree.querySelector('.node[data-node="tags"]');
      if (tags) tags.classList.add("open");
    }
    document.querySelectorAll("button[data-tree-group]").forEach(function (btn) {
      btn.setAttribute("aria-pressed", btn.dataset.treeGroup === treeGroup() ? "true" : "false");
      btn.addEventListener("click", function () {
        setTreeGroup(tree, btn.dataset.treeGroup);
      });
    });
    // The page holds the first level only: nodes it draws open (the datacenter) load their
    // children now, like remembered and revealed ones; the rest load when opened. The
    // grouping not shown loads nothing.
    tree.querySelectorAll(".node.open").forEach(function (node) {
      if (!otherGroup(node)) setOpen(node, true, false);
    });
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

    // Children that arrive later: re-open remembered nodes, mark the current object. After the
    // settle, not the swap: htmx processes the new nodes then, and a lazy list opened before
    // would be processed again under its running request (nested lazy levels: the hosts, a
    // host, its VMs).
    document.body.addEventListener("htmx:afterSettle", function (ev) {
      if (!tree.contains(ev.target)) return;
      restoreTree(ev.target);
      revealPath(tree);
      markCurrent(ev.target);
    });
  }

  // --- task bar -----------------------------------------------------------------------------

  const taskbar = {
    el: null,

    /* Whether the 2 s poll of #taskbar-rows should run: not while the live socket delivers
     * every task event (live.js), nor while the page is hidden. */
    shouldPoll: function () {
      if (document.visibilityState !== "visible") return false;
      const live = window.Paddock && window.Paddock.live;
      return !(live && live.feedsTasks());
    },

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

    /* Re-render one task's row from the server: live.js calls it (through applyEvent) with the
     * task id of each websocket "task.updated" event. A task not yet in the bar is added on
     * top. */
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

    /* What a websocket "task.updated" event is handed to. A burst of events for one task
     * makes at most one request in flight and one after it (never two rows for a new task). */
    inflight: {},

    applyEvent: function (event) {
      if (!(event && event.type === "task.updated" && event.id)) return Promise.resolve();
      const id = event.id;
      const slot = this.inflight[id];
      if (slot) {
        slot.again = true;
        return slot.promise;
      }
      const entry = { again: false, promise: null };
      this.inflight[id] = entry;
      const run = () =>
        Promise.resolve(this.refreshRow(id))
          .catch(function () {})
          .then(() => {
            if (entry.again) {
              entry.again = false;
              return run();
            }
            delete this.inflight[id];
            this.summarize();
          });
      entry.promise = run();
      return entry.promise;
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

  // --- results in place -------------------------------------------------------------------

  /* After an action: when it sends the user back to the page they are on, re-read that page and
   * put in place what the action changes (the header with its buttons, the messages, the banner
   * that follows the new task) instead of loading the page again: the open tab (a console, the
   * charts) stays as it is. Anywhere else is a navigation. */
  const NOTICES = ["> .flash", "> [data-follow-task]", "> [data-task-state]"];

  function notices(content) {
    return NOTICES.flatMap((sel) => Array.from(content.querySelectorAll(":scope " + sel)));
  }

  function redrawOrGo(to, html) {
    const target = new URL(to, location.href);
    const head = document.querySelector("#main > .obj-head");
    const content = document.querySelector("#main > .content");
    if (target.origin !== location.origin || target.pathname !== location.pathname || !head || !content) {
      location.href = to;
      return;
    }
    // The page as the action's answer names it (it may add what to follow: ?task=), or the
    // page the answer already is (a redirect fetch followed: its messages are in it).
    const page = html
      ? Promise.resolve(html)
      : fetch(target.href, { credentials: "same-origin" }).then((r) =>
          r.ok ? r.text() : Promise.reject(r.status)
        );
    return page
      .then(function (html) {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const freshHead = doc.querySelector("#main > .obj-head");
        const freshContent = doc.querySelector("#main > .content");
        if (!freshHead || !freshContent) return Promise.reject("no header");
        head.replaceWith(freshHead);
        notices(content).forEach((el) => el.remove());
        const fresh = notices(freshContent);
        content.prepend(...fresh);
        if (doc.body.dataset.vmLock !== undefined) document.body.dataset.vmLock = doc.body.dataset.vmLock;
        if (window.htmx) {
          window.htmx.process(freshHead);
          fresh.forEach((el) => window.htmx.process(el));
        }
        document.dispatchEvent(new CustomEvent("paddock:header", { detail: { element: freshHead } }));
      })
      .catch(function () {
        location.href = to;
      });
  }

  /* The header's one-click actions (Start, Shutdown ...) post in place too. */
  function initInplaceActions() {
    document.addEventListener("submit", function (ev) {
      const form = ev.target.closest(".obj-actions form.inline-form");
      if (!form || ev.defaultPrevented || (form.method || "").toLowerCase() !== "post") return;
      ev.preventDefault();
      const button = ev.submitter || form.querySelector("[type=submit]");
      if (button) button.disabled = true;
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "HX-Request": "true" },
        credentials: "same-origin",
      })
        .then((r) => {
          const to = r.headers.get("HX-Redirect");
          if (to) return redrawOrGo(to);
          if (r.redirected && r.ok) return r.text().then((html) => redrawOrGo(r.url, html));
          if (r.status === 400 || r.status === 409) {
            return r.text().then(function (html) {
              dialog.ensure();
              dialog.show(html);
              if (button) button.disabled = false;
            });
          }
          return Promise.reject(r.status);
        })
        .catch(function () {
          location.href = form.action;
        });
    });
  }

  // --- dialog: action forms in place -------------------------------------------------------

  /* A link with data-dialog opens its page's form in a modal <dialog> instead of navigating
   * (the same URL still works as a page of its own without this script). The form posts with
   * fetch: errors come back into the dialog, success answers with an HX-Redirect to follow. */
  const dialog = {
    el: null,
    body: null,

    ensure: function () {
      if (this.el) return;
      this.el = document.createElement("dialog");
      this.el.className = "modal";
      this.el.setAttribute("aria-labelledby", "dialog-title");
      this.body = document.createElement("div");
      this.body.className = "modal-body";
      this.el.appendChild(this.body);
      document.body.appendChild(this.el);
      this.el.addEventListener("click", (ev) => {
        if (ev.target === this.el) this.close(); // the backdrop
        const closer = ev.target.closest("[data-dialog-close]");
        if (closer) {
          ev.preventDefault();
          this.close();
        }
      });
      this.el.addEventListener("submit", (ev) => {
        const form = ev.target.closest("form");
        if (!form || (form.method || "").toLowerCase() !== "post") return;
        ev.preventDefault();
        this.submit(form, ev.submitter);
      });
      this.el.addEventListener("close", () => {
        this.body.innerHTML = "";
      });
    },

    show: function (html) {
      this.body.innerHTML = html;
      initSwitches(this.body);
      if (!this.el.open) this.el.showModal();
      const first = this.body.querySelector(
        ".has-error input, .has-error select, input:not([type=hidden]):not([disabled]), select, textarea"
      );
      // A destructive confirmation starts on Cancel, so a stray Enter does not stop a VM.
      const danger = this.body.querySelector(".dialog-danger") && !first;
      const start = danger
        ? this.body.querySelector(".form-actions [data-dialog-close]")
        : first || this.body.querySelector("[data-submit]");
      (start || this.body).focus();
    },

    fail: function (url) {
      // Anything unexpected: go to the page itself, which says what is wrong.
      location.href = url;
    },

    open: function (url) {
      this.ensure();
      fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
        .then((r) => (r.ok ? r.text() : Promise.reject(r)))
        .then((html) => this.show(html))
        .catch(() => this.fail(url));
    },

    submit: function (form, submitter) {
      const button = submitter || form.querySelector("[type=submit]");
      if (button) {
        button.disabled = true;
        button.classList.add("is-busy");
      }
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "HX-Request": "true" },
        credentials: "same-origin",
      })
        .then((r) => {
          const to = r.headers.get("HX-Redirect");
          if (to) {
            this.close();
            redrawOrGo(to);
            return null;
          }
          if (r.ok || r.status === 400) return r.text();
          return Promise.reject(r);
        })
        .then((html) => {
          if (html !== null) this.show(html);
        })
        .catch(() => this.fail(form.action));
    },

    close: function () {
      if (this.el && this.el.open) this.el.close();
    },
  };

  function initDialogs() {
    document.addEventListener("click", function (ev) {
      const link = ev.target.closest("a[data-dialog]");
      if (!link || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      const menu = link.closest("details[data-menu]");
      if (menu) menu.removeAttribute("open");
      dialog.open(link.getAttribute("href"));
    });
  }

  /* A radio group that shows only the fields of the chosen option: a container with
   * data-switch holds the radios and blocks marked data-when="<value>". */
  function initSwitches(root) {
    root.querySelectorAll("[data-switch]").forEach(function (box) {
      const radios = box.querySelectorAll("input[type=radio]");
      function apply() {
        const checked = box.querySelector("input[type=radio]:checked");
        const value = checked ? checked.value : "";
        box.querySelectorAll("[data-when]").forEach(function (part) {
          part.hidden = part.dataset.when !== value;
        });
      }
      radios.forEach((r) => r.addEventListener("change", apply));
      apply();
    });
  }

  // --- create wizard --------------------------------------------------------------------------

  function text(el) {
    return el ? el.textContent.trim() : "";
  }

  function selectedText(select) {
    const opt = select && select.selectedOptions[0];
    return opt ? opt.textContent.trim() : "";
  }

  function visible(el) {
    return !el.closest("[hidden]") && !el.disabled;
  }

  function initWizard(form) {
    const steps = Array.from(form.querySelectorAll("[data-step]"));
    const tabs = Array.from(form.querySelectorAll("[data-step-tab]"));
    const names = steps.map((s) => s.dataset.step);
    const back = form.querySelector("[data-wizard-back]");
    const next = form.querySelector("[data-wizard-next]");
    const finish = form.querySelector("[data-wizard-finish]");
    const count = form.querySelector("[data-step-count]");
    const field = (name) => form.querySelector('[name="' + name + '"]');
    let current = 0;
    let quota = {};

    form.classList.add("is-stepped");

    function show(i) {
      current = Math.max(0, Math.min(steps.length - 1, i));
      steps.forEach((s, j) => s.classList.toggle("active", j === current));
      tabs.forEach(function (t, j) {
        t.classList.toggle("active", j === current);
        t.setAttribute("aria-selected", j === current ? "true" : "false");
        t.tabIndex = j === current ? 0 : -1;
      });
      back.disabled = current === 0;
      next.hidden = current === steps.length - 1;
      finish.hidden = current !== steps.length - 1;
      count.textContent = "Step " + (current + 1) + " of " + steps.length;
      if (names[current] === "confirm") {
        renderSummary();
        checkQuota();
      }
    }

    function firstInvalid(step) {
      const fields = step.querySelectorAll("input, select, textarea");
      for (const f of fields) {
        if (visible(f) && !f.checkValidity()) return f;
      }
      return null;
    }

    function validUpTo(target) {
      for (let j = current; j < target; j += 1) {
        const bad = firstInvalid(steps[j]);
        if (bad) {
          show(j);
          bad.reportValidity();
          return false;
        }
      }
      return true;
    }

    next.addEventListener("click", function () {
      if (validUpTo(current + 1)) show(current + 1);
    });
    back.addEventListener("click", () => show(current - 1));
    tabs.forEach(function (tab, j) {
      tab.addEventListener("click", function () {
        if (j <= current || validUpTo(j)) show(j);
      });
    });
    form.addEventListener("keydown", function (ev) {
      // Enter in a field goes to the next step rather than submitting half a VM.
      if (ev.key !== "Enter" || ev.target.tagName === "TEXTAREA" || ev.target.type === "submit") return;
      if (ev.target.closest("button")) return;
      ev.preventDefault();
      if (current < steps.length - 1) next.click();
      else finish.click();
    });
    form.addEventListener("submit", function (ev) {
      for (let j = 0; j < steps.length; j += 1) {
        const bad = firstInvalid(steps[j]);
        if (bad) {
          ev.preventDefault();
          show(j);
          bad.reportValidity();
          return;
        }
      }
      finish.disabled = true;
      finish.classList.add("is-busy");
    });

    // Disk and NIC rows --------------------------------------------------------------------
    function rowsOf(kind) {
      return Array.from(form.querySelectorAll('tbody[data-row="' + kind + '"]'));
    }

    function renumber(kind) {
      const rows = rowsOf(kind);
      rows.forEach(function (row, i) {
        const label = row.querySelector("[data-row-label]");
        if (label) label.textContent = String(i + 1);
      });
      const table = form.querySelector('table[data-rows="' + kind + '"]');
      table.classList.toggle("is-empty", rows.length === 0);
    }

    function nextIndex(kind) {
      let max = -1;
      rowsOf(kind).forEach(function (row) {
        const m = /-(\d+)$/.exec(row.dataset.prefix || "");
        if (m) max = Math.max(max, parseInt(m[1], 10));
      });
      return max + 1;
    }

    function addRow(kind) {
      const tpl = form.querySelector('template[data-row-template="' + kind + '"]');
      const i = nextIndex(kind);
      const holder = document.createElement("table");
      holder.innerHTML = tpl.innerHTML.replace(/__i__/g, String(i));
      const row = holder.querySelector("tbody");
      const table = form.querySelector('table[data-rows="' + kind + '"]');
      table.insertBefore(row, table.querySelector("tbody.wrows-empty"));
      applyOptions(row);
      initDiskRow(row);
      renumber(kind);
      const first = row.querySelector("select, input");
      if (first) first.focus();
    }

    form.addEventListener("click", function (ev) {
      const add = ev.target.closest("[data-row-add]");
      if (add) {
        addRow(add.dataset.rowAdd);
        return;
      }
      const remove = ev.target.closest("[data-row-remove]");
      if (remove) {
        const row = remove.closest("tbody[data-row]");
        const kind = row.dataset.row;
        row.remove();
        renumber(kind);
      }
      const quick = ev.target.closest("[data-quick] [data-value]");
      if (quick) {
        const input = form.querySelector(quick.closest("[data-quick]").dataset.quick);
        input.value = quick.dataset.value;
        input.dispatchEvent(new Event("input", { bubbles: true }));
      }
    });

    function initDiskRow(row) {
      if (row.dataset.row !== "disk") return;
      const source = row.querySelector("[data-disk-source]");
      const pool = row.querySelector('select[data-choices="pool"]');
      const volume = row.querySelector('select[data-choices="source"]');
      const format = row.querySelector('select[name$="-format"]');
      const clone = row.querySelector('select[name$="-clone"]');
      const sizeNote = row.querySelector("[data-source-size]");
      const size = row.querySelector("[data-disk-size]");
      function apply() {
        const kind = source.value;
        row.querySelectorAll("[data-when]").forEach(function (part) {
          part.hidden = part.dataset.when !== kind;
        });
        size.required = kind === "new";
        pool.required = kind === "new";
        volume.required = kind === "template";
        // The pool's storage backend says which formats its volumes may have (LVM: raw only).
        const chosen = pool.selectedOptions[0];
        const abilities = chosen && chosen.dataset.abilities ? JSON.parse(chosen.dataset.abilities) : null;
        const formats = abilities && abilities.formats.length ? abilities.formats : null;
        Array.from(format.options).forEach(function (opt) {
          opt.disabled = !!(formats && opt.value && formats.indexOf(opt.value) < 0);
        });
        if (formats && formats.indexOf(format.value) < 0) format.value = formats[0];
        // Linked copies need a backend that takes qcow2 overlays (file pools); the volume's
        // option says whether its pool's backend does.
        const vol = volume.selectedOptions[0];
        const linkable = !vol || !vol.value || vol.dataset.linked === "1";
        clone.querySelector('option[value="linked"]').disabled = !linkable;
        if (!linkable) clone.value = "full";
        sizeNote.textContent = vol && vol.dataset.gib ? vol.dataset.gib + " GiB" : "from the volume";
      }
      [source, pool, volume].forEach((el) => el.addEventListener("change", apply));
      row._apply = apply;
      apply();
    }

    // Host-dependent choices ---------------------------------------------------------------
    const optionsBox = document.getElementById("wizard-options");

    function pickFirst(select) {
      const opt = Array.from(select.options).find((o) => !o.disabled);
      select.value = opt ? opt.value : "";
    }

    function applyOptions(root) {
      const src = optionsBox.querySelector("[data-wizard-options]");
      if (!src) return;
      (root || form).querySelectorAll("select[data-choices]").forEach(function (select) {
        const from = src.querySelector('select[data-options="' + select.dataset.choices + '"]');
        if (!from) return;
        const value = select.value;
        select.innerHTML = from.innerHTML;
        const keep = Array.from(select.options).some((o) => o.value === value && !o.disabled);
        if (keep) select.value = value;
        else pickFirst(select);
      });
      if (!root) {
        const slot = form.querySelector('[data-slot="quota"]');
        const fill = src.querySelector('[data-fill="quota"]');
        if (slot && fill) slot.innerHTML = fill.innerHTML;
        form.querySelectorAll('tbody[data-row="disk"]').forEach((row) => row._apply && row._apply());
      }
      try {
        quota = JSON.parse(src.dataset.quota || "{}");
      } catch (e) {
        quota = {};
      }
      describeHost();
    }

    let pending = null;
    function refreshOptions() {
      const params = new URLSearchParams({ tenant: field("tenant").value, host: field("host").value });
      if (pending) pending.abort();
      pending = new AbortController();
      fetch(form.dataset.optionsUrl + "?" + params.toString(), {
        headers: { "HX-Request": "true" },
        credentials: "same-origin",
        signal: pending.signal,
      })
        .then((r) => (r.ok ? r.text() : Promise.reject(r)))
        .then(function (html) {
          optionsBox.innerHTML = html;
          applyOptions(null);
        })
        .catch(function () {
          /* aborted by a newer choice, or the server said no: the lists stay as they were */
        });
    }

    function describeHost() {
      const src = optionsBox.querySelector("[data-wizard-options]");
      const host = field("host");
      const opt = host.selectedOptions[0];
      const general = form.querySelector("[data-host-summary]");
      const cpus = form.querySelector("[data-host-cpus]");
      const memory = form.querySelector("[data-host-memory]");
      if (opt && opt.value) {
        const gib = Math.round(parseInt(opt.dataset.memory || "0", 10) / 1024);
        const name = opt.dataset.name || text(opt);
        general.textContent = "Host " + name + ": " + opt.dataset.cpus + " CPUs, " + gib + " GiB of memory.";
        cpus.textContent = "Host " + name + " has " + opt.dataset.cpus + " logical CPUs; a VM can have at most that many.";
        memory.textContent = "Host " + name + " has " + gib + " GiB of memory.";
      } else {
        const n = src ? parseInt(src.dataset.hostCount || "0", 10) : 0;
        if (n === 0) {
          general.textContent = "No online host is open to this tenant: ask a platform admin to allow one.";
        } else if (src && src.dataset.tooMany) {
          general.textContent = n + " online hosts: choose one to list its storage, ISOs and networks.";
        } else {
          general.textContent = "Paddock chooses among " + n + " online host" + (n === 1 ? "" : "s") + ".";
        }
        cpus.textContent = "Automatic placement picks a host with enough CPUs.";
        memory.textContent = "Automatic placement picks the host with the most free memory.";
      }
    }

    field("tenant").addEventListener("change", refreshOptions);
    field("host").addEventListener("change", refreshOptions);

    // Confirm: summary and quota -------------------------------------------------------------
    function diskSummary(row) {
      const get = (suffix) => row.querySelector('[name$="-' + suffix + '"]');
      const bus = selectedText(get("bus"));
      if (get("source").value === "template") {
        return selectedText(get("clone")) + " of " + selectedText(get("volume")) + ", " + bus;
      }
      const pool = get("pool").selectedOptions[0];
      const poolName = pool ? text(pool).split(" (")[0] : "?";
      return get("size_gib").value + " GiB " + get("format").value + " on " + poolName + ", " + bus;
    }

    function nicSummary(row) {
      const get = (suffix) => row.querySelector('[name$="-' + suffix + '"]');
      const net = get("network").selectedOptions[0];
      return (net ? text(net) : "?") + ", " + get("model").value + ", MAC " + (get("mac").value || "auto");
    }

    function renderSummary() {
      const body = form.querySelector("[data-summary] tbody");
      const rows = [];
      const add = (k, v) => rows.push([k, v]);
      add("Name", field("name").value || "—");
      add("Tenant", selectedText(field("tenant")));
      add("Host", selectedText(field("host")));
      if (field("description").value) add("Description", field("description").value);
      if (field("tags").value) add("Tags", field("tags").value);
      add("CD/DVD", selectedText(field("cdrom")));
      add("Boot order", selectedText(field("boot")));
      add("Firmware / machine", selectedText(field("firmware")) + " / " + selectedText(field("machine")));
      rowsOf("disk").forEach((row, i) => add("Disk " + (i + 1), diskSummary(row)));
      if (!rowsOf("disk").length) add("Disks", "none");
      const maxCpu = field("max_vcpus").value;
      add("vCPUs", field("vcpus").value + (maxCpu ? " (hot-plug up to " + maxCpu + ")" : ""));
      add("CPU type", selectedText(field("cpu_model")));
      const maxMem = field("max_memory_mib").value;
      add("Memory", field("memory_mib").value + " MiB" + (maxMem ? " (balloon up to " + maxMem + " MiB)" : ""));
      rowsOf("nic").forEach((row, i) => add("Network " + (i + 1), nicSummary(row)));
      if (!rowsOf("nic").length) add("Network", "none");
      body.innerHTML = "";
      rows.forEach(function (pair) {
        const tr = document.createElement("tr");
        const k = document.createElement("td");
        const v = document.createElement("td");
        k.className = "summary-key";
        k.textContent = pair[0];
        v.textContent = pair[1];
        tr.append(k, v);
        body.appendChild(tr);
      });
    }

    function askedDiskGib() {
      let total = 0;
      rowsOf("disk").forEach(function (row) {
        if (row.querySelector("[data-disk-source]").value === "template") {
          const vol = row.querySelector('select[data-choices="source"]').selectedOptions[0];
          total += vol && vol.dataset.gib ? parseFloat(vol.dataset.gib) : 0;
        } else {
          total += parseFloat(row.querySelector("[data-disk-size]").value || "0") || 0;
        }
      });
      return Math.round(total * 10) / 10;
    }

    function checkQuota() {
      const asked = {
        vms: 1,
        vcpus: parseInt(field("vcpus").value || "0", 10) || 0,
        memory_mib: parseInt(field("memory_mib").value || "0", 10) || 0,
        disk_gib: askedDiskGib(),
      };
      const over = [];
      form.querySelectorAll("[data-quota-key]").forEach(function (tr) {
        const key = tr.dataset.quotaKey;
        const q = quota[key] || {};
        tr.querySelector("[data-quota-asked]").textContent = String(asked[key]);
        const exceeds = q.left !== null && q.left !== undefined && asked[key] > q.left;
        tr.classList.toggle("over", exceeds);
        if (exceeds) over.push(text(tr.querySelector("td")) + " (" + asked[key] + " asked, " + q.left + " left)");
      });
      const warning = form.querySelector("[data-quota-warning]");
      warning.hidden = over.length === 0;
      warning.querySelector("div").textContent = over.length
        ? "This VM needs more than the tenant's quota leaves: " + over.join("; ") + ". Paddock will refuse it."
        : "";
    }

    form.querySelectorAll('tbody[data-row="disk"]').forEach(initDiskRow);
    ["disk", "nic"].forEach(renumber);
    try {
      quota = JSON.parse(optionsBox.querySelector("[data-wizard-options]").dataset.quota || "{}");
    } catch (e) {
      quota = {};
    }
    describeHost();
    const start = names.indexOf(form.dataset.startStep);
    show(start < 0 ? 0 : start);
    // Back from the server with errors: the step showing the first one is open; focus it.
    const bad = steps[current].querySelector(".has-error input, .has-error select, .is-invalid");
    if (bad) bad.focus();
  }

  /* Polling: an element with data-poll gets a "poll" event (its hx-trigger) every 2 s while its
   * condition holds. This is htmx's "every 2s [condition]" without the condition's eval, which
   * the Content-Security-Policy (script-src 'self') forbids. */
  const POLL_IF = {
    taskbar: () => taskbar.shouldPoll(),
    "task-live": () => !(window.Paddock.live && window.Paddock.live.isOpen()),
  };

  function initPolling() {
    setInterval(function () {
      if (!window.htmx) return;
      document.querySelectorAll("[data-poll]").forEach(function (el) {
        const holds = POLL_IF[el.dataset.poll];
        if (holds && holds()) window.htmx.trigger(el, "poll");
      });
    }, 2000);
  }

  function init() {
    initTree();
    initDrawer();
    initPolling();
    taskbar.init();
    initSearch();
    initMenus();
    initCopy();
    initConfirm();
    initAlerts();
    initDialogs();
    initInplaceActions();
    initSwitches(document);
    document.querySelectorAll("form[data-wizard]").forEach(initWizard);
    document.documentElement.dataset.ready = "1";
  }

  window.Paddock = Object.assign(window.Paddock || {}, {
    taskbar: taskbar,
    tree: { setOpen: setOpen },
    dialog: dialog,
  });

  // After htmx's own DOMContentLoaded handler (this script is deferred after htmx's).
  if (document.readyState === "complete") init();
  else document.addEventListener("DOMContentLoaded", init);
})();
