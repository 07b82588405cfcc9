"use strict";
// "Your sessions" (DESIGN §14): the user's sessions at this BFF, from GET /bff/sessions, each with an End button
// (DELETE /bff/sessions/{id}), and "Sign out other devices" (DELETE /bff/sessions). Like every call: X-CSRF: 1.

(() => {
  const $ = (id) => document.getElementById(id);

  async function call(method, path) {
    const response = await fetch(path, { method, headers: { "X-CSRF": "1" }, credentials: "same-origin" });
    return { status: response.status, data: response.status === 200 ? await response.json() : null };
  }

  function when(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  function say(text) {
    $("sessions-note").textContent = text;
  }

  async function load() {
    const result = await call("GET", "/bff/sessions");
    const list = $("session-list");
    list.replaceChildren();
    if (result.status !== 200) {
      $("sessions").hidden = true;
      return;
    }
    $("sessions").hidden = false;
    for (const session of result.data.sessions) {
      const item = document.createElement("li");
      item.dataset.id = session.id;
      item.dataset.current = String(session.current);
      const what = document.createElement("span");
      // textContent only: the User-Agent is whatever the other browser sent
      what.textContent = `${session.user_agent || "Unknown browser"} · ${session.ip || "unknown network"}`;
      const times = document.createElement("small");
      times.className = "muted";
      times.textContent = `signed in ${when(session.created_at)} · last seen ${when(session.last_seen_at)}`;
      const text = document.createElement("div");
      text.append(what, document.createElement("br"), times);
      item.append(text);
      if (session.current) {
        const tag = document.createElement("strong");
        tag.className = "this";
        tag.textContent = "this browser";
        item.append(tag);
      } else {
        const end = document.createElement("button");
        end.type = "button";
        end.className = "end";
        end.textContent = "End";
        end.addEventListener("click", async () => {
          const ended = await call("DELETE", `/bff/sessions/${encodeURIComponent(session.id)}`);
          say(ended.status === 204 ? "Session ended." : `The BFF answered ${ended.status}.`);
          await load();
        });
        item.append(end);
      }
      list.append(item);
    }
    $("sessions-end-others").disabled = result.data.sessions.length < 2;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sessions-refresh").addEventListener("click", load);
    $("sessions-end-others").addEventListener("click", async () => {
      const ended = await call("DELETE", "/bff/sessions");
      say(ended.status === 204 ? "Every other device is signed out." : `The BFF answered ${ended.status}.`);
      await load();
    });
  });
  document.addEventListener("bff:session", (event) => {
    if (event.detail.loggedIn) load();
    else $("sessions").hidden = true;
  });
})();
