// The SPA holds no token: the BFF's session cookie goes with every same-origin fetch, and X-CSRF marks the call as
// this page's own (the BFF refuses an API call without it).
const api = (path) => fetch(path, { headers: { 'X-CSRF': '1' } });
const $ = (id) => document.getElementById(id);

async function main() {
  const user = await api('/bff/user');
  if (user.status === 401) {
    $('who').textContent = 'Not logged in.';
    $('login').hidden = false;
    return;
  }
  const me = await user.json();
  const { name, email, groups = [] } = me.claims;
  $('who').textContent = `${name ?? me.username} <${email ?? '?'}> · ${groups.join(', ')}`;
  $('logout').href = me.logout_url; // RP-initiated logout: the provider's session ends too
  $('logout').hidden = false;

  const orders = await (await api('/api/orders/orders')).json();
  for (const order of orders.orders) {
    const li = document.createElement('li');
    li.textContent = `${order.id}: ${order.qty} × ${order.item}`;
    $('orders').append(li);
  }
  $('report').hidden = !groups.includes('admin');
  $('report').onclick = async () => {
    const answer = await api('/api/admin/report');
    const body = await answer.json();
    $('report-out').textContent = answer.ok ? `${body.orders} orders in all` : body.error; // 403 insufficient_claims
  };
}

main();
