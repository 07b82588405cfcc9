"use strict";
// The demo page talks only to the BFF. It never sees a token: the session is an HttpOnly cookie, and every call
// carries X-CSRF: 1, which a cross-site page cannot send without a CORS preflight (refused by the BFF).

const $ = (id) => document.getElementById(id);
let logoutUrl = null;  // /bff/user's logout_url: GET /bff/logout?sid=… (a page navigation, DESIGN §6)
// Back from the provider's logout (its post_logout_redirect_uri carries our state): say so, then tidy the URL.
const signedOut = new URLSearchParams(location.search).has("state");
if (signedOut) history.replaceState(null, "", location.pathname);

async function call(method, path, body) {
  const init = { method, headers: { "X-CSRF": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: response.status, data };
}

function show(result) {
  $("output").textContent = `${result.status}\n${JSON.stringify(result.data, null, 2)}`;
}

function when(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleString();
}

async function loadUser() {
  let result;
  try {
    result = await call("GET", "/bff/user");
  } catch (err) {
    setStatus("error", "The BFF is unreachable.");
    return;
  }
  const loggedIn = result.status === 200;
  $("login").hidden = loggedIn;
  $("logout").hidden = !loggedIn;
  $("user").hidden = !loggedIn;
  $("api").hidden = !loggedIn;
  $("step-up").hidden = !loggedIn;
  document.dispatchEvent(new CustomEvent("bff:session", { detail: { loggedIn } }));  // live.js follows it
  logoutUrl = loggedIn ? result.data.logout_url : null;
  if (loggedIn) {
    const u = result.data;
    setStatus("in", `Logged in as ${u.username}`);
    $("username").textContent = u.username;
    $("sub").textContent = u.sub;
    $("scope").textContent = u.scope;
    $("idle").textContent = when(u.idle_expires_at);
    $("absolute").textContent = when(u.expires_at);
    $("acr").textContent = u.acr ? `${u.acr} (${(u.amr || []).join(" ")})` : "not said by the provider";
    await loadNotes();
  } else if (result.status === 401) {
    setStatus("out", signedOut ? "Signed out — here and at the auth server." : "Not logged in.");
  } else {
    setStatus("error", `The BFF answered ${result.status}.`);
  }
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

async function loadNotes() {
  const result = await call("GET", "/api/notes/notes");
  show(result);
  const list = $("notes");
  list.replaceChildren();
  if (result.status !== 200) {
    if (result.status === 401) await loadUser();
    return;
  }
  for (const note of result.data.notes) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = note.text;  // textContent, never innerHTML: notes are user input
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.addEventListener("click", async () => {
      show(await call("DELETE", `/api/notes/notes/${encodeURIComponent(note.id)}`));
      await loadNotes();
    });
    item.append(text, remove);
    list.append(item);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("note-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("note-text");
    const result = await call("POST", "/api/notes/notes", { text: input.value });
    show(result);
    if (result.status === 201) input.value = "";
    await loadNotes();
  });
  $("refresh-notes").addEventListener("click", loadNotes);
  $("delete-all").addEventListener("click", async () => {
    // DESIGN §14: the API needs mfa; the BFF answers 401 with a step_up_url instead of retrying.
    const result = await call("DELETE", "/api/notes/notes");
    show(result);
    const link = $("step-up-link");
    if (result.status === 401 && result.data && result.data.step_up_url) {
      link.href = result.data.step_up_url;  // a local path from the BFF: /bff/login?acr_values=mfa&…
      link.hidden = false;
      $("step-up-note").textContent = "The notes API asks for a second factor first.";
    } else if (result.status === 204) {
      link.hidden = true;
      $("step-up-note").textContent = "All notes deleted.";
      await loadNotes();
    }
  });
  $("whoami").addEventListener("click", async () => show(await call("GET", "/api/notes/me")));
  $("logout").addEventListener("click", async () => {
    // Through the provider: the BFF ends its session and sends the browser to the auth server's logout, which
    // ends the single sign-on too and sends the browser back here. Without a logout_url (the session ended
    // meanwhile), POST /bff/logout says where to go.
    setStatus("loading", "Signing out…");
    const target = logoutUrl || (await call("POST", "/bff/logout")).data.logout_url;
    window.location.assign(target);
  });
  loadUser();
});
