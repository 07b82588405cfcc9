// A single-page app as a bundler leaves it (a hashed module, a client-side router), talking to the BFF only:
// /bff/user for who is logged in, /api/* for data (X-CSRF: 1 on every call), /bff/login and logout_url to navigate.
const $ = (id) => document.getElementById(id);

function route() {
  const path = location.pathname;
  $("route").textContent = path.startsWith("/orders/") ? `Order ${path.slice("/orders/".length)}` : "Home";
}

async function who() {
  const response = await fetch("/bff/user", { headers: { "X-CSRF": "1" } });
  return response.status === 200 ? response.json() : null;
}

async function start() {
  route();
  const user = await who();
  $("login").href = `/bff/login?return_to=${encodeURIComponent(location.pathname)}`;
  if (user) {
    $("user").textContent = user.username;
    $("logout").href = user.logout_url;
    $("logout").hidden = false;
  }
  document.body.dataset.state = user ? "in" : "out";
}

$("go").addEventListener("click", (event) => {
  event.preventDefault(); // the client-side router: no page load
  history.pushState({}, "", "/orders/7");
  route();
});
$("home").addEventListener("click", (event) => {
  event.preventDefault();
  history.pushState({}, "", "/");
  route();
});
window.addEventListener("popstate", route);
$("call").addEventListener("click", async () => {
  const response = await fetch("/api/notes/me", { headers: { "X-CSRF": "1" } });
  $("api").dataset.status = String(response.status);
  $("api").textContent = await response.text();
});
start();
