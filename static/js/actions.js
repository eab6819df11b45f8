/* A VM page follows the task it is busy with, where the user looks: the banner at the top of
 * the page says what the task does while it runs and, when it ends, whether it worked; a failed
 * task's banner keeps the page and says why, in the task's own words. When the task took the VM
 * away (a delete that worked, a create that failed and was rolled back), the banner says so and
 * a delete that worked goes on to the page named by data-done-url.
 *
 * The same banner comes into the delete dialog (vms/_delete_follow.html): the page stays put until
 * the delete ends.
 *
 * Markup: <div data-follow-task="ID" data-task-url="/api/tasks/ID/" [data-done-url="..."]
 * [data-gone-url="..."]> with a [data-follow-text] child. The task is read from the API (the
 * session is enough), at each live "task.updated" event for it and every 2 s meanwhile. */
(function () {
  "use strict";

  const FINAL = ["succeeded", "failed", "cancelled"];

  function follow(banner) {
    const url = banner.dataset.taskUrl;
    const text = banner.querySelector("[data-follow-text]");
    let finished = false;
    let inFlight = false;

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

    function settle(task) {
      finished = true;
      banner.removeAttribute("data-follow-task");
      banner.dataset.taskState = task.state;
      const title = task.title || task.kind;
      const link = { href: "/tasks/" + task.id + "/", text: "task #" + task.id };
      if (task.state === "succeeded") {
        const done = banner.dataset.doneUrl;
        if (done) {
          say("success", [{ tag: "strong", text: title + ": done." }, " (", link, ")"]);
          location.href = done;
          return;
        }
        const again = { href: location.pathname + location.search, text: "Reload" };
        say("success", [{ tag: "strong", text: title + ": done. " }, again, " to see the VM as it is now (", link, ")."]);
        return;
      }
      const why = task.error || (task.state === "cancelled" ? "It was cancelled." : "No reason was recorded.");
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
          if (task && FINAL.includes(task.state)) settle(task);
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
