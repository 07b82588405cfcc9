"use strict";
// The least-privilege panel and the live WebSocket panel (DESIGN §7). Both go through the BFF like every call:
// /api/{route}/… with X-CSRF: 1, and the WebSocket handshake with this page's Origin (browsers cannot add headers
// to it; the BFF checks the Origin instead). The page never sees a token: the BFF adds one per API.

(() => {
  const $ = (id) => document.getElementById(id);
  let socket = null;

  async function audience(route) {
    const response = await fetch(`/api/${route}/me`, { headers: { "X-CSRF": "1" }, credentials: "same-origin" });
    if (response.status !== 200) return `HTTP ${response.status}`;
    const me = await response.json();
    return `aud = ${JSON.stringify(me.aud)}`;
  }

  async function showAudiences() {
    $("aud-notes").textContent = await audience("notes");
    $("aud-live").textContent = await audience("live");
  }

  function log(text) {
    const item = document.createElement("li");
    item.textContent = text;  // textContent: messages are data, never markup
    $("live-log").prepend(item);
    while ($("live-log").children.length > 30) $("live-log").lastChild.remove();
  }

  function setLive(state, text, code) {
    $("live-status").dataset.state = state;
    $("live-status").dataset.code = code === undefined ? "" : String(code);
    $("live-status").textContent = text;
  }

  function connect() {
    if (socket && socket.readyState <= WebSocket.OPEN) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(`${scheme}${location.host}/api/live/ws/echo`);
    setLive("connecting", "Connecting…");
    socket.addEventListener("open", () => setLive("open", "Open."));
    socket.addEventListener("message", (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch { data = { type: "text", text: event.data }; }
      if (data.type === "hello") log(`hello ${data.sub} — this socket's token: aud = ${JSON.stringify(data.aud)}`);
      else if (data.type === "tick") log(`tick ${data.at}`);
      else if (data.type === "echo") log(`echo: ${data.text}`);
      else log(String(event.data));
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 1008) {
        setLive("ended", "Closed by the BFF: the session ended (1008).", event.code);
        $("live").hidden = false;
      } else setLive("closed", `Closed (${event.code}).`, event.code);
    });
  }

  document.addEventListener("bff:session", (event) => {
    const loggedIn = event.detail.loggedIn;
    $("apis").hidden = !loggedIn;
    $("live").hidden = !loggedIn && $("live-status").dataset.state !== "ended";
    if (loggedIn) {
      showAudiences();
      connect();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("audiences").addEventListener("click", showAudiences);
    $("live-connect").addEventListener("click", connect);
    $("live-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send($("live-text").value);
        $("live-text").value = "";
      }
    });
  });
})();
