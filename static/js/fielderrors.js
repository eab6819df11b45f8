/* The create wizard's own checks say what is wrong at the field, like the server's answers do,
 * instead of the browser's tooltip that vanishes at the next click: a field the browser finds
 * invalid (Next, a step tab, Create) gets a message under it, "Label: what is wrong", and its
 * red border; the message goes once the field is right again. One message per field, never two.
 *
 * It listens to the "invalid" events that checkValidity()/reportValidity() fire (the wizard's
 * step checks in paddock.js) and cancels their tooltip. */
(function () {
  "use strict";

  function labelOf(field) {
    const form = field.form;
    const label = field.id && form ? form.querySelector('label[for="' + field.id + '"]') : null;
    let text = label ? label.textContent : field.getAttribute("aria-label") || "";
    text = text.replace(/\*\s*$/, "").trim();
    return text;
  }

  function sentence(field) {
    const v = field.validity;
    const label = labelOf(field);
    let what = field.validationMessage;
    if (v.valueMissing) what = "required.";
    else if (v.badInput) what = field.type === "number" ? "a number, please." : what;
    else if (v.rangeUnderflow) what = "at least " + field.min + ".";
    else if (v.rangeOverflow) what = "at most " + field.max + ".";
    else if (v.stepMismatch) what = "a whole number, please.";
    else if (v.tooLong) what = "at most " + field.maxLength + " characters.";
    return label ? label + ": " + what : what.charAt(0).toUpperCase() + what.slice(1);
  }

  function place(field) {
    // Under the control: the field's .control box, or the wizard row's cell.
    return field.closest(".control") || field.closest("td") || field.parentNode;
  }

  function show(field) {
    const box = place(field);
    let note = box.querySelector(":scope > .field-error[data-client-error]");
    if (!note) {
      // The server's message for this field, if any, says it already: replace it, not add.
      box.querySelectorAll(":scope > .field-error").forEach((old) => old.remove());
      note = document.createElement("div");
      note.className = "field-error";
      note.setAttribute("role", "alert");
      note.dataset.clientError = "";
      box.appendChild(note);
    }
    note.textContent = sentence(field);
    field.classList.add("is-invalid");
    field.setAttribute("aria-invalid", "true");
    const wrap = field.closest(".field");
    if (wrap) wrap.classList.add("has-error");
  }

  function clear(field) {
    const box = place(field);
    const note = box.querySelector(":scope > .field-error[data-client-error]");
    if (!note) return;
    if (!field.validity.valid) {
      note.textContent = sentence(field); // still wrong: say what is wrong now
      return;
    }
    note.remove();
    field.classList.remove("is-invalid");
    field.removeAttribute("aria-invalid");
    const wrap = field.closest(".field");
    if (wrap && !wrap.querySelector(".field-error")) wrap.classList.remove("has-error");
  }

  function init(form) {
    form.addEventListener(
      "invalid",
      function (ev) {
        ev.preventDefault(); // no tooltip: the message stays at the field
        show(ev.target);
        const active = document.activeElement;
        if (!active || !active.matches || !active.matches("[aria-invalid=true]")) ev.target.focus();
      },
      true
    );
    ["input", "change"].forEach((type) =>
      form.addEventListener(type, (ev) => ev.target.matches("input, select, textarea") && clear(ev.target))
    );
  }

  function start() {
    document.querySelectorAll("form[data-wizard]").forEach(init);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
