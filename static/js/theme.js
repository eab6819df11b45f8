/* Paddock's colour scheme and the tree's grouping, applied before the first paint: this script
 * is loaded in <head>, not deferred (the CSP allows no inline script). It sets html[data-theme]
 * ("light" or "dark"; absent: the system's prefers-color-scheme) and html[data-tree-group]
 * ("tag"; absent: hosts and tenants) from localStorage, and keeps the user menu's switch. */
(function () {
  "use strict";

  const THEME_KEY = "paddock.theme";
  const root = document.documentElement;

  function read(key) {
    try {
      return localStorage.getItem(key) || "";
    } catch (e) {
      return "";
    }
  }

  function write(key, value) {
    try {
      if (value) localStorage.setItem(key, value);
      else localStorage.removeItem(key);
    } catch (e) {
      /* storage disabled: the choice lasts for this page */
    }
  }

  function apply(choice) {
    if (choice === "light" || choice === "dark") root.dataset.theme = choice;
    else delete root.dataset.theme;
    document.querySelectorAll("[data-theme-choice]").forEach(function (btn) {
      btn.setAttribute("aria-pressed", btn.dataset.themeChoice === (choice || "system") ? "true" : "false");
    });
    document.dispatchEvent(new CustomEvent("paddock:theme", { detail: { theme: current() } }));
  }

  /* The scheme in effect: "light" or "dark". */
  function current() {
    if (root.dataset.theme) return root.dataset.theme;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  const saved = read(THEME_KEY);
  if (saved === "light" || saved === "dark") root.dataset.theme = saved;
  if (read("paddock.tree.group") === "tag") root.dataset.treeGroup = "tag";

  document.addEventListener("click", function (ev) {
    const btn = ev.target.closest && ev.target.closest("[data-theme-choice]");
    if (!btn) return;
    const choice = btn.dataset.themeChoice === "system" ? "" : btn.dataset.themeChoice;
    write(THEME_KEY, choice);
    apply(choice);
  });
  document.addEventListener("DOMContentLoaded", function () {
    apply(read(THEME_KEY));
  });
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
      if (!root.dataset.theme) apply("");
    });
  }

  window.PaddockTheme = { current: current, set: function (c) { write(THEME_KEY, c); apply(c); } };
})();
