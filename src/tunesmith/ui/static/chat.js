"use strict";
// Side-by-side chat: both sides stream at once from /api/chat/stream (server-sent events read with fetch),
// through the one engine the server loaded (the base plus each side's adapter).
UI.pages.chat = {
  history: {left: [], right: []},
  init() {
    $("chat-model").value = UI.info.model;
    $("chat-load").onclick = () => this.load().catch((e) => { $("chat-status").textContent = "error: " + e.message; });
    $("chat-send").onclick = () => this.send();
    $("chat-reset").onclick = () => { this.history = {left: [], right: []}; $("chat-log-left").replaceChildren(); $("chat-log-right").replaceChildren(); };
    $("chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); this.send(); } });
  },
  async show(arg) {
    const runs = (await api("/api/runs")).filter((r) => r.adapter);
    for (const id of ["chat-left", "chat-right"]) {
      const keep = $(id).value;
      $(id).replaceChildren(el("option", {value: "", text: "base"}), ...runs.map((r) => el("option", {value: r.path, text: r.path})));
      $(id).value = keep;
    }
    if (arg) $("chat-right").value = arg;
    else if (!$("chat-right").value && runs.length) $("chat-right").value = runs[runs.length - 1].path;
  },
  async load() {
    $("chat-status").textContent = "loading…";
    const r = await api("/api/chat/load", {model: $("chat-model").value, left: $("chat-left").value || null,
      right: $("chat-right").value || null});
    $("chat-left-name").textContent = r.left; $("chat-right-name").textContent = r.right;
    $("chat-thinking").disabled = !r.thinking;
    $("chat-status").textContent = "ready: " + r.model;
    this.loaded = true;
  },
  bubble(side, cls, text) {
    const d = el("div", {class: "msg " + cls, text});
    $("chat-log-" + side).append(d);
    return d;
  },
  async send() {
    const text = $("chat-input").value;
    if (!text.trim() || this.busy) return;
    if (!this.loaded) await this.load();
    this.busy = true; $("chat-send").disabled = true;
    $("chat-input").value = "";
    try {
      await Promise.all(["left", "right"].map((side) => this.ask(side, text)));
    } finally { this.busy = false; $("chat-send").disabled = false; }
  },
  async ask(side, text) {
    this.history[side].push({role: "user", content: text});
    this.bubble(side, "user", text);
    const out = this.bubble(side, "assistant", "");
    out.dataset.state = "streaming";
    let answer = "", reasoning = "", think = null;
    try {
      const r = await fetch("/api/chat/stream", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({side, messages: this.history[side], system: $("chat-system").value || null,
          thinking: $("chat-thinking").checked, max_tokens: +$("chat-max").value || 64,
          temperature: +$("chat-temperature").value || 0})});
      if (!r.ok) throw new Error((await r.json()).error);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 2);
          if (!line.startsWith("data: ")) continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.error) throw new Error(ev.error);
          if (ev.reasoning) {
            reasoning += ev.reasoning;
            if (!think) { think = el("details", {class: "reasoning"}, el("summary", {text: "reasoning"}), el("div")); out.before(think); }
            think.lastChild.textContent = reasoning;
          }
          if (ev.content) { answer += ev.content; out.textContent = answer; }
        }
      }
      this.history[side].push({role: "assistant", content: answer});
      out.dataset.state = "done";
    } catch (e) {
      out.className = "msg error"; out.textContent = e.message; out.dataset.state = "error";
      this.history[side].pop();
    }
  },
};
