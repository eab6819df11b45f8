/* Tuning pages: the VM tab's plan (one submit per click, the diff brought into view) and the
 * policy editor (knobs changed since the page loaded are marked until saved). No inline code:
 * loaded by the templates that need it, under the strict Content-Security-Policy. */
(function () {
  "use strict";

  function once(form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[type=submit]").forEach(function (b) {
        // after the submit is under way, so the button's own value still goes with it
        setTimeout(function () { b.disabled = true; b.classList.add("is-busy"); }, 0);
      });
    });
  }

  function valueOf(el) {
    return el.type === "checkbox" ? String(el.checked) : el.value;
  }

  function editor(form) {
    const inputs = form.querySelectorAll("[data-knob]");
    inputs.forEach(function (el) {
      const start = valueOf(el);
      const field = el.closest(".field");
      const mark = function () {
        if (field) field.classList.toggle("tn-changed", valueOf(el) !== start);
        const group = el.closest("[data-group]");
        if (group) group.classList.toggle("tn-group-changed", !!group.querySelector(".tn-changed"));
      };
      el.addEventListener("input", mark);
      el.addEventListener("change", mark);
    });
  }

  function init() {
    document.querySelectorAll("form[action$='/tuning/apply/']").forEach(once);
    document.querySelectorAll("[data-policy-editor]").forEach(editor);
    const diff = document.querySelector("[data-plan]");
    if (diff && new URLSearchParams(location.search).has("policy")) {
      diff.scrollIntoView({ block: "start" });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
