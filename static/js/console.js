/* A VM's console in the page: the display through noVNC, the serial console through xterm.js
 * (see docs/console.md). Each connection asks for a ticket of its own (single use, 30 s):
 * POST /api/vms/{id}/console/ {"kind": ...} with the session and the CSRF token, then opens
 * /ws/console/{id}/{kind}/{ticket}/. Loaded as a module by the Console tab and the pop-out
 * window; the libraries are imported only when needed. */

/* Every close code as a sentence (vms/console.py CLOSE_SENTENCES says the same); a refusal's
 * close frame may carry a more precise sentence as its reason, which wins. */
const CLOSE_REASONS = {
  1000: "The console ended.",
  1001: "Paddock is restarting; reconnect in a moment.",
  1006: "The connection to Paddock was lost.",
  1011: "Paddock hit an error serving the console.",
  4403: "Your role may no longer use this console.",
  4404: "The console ticket was refused: it expired or was used already.",
  4409: "The VM is not running, or has no console of this kind.",
  4501: "The simulated host has no console.",
  4502: "The host or its console could not be reached.",
};
const SIMULATED = CLOSE_REASONS[4501];
const CONNECTABLE = ["running", "paused"];

export function closeSentence(code, reason) {
  if (reason) return reason;
  return CLOSE_REASONS[code] || "The console closed unexpectedly (code " + code + ").";
}

function wsUrl(path) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

class VmConsole {
  constructor(root) {
    this.root = root;
    this.vmId = Number(root.dataset.vmId);
    this.kind = root.dataset.kind === "serial" ? "serial" : "vnc";
    this.screen = root.querySelector("[data-console-screen]");
    this.off = root.querySelector("[data-console-off]");
    this.status = root.querySelector("[data-console-state]");
    this.vmState = root.dataset.vmState;
    this.session = null; // {kind, ws, rfb?, term?, closed}
    this.generation = 0;

    root.addEventListener("click", (ev) => {
      const kindBtn = ev.target.closest("[data-console-kind]");
      if (kindBtn) {
        ev.preventDefault();
        this.switchKind(kindBtn.dataset.consoleKind);
        return;
      }
      if (ev.target.closest("[data-console-reconnect]")) {
        ev.preventDefault();
        this.connect();
        return;
      }
      if (ev.target.closest("[data-console-ctrlaltdel]")) {
        ev.preventDefault();
        if (this.session && this.session.rfb) this.session.rfb.sendCtrlAltDel();
        return;
      }
      const pop = ev.target.closest("[data-console-popout]");
      if (pop) {
        ev.preventDefault();
        const url = pop.getAttribute("href") + "?kind=" + this.kind;
        const win = window.open(url, "paddock-console-" + this.vmId, "popup,width=1100,height=820");
        if (win) {
          // One viewer is enough: this tab steps aside for the window.
          this.disconnect();
          this.say("Opened in a separate window.", "info");
          this.showReconnect(true);
        } else {
          location.href = url; // pop-ups blocked: go there instead
        }
      }
    });

    document.addEventListener("paddock:event", (ev) => {
      const event = ev.detail;
      if (event.type !== "vm.updated" || event.id !== this.vmId) return;
      // Its own record: live.js re-draws data-vm-state on this element too.
      const was = this.vmState;
      this.vmState = event.state;
      this.root.dataset.vmState = event.state;
      const runs = CONNECTABLE.includes(event.state);
      if (runs && !CONNECTABLE.includes(was)) this.connect();
      else if (!runs) this.showOff();
    });
    window.addEventListener("resize", () => this.fit());
    window.addEventListener("pagehide", () => this.disconnect());
  }

  get running() {
    return CONNECTABLE.includes(this.vmState);
  }

  say(text, level) {
    if (!this.status) return;
    this.status.textContent = text;
    this.status.dataset.level = level || "info";
  }

  showReconnect(show) {
    this.root.querySelectorAll("[data-console-reconnect]").forEach((b) => (b.hidden = !show));
  }

  showOff() {
    this.disconnect();
    this.screen.hidden = true;
    if (this.off) this.off.hidden = false;
    this.root.dataset.consoleState = "off";
    this.say("Not running", "muted");
    this.showReconnect(false);
  }

  switchKind(kind) {
    if (kind !== "vnc" && kind !== "serial") return;
    this.kind = kind;
    this.root.dataset.kind = kind;
    this.root.querySelectorAll("[data-console-kind]").forEach((b) => {
      const on = b.dataset.consoleKind === kind;
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", on ? "true" : "false");
    });
    this.root.querySelectorAll("[data-console-ctrlaltdel]").forEach((b) => (b.hidden = kind !== "vnc"));
    const url = new URL(location.href);
    url.searchParams.set("kind", kind);
    history.replaceState(history.state, "", url);
    this.connect();
  }

  disconnect() {
    this.generation += 1;
    const s = this.session;
    this.session = null;
    if (!s) return;
    s.closed = true;
    try {
      if (s.rfb) s.rfb.disconnect();
      else if (s.ws) s.ws.close(1000);
    } catch (e) {
      /* already closed */
    }
    if (s.term) s.term.dispose();
    this.screen.replaceChildren();
  }

  async ticket(kind) {
    const answer = await fetch(this.root.dataset.ticketUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": this.root.dataset.csrf,
      },
      body: JSON.stringify({ kind: kind }),
    });
    if (!answer.ok) {
      let detail = "";
      try {
        detail = (await answer.json()).detail || "";
      } catch (e) {
        /* not JSON */
      }
      const why = {
        400: "This VM has no console now.",
        403: "Your role may not use this console.",
        404: "No such VM.",
      }[answer.status];
      throw new Error(detail || why || "Could not get a console ticket (HTTP " + answer.status + ").");
    }
    return answer.json();
  }

  async connect() {
    this.disconnect();
    if (this.root.dataset.simulated) {
      this.showSimulated();
      return;
    }
    if (!this.running) {
      this.showOff();
      return;
    }
    if (this.off) this.off.hidden = true;
    this.screen.hidden = false;
    this.showReconnect(false);
    this.root.dataset.consoleState = "connecting";
    this.say("Connecting…", "info");
    const gen = this.generation;
    const kind = this.kind;
    try {
      const { url } = await this.ticket(kind);
      if (gen !== this.generation) return; // superseded meanwhile
      if (kind === "vnc") await this.openVnc(url, gen);
      else await this.openSerial(url, gen);
    } catch (e) {
      if (gen !== this.generation) return;
      this.failed(e.message || String(e));
    }
  }

  failed(message) {
    this.root.dataset.consoleState = "closed";
    this.say(message, "error");
    this.showReconnect(true);
  }

  closed(session, code) {
    if (session.closed || this.session !== session) return;
    session.closed = true;
    this.session = null;
    this.root.dataset.consoleState = "closed";
    if (code === 1000 && !this.running) {
      this.showOff();
      return;
    }
    this.say(closeSentence(code, session.reason), code === 1000 ? "muted" : "error");
    this.showReconnect(code !== 4501);
  }

  /* A VM on a simulated host: nothing to connect to, said before anything is asked. */
  showSimulated() {
    this.disconnect();
    this.screen.hidden = true;
    if (this.off) this.off.hidden = true;
    const note = this.root.querySelector("[data-console-simulated]");
    if (note) note.hidden = false;
    this.root.dataset.consoleState = "simulated";
    this.say(SIMULATED, "muted");
    this.showReconnect(false);
    this.root.querySelectorAll("[data-console-ctrlaltdel]").forEach((b) => (b.hidden = true));
  }

  opened() {
    this.root.dataset.consoleState = "connected";
    this.say("Connected", "ok");
    this.showReconnect(true);
  }

  async openVnc(path, gen) {
    const { default: RFB } = await import(this.root.dataset.rfbSrc);
    if (gen !== this.generation) return;
    // The socket is made here (subprotocol "binary", which the consumer accepts) so that its
    // close code can say why a console ended; noVNC takes it over.
    const ws = new WebSocket(wsUrl(path), ["binary"]);
    ws.binaryType = "arraybuffer";
    const session = { kind: "vnc", ws: ws, closed: false };
    this.session = session;
    let code = 1006;
    ws.addEventListener("close", (e) => {
      code = e.code;
      session.reason = e.reason;
    });
    const rfb = new RFB(this.screen, ws, { wsProtocols: ["binary"], shared: true });
    session.rfb = rfb;
    rfb.scaleViewport = true;
    rfb.resizeSession = false;
    rfb.background = "#111";
    rfb.addEventListener("connect", () => {
      if (this.session === session) this.opened();
    });
    rfb.addEventListener("disconnect", () => {
      // The close event has fired by now (noVNC reports after the socket closed).
      setTimeout(() => this.closed(session, code), 0);
    });
    rfb.addEventListener("securityfailure", (e) => {
      if (this.session === session) this.say("VNC security failure: " + (e.detail.reason || e.detail.status), "error");
    });
    rfb.addEventListener("desktopname", (e) => {
      this.root.dataset.desktopName = e.detail.name;
    });
  }

  loadXterm() {
    if (window.Terminal) return Promise.resolve(window.Terminal);
    if (!document.querySelector("link[data-xterm-css]")) {
      const css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = this.root.dataset.xtermCss;
      css.dataset.xtermCss = "";
      document.head.appendChild(css);
    }
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = this.root.dataset.xtermSrc;
      script.onload = () => resolve(window.Terminal);
      script.onerror = () => reject(new Error("Could not load the terminal."));
      document.head.appendChild(script);
    });
  }

  async openSerial(path, gen) {
    const Terminal = await this.loadXterm();
    if (gen !== this.generation) return;
    const term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontSize: 14,
      scrollback: 5000,
      theme: { background: "#111111" },
    });
    const box = document.createElement("div");
    box.className = "serial-screen";
    this.screen.replaceChildren(box);
    term.open(box);
    const ws = new WebSocket(wsUrl(path), ["binary"]);
    ws.binaryType = "arraybuffer";
    const session = { kind: "serial", ws: ws, term: term, closed: false };
    this.session = session;
    this.fit();
    setTimeout(() => this.fit(), 60); // once xterm has measured its cells
    ws.onopen = () => {
      if (this.session !== session) return;
      this.opened();
      ws.send("\r"); // a fresh prompt
      term.focus();
    };
    ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
    ws.onclose = (e) => {
      session.reason = e.reason;
      if (this.session === session) term.write("\r\n\x1b[2m[" + closeSentence(e.code, e.reason) + "]\x1b[0m\r\n");
      this.closed(session, e.code);
    };
    term.onData((data) => ws.readyState === WebSocket.OPEN && ws.send(data));
  }

  /* The terminal fills its box: columns and rows from the cell size xterm measured. */
  fit() {
    const s = this.session;
    if (!s || !s.term) return;
    const term = s.term;
    const dims = term._core && term._core._renderService && term._core._renderService.dimensions;
    const cell = dims && dims.css && dims.css.cell;
    const box = this.screen.getBoundingClientRect();
    if (!cell || !cell.width || !cell.height || !box.width) return;
    const cols = Math.max(20, Math.floor((box.width - 16) / cell.width));
    const rows = Math.max(8, Math.floor((box.height - 8) / cell.height));
    if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
  }
}

function init() {
  document.querySelectorAll("[data-console]").forEach((root) => {
    if (root.paddockConsole) return;
    const c = new VmConsole(root);
    root.paddockConsole = c;
    c.switchKind(c.kind); // marks the sub-tab and connects (or says the VM is not running)
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
