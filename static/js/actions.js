/* A VM page follows the task it is busy with, where the user looks: the banner at the top of
 * the page says what the task does while it runs and, when it ends, whether it worked; a failed
 * task's banner keeps the page and says why, in the task's own words. When the task took the VM
 * away (a delete that worked, a create that failed and was rolled back), the banner says so and
 * a delete that worked goes on to the page named by data-done-url.
 *
 * The same banner comes into the delete dialog (vms/_delete_follow.html): the page stays put until
 * the delete ends.
 *
 * While the task is unfinished the banner says its true state (queued, running, being
 * cancelled) and, for a task that waits with a deadline (a shutdown waiting for the guest,
 * "wait_until"), counts down to it. Its [data-cancel-task] button cancels the task
 * (POST /api/tasks/ID/cancel/); a refusal (409: it cannot stop safely) is said in the banner.
 * When the task succeeds, the page's [data-refresh] parts are drawn again from a fresh copy of
 * the page, so a snapshot or volume shows where it was asked for, with no reload.
 *
 * Markup: <div data-follow-task="ID" data-task-url="/api/tasks/ID/" [data-done-url="..."]
 * [data-gone-url="..."]> with a [data-follow-text] child. The task is read from the API (the
 * session is enough), at each live "task.updated" event for it and every 2 s meanwhile. */
(function () {
  "use strict";

  const FINAL = ["succeeded", "failed", "cancelled"];

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return "";
    }
  }

  function left(until) {
    const seconds = Math.max(0, Math.round((Date.parse(until) - Date.now()) / 1000));
    return Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
  }

  /* Draw the page's [data-refresh] parts again from a fresh copy of the page (the address
   * without the ?task= that asked the page to follow a task). */
  function redraw() {
    const parts = document.querySelectorAll("[data-refresh]");
    if (!parts.length) return Promise.resolve();
    const url = new URL(location.href);
    url.searchParams.delete("task");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then((r) => (r.ok ? r.text() : null))
      .then(function (html) {
        if (!html) return;
        const doc = new DOMParser().parseFromString(html, "text/html");
        parts.forEach(function (part) {
          const fresh = doc.querySelector('[data-refresh="' + part.dataset.refresh + '"]');
          if (!fresh) return;
          const node = document.importNode(fresh, true);
          part.replaceWith(node);
          if (window.htmx) window.htmx.process(node);
        });
        document.body.dataset.redrawn = String(Number(document.body.dataset.redrawn || 0) + 1);
      });
  }

  function follow(banner) {
    const url = banner.dataset.taskUrl;
    const text = banner.querySelector("[data-follow-text]");
    let finished = false;
    let inFlight = false;
    let last = null; // the task as last read, for the countdown between reads
    let refusal = "";

    function say(level, parts) {
      banner.classList.remove("alert-info", "alert-success", "alert-error", "alert-warning");
      banner.classList.add("alert-" + level);
      banner.setAttribute("role", level === "error" ? "alert" : "status");
      const spinner = banner.querySelector(".spin");
      if (spinner && level !== "info") spinner.remove();
      text.replaceChildren();
      parts.forEach(function (part) {
        if (typeof part === "string") {
          text.appendChild(document.createTextNode(part));
          return;
        }
        const el = document.createElement(part.href ? "a" : part.tag || "span");
        if (part.href) el.href = part.href;
        if (part.cls) el.className = part.cls;
        el.textContent = part.text;
        text.appendChild(el);
      });
    }

    function cancelButton() {
      return banner.querySelector("[data-cancel-task]");
    }

    /* The unfinished task's true state, and the time left of its wait. */
    function describe(task) {
      banner.dataset.taskState = task.state;
      const title = task.title || task.kind;
      const link = { href: "/tasks/" + task.id + "/", text: "task #" + task.id };
      let state = task.state;
      if (task.cancel_requested) state = "being cancelled";
      const parts = [{ tag: "strong", text: title + ": " }, state];
      if (task.state === "running" && task.wait_until && !task.cancel_requested) {
        parts.push(" — waiting for the guest: ", { tag: "span", cls: "countdown", text: left(task.wait_until) + " left" });
      } else if (task.state === "running" && task.progress) {
        parts.push(" (" + task.progress + "%)");
      }
      parts.push(" (", link, ").");
      if (refusal) parts.push(" ", { tag: "em", text: refusal });
      say("info", parts);
      const button = cancelButton();
      if (button) button.disabled = Boolean(task.cancel_requested);
    }

    function settle(task) {
      finished = true;
      banner.removeAttribute("data-follow-task");
      banner.dataset.taskState = task.state;
      const button = cancelButton();
      if (button) button.remove();
      const title = task.title || task.kind;
      const link = { href: "/tasks/" + task.id + "/", text: "task #" + task.id };
      if (task.state === "succeeded") {
        const done = banner.dataset.doneUrl;
        if (done) {
          say("success", [{ tag: "strong", text: title + ": done." }, " (", link, ")"]);
          location.href = done;
          return;
        }
        say("success", [{ tag: "strong", text: title + ": done." }, " (", link, ")"]);
        redraw();
        return;
      }
      if (task.state === "cancelled") {
        say("warning", [{ tag: "strong", text: title + ": cancelled. " }, task.error || "", " (", link, ")."]);
        redraw();
        return;
      }
      const why = task.error || "No reason was recorded.";
      const parts = [{ tag: "strong", text: title + " failed: " }, why, " (", link, ")."];
      const gone = banner.dataset.goneUrl;
      if (!task.vm && gone) {
        parts.push(" The VM is not kept: ", { href: gone, text: "back to the list" }, ".");
      }
      say("error", parts);
    }

    function check() {
      if (finished || inFlight) return;
      inFlight = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : null))
        .then(function (task) {
          if (!task || finished) return;
          last = task;
          if (FINAL.includes(task.state)) settle(task);
          else describe(task);
        })
        .catch(function () {
          /* the next tick asks again */
        })
        .finally(function () {
          inFlight = false;
        });
    }

    const id = Number(banner.dataset.followTask);
    document.addEventListener("paddock:event", function (ev) {
      const event = ev.detail || {};
      if (event.type === "task.updated" && Number(event.id) === id) check();
    });
    const timer = setInterval(function () {
      if (finished) clearInterval(timer);
      else if (!document.hidden) check();
    }, 2000);
    const ticker = setInterval(function () {
      if (finished) clearInterval(ticker);
      else if (last && last.wait_until) describe(last);
    }, 1000);
    banner.addEventListener("click", function (ev) {
      const button = ev.target.closest("[data-cancel-task]");
      if (!button || finished) return;
      ev.preventDefault();
      button.disabled = true;
      fetch("/api/tasks/" + id + "/cancel/", {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      })
        .then(function (r) {
          return r.json().then(function (body) {
            if (r.status === 409) {
              refusal = body.detail || "It cannot be cancelled.";
              button.remove();
            } else if (r.ok && body && body.id) {
              last = body;
            }
          });
        })
        .catch(function () {
          button.disabled = false;
        })
        .finally(check);
    });
    check();
  }

  function followAll(root) {
    root.querySelectorAll("[data-follow-task]").forEach(function (banner) {
      if (banner.paddockFollowed) return;
      banner.paddockFollowed = true;
      follow(banner);
    });
  }

  function init() {
    followAll(document);
    // A dialog's answer may bring a banner to follow (a delete that keeps the page).
    new MutationObserver(function (records) {
      records.forEach(function (record) {
        record.addedNodes.forEach(function (node) {
          if (node.nodeType === 1) followAll(node.parentNode || node);
        });
      });
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
