/* The VM grid: row selection and the bulk bar (Start, Shutdown, Stop, Delete).
 *
 * - The row checkboxes and the select-all box belong to the bulk form (form="vm-bulk"); the bar
 *   says how many VMs are selected and its buttons wait for a selection.
 * - Stop and Delete ask first (data-confirm). The form is posted in the background (the same
 *   view answers a plain post with the whole page) and its answer, the group's result (which
 *   VMs got a task, which were refused and why), replaces the result slot above the table.
 * - Sorting is plain links (?ordering=, the filters kept); states stay live through live.js.
 * - A VM seen stopped loses its CPU, memory and uptime figures at once (the row says so after
 *   a reload too: stopping clears them).
 */
(function () {
  "use strict";

  const HEADER = "paddock-grid"; // X-Requested-With: the view answers the result alone

  function rowBoxes(form) {
    return Array.from(document.querySelectorAll('input[type="checkbox"][name="ids"][form="' + form.id + '"]'));
  }

  function refresh(form) {
    const boxes = rowBoxes(form);
    const chosen = boxes.filter((box) => box.checked).length;
    const count = form.querySelector("[data-grid-count]");
    if (count) count.textContent = chosen ? chosen + " VM" + (chosen === 1 ? "" : "s") + " selected" : "No VM selected";
    form.querySelectorAll("[data-grid-action]").forEach((button) => {
      button.disabled = chosen === 0;
    });
    const all = document.querySelector('[data-grid-all][form="' + form.id + '"]');
    if (all) {
      all.checked = chosen > 0 && chosen === boxes.length;
      all.indeterminate = chosen > 0 && chosen < boxes.length;
    }
  }

  function showResult(html) {
    const slot = document.querySelector("[data-grid-result]");
    if (slot) slot.innerHTML = html;
  }

  function submit(form, button) {
    const data = new FormData(form);
    data.set("action", button.value);
    rowBoxes(form).forEach((box) => {
      if (box.checked && !data.getAll("ids").includes(box.value)) data.append("ids", box.value);
    });
    form.querySelectorAll("[data-grid-action]").forEach((b) => {
      b.disabled = true;
    });
    // form.action would be the buttons named "action", not the attribute.
    fetch(form.getAttribute("action"), {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Requested-With": HEADER },
    })
      .then((response) =>
        response.text().then((text) => ({ ok: response.ok || response.status === 400, status: response.status, text: text }))
      )
      .then((answer) => {
        if (!answer.ok) throw new Error("The server did not take the request (HTTP " + answer.status + ").");
        showResult(answer.text);
        rowBoxes(form).forEach((box) => {
          box.checked = false;
        });
      })
      .catch((error) => {
        showResult('<div class="alert alert-error bulk-group" data-bulk-group><div></div></div>');
        document.querySelector("[data-bulk-group] div").textContent = error.message;
      })
      .finally(() => refresh(form));
  }

  function clearStoppedFigures(event) {
    if (!event || event.type !== "vm.updated" || !event.id || event.state === "running" || event.state === "paused") return;
    const cell = document.querySelector('[data-grid-row="' + event.id + '"]');
    const row = cell && cell.closest("tr");
    if (!row) return;
    row.querySelectorAll("[data-grid-cpu], [data-grid-mem], [data-grid-uptime]").forEach((cell) => {
      cell.innerHTML = '<span class="muted">–</span>';
      cell.removeAttribute("data-started");
    });
  }

  function setUp() {
    const form = document.querySelector("form[data-grid-bulk]");
    if (!form || form.dataset.gridReady) return;
    form.dataset.gridReady = "1";
    document.addEventListener("change", (event) => {
      const target = event.target;
      if (!(target instanceof HTMLInputElement) || target.getAttribute("form") !== form.id) return;
      if (target.hasAttribute("data-grid-all")) {
        rowBoxes(form).forEach((box) => {
          box.checked = target.checked;
        });
      }
      refresh(form);
    });
    form.addEventListener("submit", (event) => {
      const button = event.submitter;
      if (!button || !button.hasAttribute("data-grid-action")) return;
      event.preventDefault();
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      submit(form, button);
    });
    document.addEventListener("click", (event) => {
      const dismiss = event.target.closest && event.target.closest("[data-bulk-dismiss]");
      if (dismiss) dismiss.closest("[data-bulk-group]").remove();
    });
    document.addEventListener("paddock:event", (event) => clearStoppedFigures(event.detail));
    refresh(form);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
