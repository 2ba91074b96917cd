// The recommendation page: pick a user or type a query, see the list with explanations, click an
// item (a click event, attributed to the list), and see the list update.
const $ = (id) => document.getElementById(id);
const keyBox = $("key");
// the key lives in this tab's session storage only: gone when the tab closes, never written to
// disk; saved as it is typed, so the dashboard (opened in this tab) has it too
keyBox.value = sessionStorage.getItem("promptrec.key") || "";
keyBox.addEventListener("input", () => sessionStorage.setItem("promptrec.key", keyBox.value));

function headers(json) {
  const h = {};
  if (keyBox.value) h["X-API-Key"] = keyBox.value;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

// state: "busy", "ok" or "error" (data-state, for styling and tests)
function status(text, state = "ok") {
  $("status").textContent = text;
  $("status").className = state === "error" ? "error" : "";
  $("status").dataset.state = state;
}

async function call(url, options) {
  const response = await fetch(url, options);
  let body = {};
  if (response.status !== 204) {
    const text = await response.text();
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      body = { detail: text };  // a proxy's or server's plain-text error page
    }
  }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail || response.statusText}`);
  }
  return body;
}

async function loadUsers() {
  try {
    const { users } = await call("/users?limit=50", { headers: headers() });
    $("users").replaceChildren(...users.map((u) => Object.assign(document.createElement("option"), { value: u })));
    if (!$("user").value && users.length) $("user").value = users[0];
    const shown = $("status").textContent;
    if (shown.startsWith("could not list users") || shown.startsWith("enter the API key")) status("");
  } catch (e) { status(`could not list users: ${e.message}`, "error"); }
}

async function loadHistory(user) {
  let h = null;
  try {
    h = await call(`/users/${encodeURIComponent(user)}/history?limit=15`, { headers: headers() });
  } catch (e) {
    // 404: a user with no history yet
  }
  $("hlen").textContent = h ? `(${h.length} events, newest first)` : "(new user)";
  $("history").replaceChildren(...(h ? h.recent : []).map((r) => {
    const li = document.createElement("li");
    li.dataset.itemId = r.item_id;
    li.dataset.event = r.event;
    li.textContent = `${r.title} (${r.event})`;
    return li;
  }));
}

let latest = 0;  // the newest request: a slower, older answer must not replace a newer list

// Fetch and show the list for `user` (default: the form's user) and the form's query.
async function recommend(user) {
  user = (user || $("user").value).trim();
  if (!user) return status("pick a user", "error");
  const k = $("k").value.trim() || "10";
  const params = new URLSearchParams({ user_id: user, k, explain: "true" });
  if ($("query").value.trim()) params.set("q", $("query").value.trim());
  const mine = ++latest;
  status(`loading recommendations for ${user}…`, "busy");
  try {
    const r = await call(`/recommend?${params}`, { headers: headers() });
    if (mine !== latest) return null;
    $("meta").textContent = `(arm ${r.arm}, ${r.strategy}@${r.model_version}${r.cold_start ? ", cold start" : ""})`;
    const items = $("items");
    items.replaceChildren(...r.items.map((item) => row(item, r, user)));
    Object.assign(items.dataset, { requestId: r.request_id, userId: user, query: r.query || "" });
    await loadHistory(user);
    if (mine !== latest) return null;
    status(`${r.items.length} items for ${user}${r.query ? ` and "${r.query}"` : ""}`);
    return r;
  } catch (e) {
    if (mine === latest) status(e.message, "error");
    return null;
  }
}

// The title with the matched query terms highlighted (text nodes only: titles are data, not HTML).
function highlighted(title, terms) {
  const span = Object.assign(document.createElement("span"), { className: "title-text" });
  const words = (terms || []).filter((t) => t).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!words.length) {
    span.textContent = title;
    return span;
  }
  // whole words, as the server matches them
  const parts = title.split(new RegExp(`(?<![\\p{L}\\p{N}_'])(${words.join("|")})(?![\\p{L}\\p{N}_'])`, "iu"));
  parts.forEach((part, n) => {
    span.append(n % 2 ? Object.assign(document.createElement("mark"), { textContent: part }) : part);
  });
  return span;
}

function row(item, r, user) {
  const li = document.createElement("li");
  li.dataset.itemId = item.item_id;
  const terms = item.explanation ? item.explanation.query_terms : [];
  li.dataset.queryTerms = terms.join(" ");
  const title = Object.assign(document.createElement("a"), { href: "#", className: "title" });
  title.append(highlighted(item.title, terms));
  title.addEventListener("click", (ev) => { ev.preventDefault(); click(user, item.item_id, r.request_id); });
  const score = Object.assign(document.createElement("span"), { className: "score", textContent: ` ${item.score.toFixed(3)}` });
  const why = Object.assign(document.createElement("div"), { className: "why", textContent: item.explanation ? item.explanation.text : "" });
  li.append(title, score, why);
  if (item.explanation && item.explanation.reason) {
    li.append(Object.assign(document.createElement("div"), { className: "reason", textContent: item.explanation.reason }));
  }
  return li;
}

let clicking = false;  // one click at a time: a double click must not post two events

async function click(user, itemId, requestId) {
  if (clicking) return;
  clicking = true;
  try {
    await call("/events", {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify({ events: [{ user_id: user, item_id: itemId, event: "click", request_id: requestId }] }),
    });
    status(`recorded a click on ${itemId}; updating the list…`, "busy");
    const r = await recommend(user);  // the list's user, even if the box was edited since
    if (r) status(`recorded a click on ${itemId}; list updated`);
  } catch (e) {
    const hint = /^40[13]:/.test(e.message) ? " (enter the API key to record clicks)" : "";
    status(`click not recorded: ${e.message}${hint}`, "error");
  } finally {
    clicking = false;
  }
}

$("ask").addEventListener("submit", (ev) => { ev.preventDefault(); recommend(); });

// User ids and histories are user data: the server shows them to key holders only (unless it
// runs with --public-user-data). List users once a key is typed, or at once where that is open.
let userDataOpen = false;
let typing = null;
keyBox.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => { if (!$("users").options.length && (keyBox.value || userDataOpen)) loadUsers(); }, 300);
});
(async () => {
  try {
    userDataOpen = (await call("/health", {})).user_data_needs_key === false;
  } catch (e) { status(`the service does not answer: ${e.message}`, "error"); return; }
  if (keyBox.value || userDataOpen) loadUsers();
  else status("enter the API key to list users and see their histories");
})();
