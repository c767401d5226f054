// The review grid: one Streamlit component (Components v2) that draws a page of pseudo-labels and
// takes decisions from the keyboard or the mouse. A decision shows at once (optimistic) and goes to
// Python in batches, one batch in flight at a time; Python commits each decision in its own store
// transaction and answers with an ack, and the next data from Python is the truth: a decision that
// failed or lost to another reviewer simply turns back when the tiles are redrawn. A batch goes as a
// POST to review_grid/api.py where the server has that route (data.api): the answer carries the
// page's tiles as stored and the counts, and no Streamlit rerun happens. Otherwise, or once a POST
// fails, it goes as a trigger, which reruns the grid's fragment. User text (class
// names, sample ids, reviewer names) is always set as textContent, never parsed as HTML.

const RESEND_MS = 4000; // an ack that does not come (a dropped rerun) is asked for again
const POST_TIMEOUT_MS = 10000; // a POST unanswered this long: the batch goes by trigger instead
const API_RETRY_MS = 30000; // after a failed POST, batches go by trigger this long (or until a new token)
const REFILL_WAIT_MS = 3000; // a refill that brings nothing new: the keys kept for it are let go
const UNDO_DEPTH = 20; // the reviewer's last decisions that U / Ctrl+Z take back one by one
const COUNT_NAMES = [["pending", "pending"], ["accept", "accepted"], ["reject", "rejected"],
  ["relabel", "relabeled"], ["manual", "labeled by hand"]];
const ACTION_MARK = { accept: "✓", reject: "✗", relabel: "✎", manual: "✎", pending: "" };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// An image's box takes the image's own shape (--ratio, grid.css), so the checkerboard behind a
// transparent image shows through its see-through pixels only. Images enlarge smoothly, except tiny
// ones (no side over TINY_PX: digits, Fashion-MNIST, CIFAR), which enlarge pixelated: at 20x a smooth
// filter blurs a stroke of one or two pixels away, and those pixels are all the model sees.
const TINY_PX = 32;

function fitOnLoad(img, onSize) {
  const fit = () => {
    const w = img.naturalWidth, h = img.naturalHeight;
    if (!w || !h) return;
    img.style.setProperty("--ratio", String(w / h));
    img.classList.toggle("tiny", Math.max(w, h) <= TINY_PX);
    if (onSize) onSize(w, h);
  };
  img.addEventListener("load", fit); // and again whenever a reused tile gets another image
  if (img.complete) fit();
}

function typing(active) {
  if (!active || active === document.body) return false;
  const tag = active.tagName;
  const type = (active.getAttribute("type") || "").toLowerCase();
  return tag === "TEXTAREA" || tag === "SELECT" || active.isContentEditable
    || active.getAttribute("role") === "slider" || active.getAttribute("role") === "combobox"
    || (tag === "INPUT" && !["checkbox", "radio", "button", "submit"].includes(type));
}

class Grid {
  constructor(parent) {
    this.parent = parent;
    this.data = { tiles: [], classes: [] };
    this.focus = 0;
    // Selection and its anchor are samples (positions), not places: tiles move when decided ones leave.
    this.selected = new Set();
    this.anchor = null;
    this.overlay = new Map(); // position -> {status, final, op}: shown until Python's ack
    this.queue = []; // decisions and undos not yet sent
    this.inflight = null; // {id, ops, round, opIds}
    this.typeAhead = []; // decision keys pressed while the page refills
    this.apiDownUntil = 0; // see posting()
    this.nextId = 1;
    this.instance = Math.random().toString(36).slice(2, 10);
    this.undoStack = []; // [{positions, before: [{status, final}]}]
    this.dragFrom = null;
    this.lightbox = false;
    this.timings = { ack: [], turn: [] }; // ms, for bench/review_keys.py (the newest 1000 of each)
    this.build();
  }

  build() {
    const root = el("div", "grid-root");
    root.tabIndex = 0;
    root.setAttribute("role", "grid");
    root.setAttribute("aria-label", "Pseudo-labels: arrows move, A accepts, X rejects, digits relabel, ? for all keys");
    this.counts = el("div", "counts");
    this.legend = el("div", "legend");
    this.status = el("div", "statusline");
    this.tilesBox = el("div", "tiles");
    this.focusBox = el("div", "focusview");
    this.box = el("dialog", "lightbox"); // a modal dialog sits in the top layer, above Streamlit's layout
    this.box.tabIndex = -1;
    this.help = el("div", "help hidden");
    this.picker = el("div", "picker hidden");
    root.append(this.counts, this.legend, this.status, this.tilesBox, this.focusBox, this.box, this.help, this.picker);
    root.addEventListener("keydown", (e) => this.onKey(e));
    document.addEventListener("mouseup", () => { this.dragFrom = null; });
    // A click elsewhere (Accept this page, Undo last) goes to Python after the pointer is released:
    // the keys waiting for the next frame go now, ahead of it.
    document.addEventListener("pointerdown", () => this.flushScheduledNow(), true);
    this.box.addEventListener("close", () => {
      this.lightbox = false;
      this.root.focus({ preventScroll: true });
      if (this.zoomAsked !== undefined && this.zoomAsked !== null) {
        this.zoomAsked = null; // the server stops sending the large image with every redraw
        this.setTrigger("zoom", { position: null, n: this.nextId++ });
      }
    });
    this.parent.appendChild(root);
    this.root = root;
    this.buildHelp();
  }

  // --- data from Python ------------------------------------------------------------------------

  update(data, setTrigger) {
    this.setTrigger = setTrigger;
    if (data.api && (!this.data.api || data.api.token !== this.data.api.token)) this.apiDownUntil = 0;
    const first = this.data.tiles.length === 0;
    const newPage = data.page !== this.data.page || data.round !== this.data.round || data.mode !== this.data.mode;
    const focused = this.data.tiles[this.focus];
    if (this.data.round !== undefined && data.round !== this.data.round) {
      // positions are rows of one round: what was keyed on the old round is not sent to the new one
      this.queue = [];
      this.overlay.clear();
      this.undoStack = [];
    }
    this.data = data;
    this.handleAck(data.ack);
    if (this.refilling) clearTimeout(this.refillTimer);
    if (this.refilling && !newPage) {
      this.refilling = false;
      if (this.turnStart) this.record("turn", performance.now() - this.turnStart);
      this.turnStart = null;
      const open = data.tiles.findIndex((t) => !this.overlay.has(t.position) && t.status === "pending");
      this.focus = open >= 0 ? open : Math.max(0, data.tiles.length - 1);
    } else if (newPage) {
      this.refilling = false;
      if (this.turnStart) this.record("turn", performance.now() - this.turnStart);
      this.turnStart = null;
      this.focus = data.focus_last ? Math.max(0, data.tiles.length - 1) : 0;
      this.selected.clear();
      this.anchor = null;
    } else if (focused) {
      // Decided tiles may leave the page (a "pending" filter): the focus stays on the same sample,
      // or, if it left, on the one that took its place.
      const at = data.tiles.findIndex((t) => t.position === focused.position);
      if (at >= 0) this.focus = at;
      const here = new Set(data.tiles.map((t) => t.position));
      this.selected = new Set([...this.selected].filter((p) => here.has(p)));
      if (!here.has(this.anchor)) this.anchor = null;
    }
    this.focus = Math.min(this.focus, Math.max(0, data.tiles.length - 1));
    this.render();
    // Take the keys on a new page or mode, but never from a slider or a text box in use.
    if ((first || newPage) && !typing(document.activeElement)) this.root.focus({ preventScroll: true });
    if (!this.refilling) this.replayTypeAhead();
  }

  replayTypeAhead() {
    // Decision keys pressed while the page was refilling, now for the tiles that came in.
    for (const { key, shiftKey } of this.typeAhead.splice(0)) {
      this.onKey({ key, shiftKey, ctrlKey: false, metaKey: false, altKey: false, target: this.root,
                   preventDefault() {}, stopPropagation() {} });
    }
  }

  handleAck(ack) {
    if (!ack || !this.inflight || ack.id !== this.inflight.id) return;
    for (const [pos, o] of this.overlay) {
      if (this.inflight.opIds.has(o.op)) this.overlay.delete(pos);
    }
    const now = performance.now();
    this.inflight.ops.forEach((op, i) => {
      this.record("ack", now - op.t0);
      const result = (ack.results || [])[i] || {};
      if (op.op === "decide") { // tiles saved and tiles another reviewer had decided, as Python counted
        this.root.dataset.saved = String(Number(this.root.dataset.saved || 0) + (result.decided || 0));
        this.root.dataset.conflicts = String(Number(this.root.dataset.conflicts || 0) + (result.conflicts || 0));
      }
      if (op.op === "decide" && (result.error || !result.decided)) {
        // nothing was saved: U must not take back an older decision in its place
        this.undoStack = this.undoStack.filter((u) => u.opId !== op.opId);
      }
    });
    this.inflight = null;
    if (ack.message) this.say(ack.message, true);
    this.flush();
    if (!this.inflight && this.afterSend) {
      const fn = this.afterSend;
      this.afterSend = null;
      fn();
    }
  }

  // --- sending ------------------------------------------------------------------------------------

  record(kind, ms) {
    const list = this.timings[kind];
    list.push(ms);
    if (list.length > 1000) list.shift();
    this.root.__timings = this.timings;
  }

  push(op) {
    op.opId = this.nextId++;
    op.t0 = performance.now();
    this.queue.push(op);
    this.flushSoon();
    return op.opId;
  }

  flushSoon() {
    // Send after the decided tile is painted: the server's work would otherwise share the CPU with
    // that frame. rAF does not run in a hidden tab, so a timer sends it there.
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    requestAnimationFrame(() => setTimeout(() => this.flushScheduledNow(), 0));
    setTimeout(() => this.flushScheduledNow(), 100);
  }

  flushScheduledNow() {
    if (!this.flushScheduled) return;
    this.flushScheduled = false;
    this.flush();
  }

  afterSent(fn) {
    // A page turn waits for the decisions in flight by POST: the redrawn page must include them.
    if (this.posting() && (this.inflight || this.queue.length)) { this.afterSend = fn; this.flush(); } else fn();
  }

  posting() { return Boolean(this.data.api) && performance.now() >= this.apiDownUntil; }

  flush() {
    if (this.inflight || this.queue.length === 0) return;
    const ops = this.queue.splice(0);
    // ids unique across grid instances: a remounted grid must not reuse an id Python already answered
    const id = `${this.instance}:${this.nextId++}`;
    this.inflight = { id, ops, round: this.data.round, opIds: new Set(ops.map((o) => o.opId)) };
    this.send();
  }

  send() {
    const batch = this.inflight;
    if (!batch) return;
    const ops = batch.ops.map(({ opId, t0, ...rest }) => rest);
    const body = { id: batch.id, round: batch.round, ops };
    if (this.posting()) { this.post(batch, body); return; }
    this.setTrigger("batch", body);
    clearTimeout(this.resendTimer);
    this.resendTimer = setTimeout(() => { if (this.inflight === batch) this.send(); }, RESEND_MS);
  }

  async post(batch, body) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), POST_TIMEOUT_MS);
    let reply = null;
    try {
      const r = await fetch(this.data.api.url, {
        method: "POST", headers: { "Content-Type": "application/json" }, signal: abort.signal, keepalive: true,
        body: JSON.stringify({ token: this.data.api.token, batch: body,
                               positions: this.data.tiles.map((t) => t.position) }) });
      reply = await r.json();
      if (!r.ok || !reply.ack) throw new Error(reply.error || `HTTP ${r.status}`);
    } catch (err) {
      // No route, a restarted server, a proxy in the way: Streamlit's own channel for a while. Python
      // answers a batch id it has seen with the answer it gave (while it runs: the memory of answers
      // goes with a restart, and an undo in a batch committed just before a crash would then apply
      // twice), so nothing is applied twice.
      this.apiDownUntil = performance.now() + API_RETRY_MS;
      if (this.inflight === batch) this.send();
      return;
    } finally {
      clearTimeout(timer);
    }
    if (this.inflight !== batch) return;
    this.applyReply(reply);
  }

  applyReply(reply) {
    // The page's tiles as stored now (another reviewer's decisions show too, and in the lightbox's
    // history), then the ack. Positions are rows of one round: another round's are not merged.
    // (New objects: the data Streamlit handed over is not ours to change.)
    if (reply.round === this.data.round) {
      const stored = new Map((reply.tiles || []).map((t) => [t.position, t]));
      const tiles = this.data.tiles.map((t) => {
        const s = stored.get(t.position);
        return s ? { ...t, status: s.status, final_label: s.final_label, history: s.history || t.history } : t;
      });
      // the labeling queue draws no counts: it gets none from a reply either
      this.data = { ...this.data, tiles, counts: this.data.counts && reply.counts ? reply.counts : this.data.counts };
    }
    this.handleAck(reply.ack);
    if (reply.round !== null && reply.round !== undefined && reply.round !== this.data.round) {
      this.refill(); // a new round: redraw
    }
    this.render();
  }

  // --- decisions ----------------------------------------------------------------------------------

  targets() {
    const idx = this.selected.size
      ? this.data.tiles.map((t, i) => (this.selected.has(t.position) ? i : -1)).filter((i) => i >= 0)
      : [this.focus];
    return idx.filter((i) => i >= 0 && i < this.data.tiles.length);
  }

  shown(tile) {
    const o = this.overlay.get(tile.position);
    return o ? o : { status: tile.status, final: tile.final_label };
  }

  decide(action, label = null) {
    const recorded = this.data.mode === "queue" && action !== "reject" ? "manual" : action;
    const want = (t) => (action === "reject" ? -1 : label === null ? t.label : label);
    // a tile that already shows this decision is left alone (a key held down, a fast double press)
    const idx = this.targets().filter((i) => {
      const t = this.data.tiles[i];
      const s = this.shown(t);
      return !(s.status === recorded && (action === "reject" || s.final === want(t)));
    });
    if (!idx.length) { this.move(1, false, true); return; }
    const tiles = idx.map((i) => this.data.tiles[i]);
    const expect = tiles.map((t) => this.shown(t).status);
    const positions = tiles.map((t) => t.position);
    const before = tiles.map((t) => ({ ...this.shown(t) }));
    // the labeling queue records labels by hand: A keeps the model's class, a digit picks another
    const queue = this.data.mode === "queue" && action !== "reject";
    const act = queue ? "manual" : action;
    const finals = tiles.map((t) => (act === "reject" ? -1 : label === null ? t.label : label));
    const opId = this.push({ op: "decide", positions, action: act, label: queue ? finals : label, expect });
    tiles.forEach((t, i) => this.overlay.set(t.position, { status: act, final: finals[i], op: opId }));
    this.undoStack.push({ positions, before, opId });
    if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
    this.selected.clear();
    this.anchor = null; // a decision ends the selection: the next Shift+arrow starts at the focus
    if (idx.length === 1) this.move(1, false, true);
    this.render();
  }

  relabel(k) {
    if (k < 0 || k >= this.data.classes.length) return;
    const idx = this.targets();
    // the model's own class is an accept; another class a relabel
    if (this.data.mode !== "queue" && idx.length === 1 && this.data.tiles[idx[0]].label === k) {
      this.decide("accept");
    } else {
      this.decide("relabel", k);
    }
  }

  undo() {
    const last = this.undoStack.pop();
    if (!last) { this.say("nothing of yours to undo on this page"); return; }
    const opId = this.push({ op: "undo" });
    last.positions.forEach((p, i) => this.overlay.set(p, { ...last.before[i], op: opId }));
    const at = this.data.tiles.findIndex((t) => t.position === last.positions[0]);
    if (at >= 0) this.focus = at;
    this.render();
  }

  // --- keys ---------------------------------------------------------------------------------------

  onKey(e) {
    if (this.pickerOpen() && this.picker.contains(e.target)) return; // the picker's input has its keys
    if (this.pickerOpen()) this.closePicker();
    const k = e.key;
    if (this.refilling && !e.ctrlKey && !e.metaKey && /^([axAX0-9]|Enter)$/.test(k)) {
      // The next tiles are on their way: keep the key for them rather than lose it (a fast reviewer
      // at the end of a page).
      if (this.typeAhead.length < 20) this.typeAhead.push({ key: k, shiftKey: e.shiftKey });
      e.preventDefault();
      e.stopPropagation();
      return;
    }
    if ((k === "Enter" || k === " ") && e.target.tagName === "BUTTON") return; // the button's own click
    const focusMode = this.data.mode === "focus";
    const handled = () => { e.preventDefault(); e.stopPropagation(); };
    if (k === "?") { this.toggle(this.help); return handled(); }
    if (k === "Escape") { this.closeAll(); return handled(); }
    if ((k === "z" || k === "Z") && (e.ctrlKey || e.metaKey)) { this.undo(); return handled(); }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const moves = { ArrowLeft: -1, h: -1, ArrowRight: 1, l: 1, ArrowUp: -this.cols(), k: -this.cols(),
                    ArrowDown: this.cols(), j: this.cols() };
    if (k in moves || (k.length === 1 && k.toLowerCase() in moves && !e.shiftKey)) {
      this.move(moves[k] ?? moves[k.toLowerCase()], e.shiftKey); return handled();
    }
    const lower = k.toLowerCase();
    if (lower === "a" || k === "Enter") { this.decide("accept"); return handled(); }
    if (lower === "x") { this.decide("reject"); return handled(); }
    if (lower === "u" || k === "Backspace") { this.undo(); return handled(); }
    if (lower === "c" || k === "/") { this.openPicker(); return handled(); }
    if (/^[0-9]$/.test(k) && this.data.classes.length <= 10) {
      this.relabel(k === "0" ? 9 : Number(k) - 1); return handled();
    }
    if (k === " ") {
      if (focusMode) this.move(1, false, true); else this.toggleLightbox();
      return handled();
    }
    if (k === "PageDown" || k === "PageUp") { this.turn(k === "PageDown" ? 1 : -1); return handled(); }
  }

  cols() {
    if (this.data.mode === "focus") return 1;
    const tiles = this.tilesBox.children;
    if (tiles.length < 2) return 1;
    const top = tiles[0].offsetTop;
    let n = 0;
    while (n < tiles.length && tiles[n].offsetTop === top) n++;
    return Math.max(1, n);
  }

  move(delta, extend = false, auto = false) {
    const n = this.data.tiles.length;
    if (!n) return;
    const next = this.focus + delta;
    if (next >= n && auto) { this.refill(); return; }
    if (next >= n && delta > 0 && this.data.page < this.data.pages) { this.turn(1); return; }
    if (next < 0 && delta < 0 && this.data.page > 1 && !extend) { this.turn(-1, true); return; }
    const to = Math.max(0, Math.min(n - 1, next));
    if (extend) {
      if (this.anchor === null) this.anchor = this.data.tiles[this.focus].position;
      this.selectRange(this.indexOf(this.anchor), to);
    } else if (!auto) {
      this.selected.clear();
      this.anchor = null;
    }
    this.focus = to;
    this.render();
  }

  refill() {
    // After the last tile: ask for this page again. With the usual "pending" filter the decided
    // tiles have left it and the next ones have moved in; the focus goes to the first undecided.
    if (this.refilling) return;
    this.refilling = true;
    this.say("loading the next tiles…");
    clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => { // the same data again draws nothing (no more tiles came in)
      this.refilling = false;
      const n = this.typeAhead.splice(0).length;
      if (n) this.say(`no more tiles came in: ${n} key(s) not applied`, true);
    }, REFILL_WAIT_MS);
    this.flush();
    this.afterSent(() => this.setTrigger("turn", { page: this.data.page, refill: this.nextId++ }));
  }

  selectRange(a, b) {
    this.selected.clear();
    for (let i = Math.min(a, b); i <= Math.max(a, b); i++) this.selected.add(this.data.tiles[i].position);
  }

  indexOf(position) {
    const at = this.data.tiles.findIndex((t) => t.position === position);
    return at >= 0 ? at : this.focus;
  }

  leftFilter() {
    // Tiles decided here since the page was drawn that the filter (data.statuses) no longer holds:
    // the server's list has shrunk by them, and its next page starts that many tiles later.
    const keep = this.data.statuses;
    return Boolean(keep) && this.data.tiles.some((t) => !keep.includes(this.shown(t).status));
  }

  turn(delta, toLast = false) {
    // Forward from a page some tiles have left: fill this page again first (the next tiles move up
    // into it), or PageDown would skip as many tiles as were decided here.
    if (delta > 0 && this.leftFilter()) { this.turnStart = performance.now(); this.refill(); return; }
    const page = this.data.page + delta;
    if (page < 1 || page > this.data.pages) return;
    this.flush();
    this.turnStart = performance.now();
    this.afterSent(() => this.setTrigger("turn", { page, last: toLast }));
  }

  // --- overlays -----------------------------------------------------------------------------------

  toggle(box) { box.classList.toggle("hidden"); }

  closeAll() {
    [this.help, this.picker].forEach((b) => b.classList.add("hidden"));
    if (this.box.open) this.box.close();
    this.lightbox = false;
    this.selected.clear();
    this.anchor = null;
    this.render();
    this.root.focus({ preventScroll: true });
  }

  toggleLightbox() {
    this.lightbox = !this.lightbox;
    if (this.lightbox) {
      this.renderLightbox();
      this.box.showModal();
      this.box.focus({ preventScroll: true });
    } else if (this.box.open) {
      this.box.close();
    }
  }

  pickerOpen() { return !this.picker.classList.contains("hidden"); }

  openPicker() {
    this.picker.replaceChildren();
    const input = el("input", "picker-input");
    input.placeholder = "type to filter classes, Enter to relabel, Esc to close";
    const list = el("div", "picker-list");
    const show = () => {
      const q = input.value.toLowerCase();
      list.replaceChildren(...this.data.classes.map((name, k) => [name, k])
        .filter(([name]) => name.toLowerCase().includes(q)).slice(0, 12)
        .map(([name, k]) => {
          const item = el("button", "picker-item", name);
          item.onclick = () => { this.closePicker(); this.relabel(k); };
          return item;
        }));
    };
    input.addEventListener("input", show);
    input.addEventListener("keydown", (e) => {
      e.stopPropagation();
      if (e.key === "Escape") this.closePicker();
      if (e.key === "Enter" && list.firstChild) list.firstChild.click();
    });
    this.picker.append(input, list);
    this.picker.classList.remove("hidden");
    show();
    input.focus();
  }

  closePicker() {
    this.picker.classList.add("hidden");
    this.root.focus({ preventScroll: true });
  }

  say(text, warn = false) {
    this.status.textContent = text;
    this.status.classList.toggle("warn", warn);
    clearTimeout(this.sayTimer);
    this.sayTimer = setTimeout(() => { this.status.textContent = ""; }, 6000);
  }

  // --- drawing ------------------------------------------------------------------------------------

  render() {
    const focusMode = this.data.mode === "focus";
    this.root.classList.toggle("focus-mode", focusMode);
    this.renderCounts();
    this.renderLegend();
    this.tilesBox.classList.toggle("hidden", focusMode);
    this.focusBox.classList.toggle("hidden", !focusMode);
    if (focusMode) this.renderFocus(); else this.renderTiles();
    if (this.lightbox) this.renderLightbox();
    this.root.dataset.pending = String(this.queue.length + (this.inflight ? this.inflight.ops.length : 0));
  }

  renderCounts() {
    // The round's counts by status, from Python (committed decisions): drawn here rather than as
    // Streamlit elements, so that a decision's rerun redraws this component alone.
    const counts = this.data.counts;
    this.counts.classList.toggle("hidden", !counts);
    if (!counts) return;
    if (this.counts.children.length !== COUNT_NAMES.length) {
      this.counts.replaceChildren(...COUNT_NAMES.map(([status, name]) => {
        const c = el("span", "count");
        c.dataset.status = status;
        c.append(el("b", "n"), document.createTextNode(" " + name));
        return c;
      }));
    }
    COUNT_NAMES.forEach(([status], i) => {
      setText(this.counts.children[i].firstChild, (counts[status] || 0).toLocaleString("en-US"));
    });
  }

  pager() {
    // Built once and updated in place (see renderLegend).
    if (!this.pagerBox) {
      this.pagerBox = el("span", "pager");
      const button = (text, title, delta) => {
        const b = el("button", "page-btn", text);
        b.title = title;
        b.tabIndex = -1; // the grid keeps the keys: Enter must accept, not press this again
        b.onmousedown = (e) => e.preventDefault();
        b.onclick = () => { this.turn(delta); this.root.focus({ preventScroll: true }); };
        return b;
      };
      this.prevBtn = button("‹", "previous page (PageUp)", -1);
      this.nextBtn = button("›", "next page (PageDown)", 1);
      this.pageText = el("span", "hint");
      this.pagerBox.append(this.prevBtn, this.pageText, this.nextBtn);
    }
    setText(this.pageText, ` page ${this.data.page} of ${this.data.pages} `);
    this.prevBtn.disabled = this.data.page <= 1;
    this.nextBtn.disabled = this.data.page >= this.data.pages;
    return this.pagerBox;
  }

  renderLegend() {
    // The class keys are rebuilt only when the classes change, and the page and match texts are
    // updated in place: a key press must not re-lay out the legend, nor a click land on a button
    // that an ack has just replaced.
    if (!this.legendKeys) {
      this.legendKeys = el("span", "legend-keys");
      this.legendInfo = el("span", "hint");
      this.legend.append(this.legendKeys, this.pager(), this.legendInfo);
    }
    const classes = this.data.classes;
    const said = JSON.stringify(classes);
    if (said !== this.legendSaid) {
      this.legendSaid = said;
      this.legendKeys.replaceChildren(...(classes.length <= 10
        ? classes.map((name, k) => {
          const b = el("button", "key");
          b.append(el("kbd", "", String((k + 1) % 10)), document.createTextNode(" " + name));
          b.onclick = () => { this.relabel(k); this.root.focus({ preventScroll: true }); };
          return b;
        })
        : [el("span", "hint", `${classes.length} classes: C or / opens a picker`)]));
    }
    this.pager();
    setText(this.legendInfo, ` · ${this.data.total} match · A accept · X reject · U undo · Space `
      + (this.data.mode === "focus" ? "skip" : "lightbox") + " · ? keys");
  }

  renderTiles() {
    const tiles = this.data.tiles;
    const have = this.tilesBox.children;
    while (have.length > tiles.length) this.tilesBox.lastChild.remove();
    tiles.forEach((tile, i) => {
      let node = have[i];
      if (!node) {
        node = this.makeTile(i);
        this.tilesBox.appendChild(node);
      }
      this.fillTile(node, tile, i);
    });
    const f = this.tilesBox.children[this.focus];
    if (f && this.root.contains(document.activeElement || this.root)) f.scrollIntoView({ block: "nearest" });
  }

  makeTile(i) {
    const node = el("div", "tile");
    node.dataset.i = String(i);
    const img = el("img");
    img.draggable = false;
    fitOnLoad(img);
    const cap = el("div", "cap");
    const mark = el("div", "mark");
    const buttons = el("div", "buttons");
    const ok = el("button", "ok", "✓");
    const no = el("button", "no", "✗");
    ok.title = "accept (A)";
    no.title = "reject (X)";
    for (const b of [ok, no]) {  // clicks only: the keys stay with the grid
      b.tabIndex = -1;
      b.onmousedown = (e) => e.preventDefault();
    }
    buttons.append(ok, no);
    const note = el("div", "note");
    node.append(img, mark, cap, buttons, note);
    const at = () => Number(node.dataset.i);
    ok.onclick = (e) => { e.stopPropagation(); this.focus = at(); this.selected.clear(); this.decide("accept"); };
    no.onclick = (e) => { e.stopPropagation(); this.focus = at(); this.selected.clear(); this.decide("reject"); };
    node.onmousedown = (e) => {
      if (e.button !== 0 || e.target.tagName === "BUTTON") return;
      const i2 = at();
      if (e.shiftKey) {
        if (this.anchor === null) this.anchor = this.data.tiles[this.focus].position;
        this.selectRange(this.indexOf(this.anchor), i2);
      } else if (e.ctrlKey || e.metaKey) {
        const p = this.data.tiles[i2].position;
        if (this.selected.has(p)) this.selected.delete(p); else this.selected.add(p);
      } else {
        this.selected.clear();
        this.anchor = this.data.tiles[i2].position;
        this.dragFrom = i2;
      }
      this.focus = i2;
      this.render();
      this.root.focus({ preventScroll: true });
      e.preventDefault();
    };
    node.onmouseenter = () => {
      if (this.dragFrom === null) return;
      this.selectRange(this.dragFrom, at());
      this.focus = at();
      this.render();
    };
    node.ondblclick = () => { this.focus = at(); this.lightbox = false; this.toggleLightbox(); };
    return node;
  }

  fillTile(node, tile, i) {
    const s = this.shown(tile);
    const img = node.firstChild;
    if (img.getAttribute("src") !== tile.image) img.setAttribute("src", tile.image);
    img.alt = tile.label_name;
    const classes = this.data.classes;
    const after = (s.status === "relabel" || s.status === "manual") && s.final >= 0 ? ` → ${classes[s.final]}` : "";
    // text is set only where it changed: a key press then touches one or two tiles, not a hundred
    setText(node.children[2], `${tile.label_name} ${tile.confidence.toFixed(2)}${after}`);
    setText(node.children[1], ACTION_MARK[s.status] || "");
    setText(node.children[4], tile.note || ""); // the source file changed or went after the import
    node.classList.toggle("stale", Boolean(tile.note));
    if (node.dataset.status !== s.status) node.dataset.status = s.status;
    if (node.dataset.position !== String(tile.position)) node.dataset.position = String(tile.position);
    node.classList.toggle("focused", i === this.focus);
    node.classList.toggle("selected", this.selected.has(tile.position));
    node.classList.toggle("unsaved", this.overlay.has(tile.position));
  }

  renderFocus() {
    const tile = this.data.tiles[this.focus];
    this.focusBox.replaceChildren();
    if (!tile) { this.focusBox.append(el("p", "hint", "Nothing left in this queue.")); return; }
    const s = this.shown(tile);
    const img = el("img", "big");
    fitOnLoad(img);
    img.src = tile.image;
    img.alt = tile.label_name;
    const stage = el("div", "stage");
    stage.appendChild(img);
    const [second] = tile.top.filter(([k]) => k !== tile.label);
    const side = el("div", "side");
    side.append(el("div", "big-label", tile.label_name), el("div", "conf", `confidence ${tile.confidence.toFixed(3)}`));
    if (second) side.append(el("div", "runner", `runner-up ${this.data.classes[second[0]]} ${second[1].toFixed(3)}`));
    side.append(el("div", "state", s.status === "pending" ? "pending" : `${s.status} ${ACTION_MARK[s.status]}`),
                el("div", "hint", `${this.focus + 1} of ${this.data.tiles.length} here · A accept · X reject · `
                  + "digit relabel · Space skip · U undo"));
    this.focusBox.append(stage, side);
    this.focusBox.dataset.position = String(tile.position);
    // the next images are already decoded, so the next item shows at once
    this.data.tiles.slice(this.focus + 1, this.focus + 4).forEach((t) => { new Image().src = t.image; });
  }

  lightboxImage(tile) {
    const img = el("img", "huge");
    const zoom = this.data.zoom;
    const zoomed = Boolean(zoom && zoom.position === tile.position);
    // The image's own size: the source file's (it may be shown reduced), sent with it; a tile that has
    // no source file shows its image at its own size, so that one's.
    const size = el("div", "hint size", zoomed ? `${zoom.width} × ${zoom.height} px` : "");
    fitOnLoad(img, zoomed || tile.zoomable ? null : (w, h) => setText(size, `${w} × ${h} px`));
    img.src = zoomed ? zoom.image : tile.image;
    img.alt = tile.label_name;
    const stage = el("div", "stage");
    stage.appendChild(img);
    if (tile.zoomable && !zoomed && this.zoomAsked !== tile.position) {
      this.zoomAsked = tile.position; // the source image, as large as the screen, comes with the next data
      this.setTrigger("zoom", { position: tile.position, n: this.nextId++ });
    }
    return [stage, size];
  }

  renderLightbox() {
    const tile = this.data.tiles[this.focus];
    if (!tile) return;
    const s = this.shown(tile);
    this.box.replaceChildren();
    const [stage, size] = this.lightboxImage(tile);
    const info = el("div", "info");
    info.append(el("div", "big-label", `${tile.label_name} · ${s.status}`), el("div", "hint", tile.sample_id), size);
    if (tile.note) info.append(el("div", "note", tile.note));
    const top = el("table", "top3");
    tile.top.forEach(([k, p]) => {
      const row = el("tr");
      const bar = el("td", "bar");
      const fill = el("span");
      fill.style.width = `${Math.round(p * 100)}%`;
      bar.appendChild(fill);
      row.append(el("td", "", this.data.classes[k]), bar, el("td", "", p.toFixed(3)));
      top.appendChild(row);
    });
    const hist = el("ul", "history");
    (tile.history.length ? tile.history : [null]).forEach((h) => {
      hist.appendChild(h === null ? el("li", "hint", "no decision yet")
        : el("li", h.undone ? "undone" : "", `${h.action} ${h.label_name} · ${h.who} · `
          + `${new Date(h.at * 1000).toLocaleString()}${h.undone ? " (undone)" : ""}`));
    });
    const nav = el("div", "nav");
    const prev = el("button", "", "← previous");
    const next = el("button", "", "next →");
    const close = el("button", "", "close (Esc)");
    prev.onclick = () => this.move(-1);
    next.onclick = () => this.move(1);
    close.onclick = () => this.closeAll();
    for (const b of [prev, next, close]) {
      b.tabIndex = -1;
      b.onmousedown = (e) => e.preventDefault();
    }
    nav.append(prev, next, close);
    info.append(el("h4", "", "Model's top classes"), top, el("h4", "", "Decisions on this sample"), hist, nav);
    this.box.append(stage, info);
    this.box.dataset.position = String(tile.position);
    if (this.box.open) this.box.focus({ preventScroll: true });
  }

  buildHelp() {
    const keys = [["← → ↑ ↓ or h l k j", "move"], ["Shift + arrows, Shift + click, drag", "select a range"],
      ["A or Enter", "accept"], ["X", "reject"], ["1 … 9, 0", "relabel as the class in the legend"],
      ["C or /", "pick a class by typing its name"], ["Space", "lightbox (focus mode: skip)"],
      ["U, Backspace or Ctrl+Z", "undo your last decision (up to 20)"], ["PageUp / PageDown", "turn the page"],
      ["Esc", "close, clear the selection"], ["?", "this list"]];
    const table = el("table");
    keys.forEach(([k, what]) => {
      const row = el("tr");
      row.append(el("td", "", k), el("td", "", what));
      table.appendChild(row);
    });
    this.help.append(el("h4", "", "Keys"), table);
    this.help.onclick = () => this.toggle(this.help);
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  if (!parentElement.__grid) parentElement.__grid = new Grid(parentElement);
  parentElement.__grid.update(data, setTriggerValue);
}
