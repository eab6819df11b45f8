/* Upload of an ISO or disk image: the file is the request body of
 * POST /api/storage-pools/{id}/upload/ (session auth, CSRF header), sent with XMLHttpRequest so
 * its upload events can drive the progress bar. Errors go back onto the form's fields; on
 * success the pool's volumes are re-read. Works for the form as a page and inside the dialog. */
(function () {
  "use strict";
  if (window.PaddockUpload) return;
  let current = null; // the request in flight

  const FIELD_OF = { name: "name", format: "format", size: "file", file: "file" };

  function cleanName(name) {
    return name.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[^A-Za-z0-9]+/, "").slice(0, 127);
  }

  function guessFormat(name) {
    const ext = (name.split(".").pop() || "").toLowerCase();
    if (ext === "iso") return "iso";
    if (ext === "qcow2") return "qcow2";
    if (ext === "img" || ext === "raw") return "raw";
    return null;
  }

  function mib(bytes) {
    return bytes >= 1024 * 1024 * 1024
      ? (bytes / (1024 * 1024 * 1024)).toFixed(2) + " GiB"
      : (bytes / (1024 * 1024)).toFixed(1) + " MiB";
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((el) => el.remove());
    form.querySelectorAll(".has-error").forEach((el) => el.classList.remove("has-error"));
    form.querySelector("[data-upload-errors]").innerHTML = "";
  }

  function formError(form, text) {
    const box = form.querySelector("[data-upload-errors]");
    const alert = document.createElement("div");
    alert.className = "alert alert-error";
    alert.setAttribute("role", "alert");
    const body = document.createElement("div");
    body.textContent = text;
    alert.appendChild(body);
    box.appendChild(alert);
  }

  function fieldError(form, name, text) {
    const input = form.querySelector('[name="' + name + '"]');
    const field = input && input.closest(".field");
    if (!field) return formError(form, text);
    field.classList.add("has-error");
    const err = document.createElement("div");
    err.className = "field-error";
    err.setAttribute("role", "alert");
    err.textContent = text;
    input.insertAdjacentElement("afterend", err);
  }

  function showErrors(form, status, body) {
    if (!body || typeof body !== "object") {
      formError(form, "The upload failed (HTTP " + status + ").");
      return;
    }
    Object.keys(body).forEach(function (key) {
      const messages = [].concat(body[key]).filter((m) => typeof m === "string");
      const name = FIELD_OF[key];
      messages.forEach((m) => (name ? fieldError(form, name, m) : formError(form, m)));
    });
    if (!Object.keys(body).length) formError(form, "The upload failed (HTTP " + status + ").");
  }

  function flash(text) {
    const content = document.querySelector(".content");
    if (!content) return;
    let box = content.querySelector(".flash");
    if (!box) {
      box = document.createElement("div");
      box.className = "flash";
      box.setAttribute("role", "status");
      content.prepend(box);
    }
    const alert = document.createElement("div");
    alert.className = "alert alert-success";
    const body = document.createElement("div");
    body.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "alert-close";
    close.setAttribute("data-dismiss", "");
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    alert.append(body, close);
    box.appendChild(alert);
  }

  /* Re-read the pool page and swap the parts that change (volumes, usage). */
  function refreshVolumes(poolUrl) {
    const parts = document.querySelectorAll("[data-refresh]");
    if (!parts.length) {
      location.href = poolUrl;
      return Promise.resolve();
    }
    return fetch(location.pathname + location.search, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r)))
      .then(function (html) {
        const doc = new DOMParser().parseFromString(html, "text/html");
        parts.forEach(function (part) {
          const fresh = doc.querySelector('[data-refresh="' + part.dataset.refresh + '"]');
          if (fresh) part.replaceWith(document.importNode(fresh, true));
        });
      })
      .catch(() => location.reload());
  }

  function progress(form, loaded, total, status) {
    const pct = total ? Math.floor((100 * loaded) / total) : 0;
    form.querySelector("[data-upload-progress]").hidden = false;
    form.querySelector("[data-upload-bar]").style.width = pct + "%";
    form.querySelector("[data-upload-pct]").textContent = pct + "%";
    form.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(pct));
    form.querySelector("[data-upload-status]").textContent = status || mib(loaded) + " of " + mib(total);
  }

  function busy(form, on) {
    const button = form.querySelector("[data-submit]");
    button.disabled = on;
    button.classList.toggle("is-busy", on);
    form.querySelectorAll("input, select").forEach((el) => (el.readOnly = on));
  }

  function upload(form) {
    const fileInput = form.querySelector('input[type=file][name="file"]');
    const file = fileInput.files[0];
    clearErrors(form);
    if (!file) {
      fieldError(form, "file", "Choose a file.");
      return;
    }
    const nameInput = form.querySelector('[name="name"]');
    const name = nameInput.value.trim() || cleanName(file.name);
    nameInput.value = name;
    const params = new URLSearchParams({
      volume_name: name,
      volume_format: form.querySelector('[name="format"]').value,
    });
    const xhr = new XMLHttpRequest();
    current = xhr;
    xhr.open("POST", form.dataset.uploadUrl + "?" + params.toString());
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (ev) {
      progress(form, ev.loaded, ev.lengthComputable ? ev.total : file.size);
    });
    xhr.upload.addEventListener("load", function () {
      progress(form, file.size, file.size, "Sent " + mib(file.size) + "; the host is storing it…");
    });
    xhr.addEventListener("load", function () {
      current = null;
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (e) {
        body = null;
      }
      if (xhr.status === 201) {
        progress(form, file.size, file.size, "Stored.");
        refreshVolumes(form.dataset.poolUrl).then(function () {
          if (window.Paddock && form.closest("dialog")) window.Paddock.dialog.close();
          flash("Uploaded volume " + ((body && body.name) || name) + " (" + mib(file.size) + ").");
        });
        return;
      }
      busy(form, false);
      form.querySelector("[data-upload-progress]").hidden = true;
      showErrors(form, xhr.status, body);
    });
    xhr.addEventListener("error", function () {
      current = null;
      busy(form, false);
      form.querySelector("[data-upload-progress]").hidden = true;
      formError(form, "The connection broke off during the upload.");
    });
    xhr.addEventListener("abort", function () {
      current = null;
      busy(form, false);
    });
    busy(form, true);
    progress(form, 0, file.size);
    xhr.send(file); // the raw file is the body; the browser sets Content-Length
  }

  // Runs before the dialog's own submit handler, which would post the form as form data.
  document.addEventListener(
    "submit",
    function (ev) {
      const form = ev.target.closest && ev.target.closest("form[data-upload]");
      if (!form || !window.XMLHttpRequest) return;
      ev.preventDefault();
      ev.stopPropagation();
      if (!current) upload(form);
    },
    true
  );

  document.addEventListener("change", function (ev) {
    const form = ev.target.closest && ev.target.closest("form[data-upload]");
    if (!form || ev.target.name !== "file" || !ev.target.files[0]) return;
    const file = ev.target.files[0];
    const nameInput = form.querySelector('[name="name"]');
    if (!nameInput.value || nameInput.value === nameInput.dataset.auto) {
      nameInput.value = cleanName(file.name);
      nameInput.dataset.auto = nameInput.value;
    }
    const format = guessFormat(file.name);
    if (format) form.querySelector('[name="format"]').value = format;
  });

  // Cancel stops a running upload; the server then deletes the partial volume.
  document.addEventListener(
    "click",
    function (ev) {
      if (current && ev.target.closest && ev.target.closest("[data-upload-cancel], .dialog-x")) {
        current.abort();
      }
    },
    true
  );

  window.addEventListener("beforeunload", function (ev) {
    if (current) ev.preventDefault();
  });

  window.PaddockUpload = { refreshVolumes: refreshVolumes };
})();
