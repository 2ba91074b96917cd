// The dashboard: plots and the online table refresh every 10 s; the offline table comes from
// /dashboard/evaluation. The API key (saved by the recommendation page) is sent when reads need it.
const $ = (id) => document.getElementById(id);
const key = sessionStorage.getItem("promptrec.key") || "";  // this tab's, from the page
const opts = { headers: key ? { "X-API-Key": key } : {} };
const problems = new Map();  // what failed, by part of the page

function report(part, error) {
  if (error) problems.set(part, `${part}: ${error.message}`);
  else problems.delete(part);
  $("status").textContent = [...problems.values()].join("; ");
  $("status").hidden = problems.size === 0;
}

async function get(url) {
  const response = await fetch(url, opts);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
    throw new Error(`${response.status} ${detail}${response.status === 401 ? " (enter the API key on the recommendation page)" : ""}`);
  }
  return response;
}

async function image(id, url) {
  try {
    const blob = await (await get(url)).blob();
    const img = $(id);
    const old = img.src;
    img.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);  // one live object URL per plot
    report(id, null);
  } catch (e) { report(id, e); }
}

function cells(values) {
  const tr = document.createElement("tr");
  for (const v of values) tr.append(Object.assign(document.createElement("td"), { textContent: v }));
  return tr;
}

// rates keep two significant digits however small (a 0.04% CTR must not read as 0.0%)
const pct = (x) => {
  const p = 100 * x;
  if (!p) return "0%";
  return (p >= 10 ? p.toFixed(1) : p.toPrecision(2)) + "%";
};
const num = (x) => (x === null || x === undefined ? "" : x.toFixed(4));

async function online() {
  try {
    const { arms } = await (await get("/dashboard/online")).json();
    $("online").tBodies[0].replaceChildren(...(arms || []).map((a) => {
      const tr = cells([a.arm, a.model_version, a.strategy, a.impressions, a.clicks, pct(a.ctr), pct(a.conversion)]);
      tr.dataset.arm = a.arm;
      return tr;
    }));
    $("noonline").hidden = (arms || []).length > 0;
    report("online", null);
  } catch (e) { report("online", e); }
}

function refresh() {
  return Promise.all([image("ctr", "/dashboard/ctr.png"), image("latency", "/dashboard/latency.png"), online()]);
}

async function offline() {
  try {
    const table = await (await get("/dashboard/evaluation")).json();
    $("dataset").textContent = table.dataset ? `(${table.dataset}, ${table.split})` : "";
    $("nooffline").hidden = table.rows.length > 0;
    $("offline").tBodies[0].replaceChildren(...table.rows.map((r) => {
      const tr = cells([r.strategy, num(r["NDCG@10"]), num(r["Recall@10"]), num(r["MRR@10"]), num(r["Coverage@10"])]);
      tr.dataset.strategy = r.strategy;
      return tr;
    }));
    report("offline", null);
  } catch (e) { report("offline", e); }
}

Promise.all([refresh(), offline()]).then(() => { document.body.dataset.loaded = "true"; });
setInterval(refresh, 10000);
