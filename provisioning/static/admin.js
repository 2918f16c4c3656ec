// Admin UI: sign-in, fleet dashboard (live through server-sent events), kit page.
// No framework, no CDN: every node is built with textContent (nothing from the server is HTML).
"use strict";

const PAGE_SIZE = 100;
const COUNTS_EVERY_MS = 2000;  // live events refresh the counts at most this often
const OPEN_SCHOOLS = 20;  // up to this many schools in scope, every département starts open (the table stays near)
const state = {
  me: null, csrf: "", events: null, schools: [], schoolsLoaded: null, turn: null,
  page: { kits: [], total: 0, limit: PAGE_SIZE, offset: 0 }, counts: null, countsText: "",
  query: { sort: "departement", order: "asc", departement: "", school: "", state: "", q: "", offset: 0 },
  fresh: null, latest: "", opened: new Map(), painted: false,
};
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/api/v1/login") { showLogin(); }
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function when(seconds) {
  if (!seconds) return "jamais";
  return new Date(seconds * 1000).toLocaleString("fr-FR");
}

function show(view) {
  for (const id of ["login-view", "dashboard-view", "kit-view", "config-view", "account-view"]) $(id).hidden = id !== view;
}

// -- sign-in -----------------------------------------------------------------------------------

function showLogin() {
  state.me = null;
  if (state.events) { state.events.close(); state.events = null; }
  $("who").hidden = true;
  show("login-view");
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const me = await api("POST", "/api/v1/login", {
      email: $("login-email").value, password: $("login-password").value,
    });
    $("login-password").value = "";
    signedIn(me);
  } catch (error) {
    $("login-error").textContent = error.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/api/v1/logout").catch(() => {});
  showLogin();
});

function signedIn(me) {
  state.me = me;
  state.csrf = me.csrf;
  $("who-email").textContent = `${me.email} (${me.role}${me.scope ? " " + me.scope : ""})`;
  $("who").hidden = false;
  $("fleet-config").hidden = me.role !== "national";
  $("school-panel").hidden = me.role === "school";
  listen();
  loadDashboard().then(route);
  loadSchools();  // for the enrollment and move forms: after the first paint, not before
}

// -- dashboard: counts per département and school, one page of kits (filtered, sorted and
// counted by the server: 15,000 kits never come to the browser at once) ----------------------

async function loadDashboard() {
  await Promise.all([
    loadPage(), loadCounts(),
    api("GET", "/api/v1/turn").then((turn) => { state.turn = turn; renderTurn(); }),
  ]);
  if (!state.painted) {
    state.painted = true;
    performance.mark("kit-list-painted");  // read by the tests: first paint at fleet size
  }
}

function loadSchools() {
  state.schoolsLoaded = api("GET", "/api/v1/schools").then(({ schools }) => {
    state.schools = schools;
    $("code-school").replaceChildren(
      ...schools.map((s) => el("option", { value: s.id, textContent: `${s.id} — ${s.name}` })));
  }).catch(() => {});  // the forms that need the list wait for it; the dashboard does not
  return state.schoolsLoaded;
}

let pageAsked = 0;  // a slow answer must not overwrite a newer one

async function loadPage() {
  const ticket = ++pageAsked;
  const query = state.query;
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: query.offset, sort: query.sort, order: query.order });
  for (const key of ["departement", "school", "state", "q"]) if (query[key]) params.set(key, query[key]);
  const fresh = new Map();  // kit events arriving while the page is on its way are newer
  state.fresh = fresh;
  let page;
  try {
    page = await api("GET", `/api/v1/kits?${params}`);
  } catch (error) {
    if (ticket === pageAsked) $("kits-error").textContent = error.message;
    return;
  }
  if (ticket !== pageAsked) return;
  $("kits-error").textContent = "";
  state.fresh = null;
  page.kits = page.kits.map((kit) => fresh.get(kit.id) ?? kit);
  state.page = page;
  renderKits();
}

async function loadCounts() {
  const counts = await api("GET", "/api/v1/kits/counts");
  const named = Boolean(state.counts);
  state.counts = counts;
  state.countsStale = false;
  renderCounts();
  if (!named) renderKits();  // the schools' names, for a page that came first
}

let countsTimer = null;
function scheduleCounts() {  // at most one refresh per COUNTS_EVERY_MS, however many events
  if (countsTimer) return;
  countsTimer = setTimeout(() => {
    countsTimer = null;
    if (!$("dashboard-view").hidden) loadCounts().catch(() => {});
    else state.countsStale = true;
  }, COUNTS_EVERY_MS);
}

function noteSoftware(version) {  // the newest version seen: older ones are marked
  if (version && (!state.latest || version.localeCompare(state.latest, undefined, { numeric: true }) > 0)) state.latest = version;
}

function kitState(kit) {
  if (kit.revoked) return ["revoked", "révoqué"];
  if (kit.online) return ["online", "en ligne"];
  if (!kit.last_seen) return ["never", "jamais vu"];
  return ["offline", `hors ligne depuis ${when(kit.offline_since || kit.last_seen)}`];
}

// -- network: how a school gets out, how pupils reach its kits (the kits' health reports) -----

const REACH_WORDS = {
  udp: "UDP ouvert (connexion directe possible)",
  "turn-udp": "par le relais TURN en UDP",
  "turn-tcp": "par le relais TURN en TCP seulement",
  "turn-tls": "par le relais TURN en TLS (443) seulement",
  none: "bloqué : les élèves hors de l'école ne peuvent pas se connecter",
  unknown: "pas encore testé",
};
const PATH_WORDS = { host: "en direct", srflx: "en direct (NAT)", prflx: "en direct (NAT)", relay: "par le relais" };

function reachWords(reach) { return REACH_WORDS[reach] ?? reach; }

// "3 par le relais (TCP), 1 en direct (UDP)", or "" with no pupil.
function pathWords(paths) {
  return Object.entries(paths || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1])
    .map(([path, n]) => {
      const [kind, transport] = path.split("/");
      return `${n} ${PATH_WORDS[kind] ?? kind} (${transport.toUpperCase()})`;
    }).join(", ");
}

function kitNetwork(kit) {
  if (!kit.network) return "";
  const pupils = pathWords(kit.network.paths);
  return `réseau : ${reachWords(kit.network.reach)}${pupils ? " · élèves : " + pupils : ""}`;
}

// -- the class's distribution: pupils per quality level and layer, worst loss (health "pupils") --

const QUALITY_WORDS = { full: "pleine qualité", reduced: "qualité réduite", "audio-only": "son seulement" };
const LAYER_WORDS = {
  high: "haute", mid: "moyenne", low: "basse", keyframes: "images clés seules", paused: "en pause",
};

// "19 haute, 4 basse" in the given order of keys, or "aucun" when every count is 0.
function counted(counts, words) {
  return Object.keys(words).filter((k) => counts?.[k] > 0).map((k) => `${counts[k]} ${words[k]}`).join(", ") || "aucun";
}

function pupilFacts(pupils) {
  if (!pupils) return [];
  const loss = pupils.worst_loss_percent;
  return [
    ["Qualité des élèves", counted(pupils.quality, QUALITY_WORDS)],
    ["Caméra de la salle (élèves par couche)", counted(pupils.layers?.camera, LAYER_WORDS)],
    ["Caméra document (élèves par couche)", counted(pupils.layers?.document, LAYER_WORDS)],
    ["Perte la plus forte (un élève)", loss === null || loss === undefined ? "—" : `${loss.toLocaleString("fr-FR")} %`],
  ];
}

// Who came into the live class (health "classroom", issue 17): counts only, never a name.
function classroomFacts(c) {
  if (!c) return [];
  const n = (key) => (Number.isInteger(c[key]) ? c[key] : 0);
  return [
    ["Salle d'attente", c.waiting_room ? `oui, ${n("waiting")} en attente` : "non"],
    ["Classe verrouillée", c.locked ? "oui" : "non"],
    ["Entrées dans le cours", `${n("joined")} directes, ${n("knocked")} par la salle d'attente, ${n("admitted")} admises`],
    ["Retirés / refusés", `${n("removed")} retirés, ${n("refused")} refusés`],
    ["Questions écrites", String(n("asked"))],
    ["Prises de parole", `${n("spoke")}${n("speaking") ? `, ${n("speaking")} en cours` : ""}`],
  ];
}

function duration(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.round((seconds % 3600) / 60);
  return h ? `${h} h${m ? " " + String(m).padStart(2, "0") : ""}` : `${m} min`;
}

function renderTurn() {
  const turn = state.turn;
  if (!turn) return;
  $("turn-state").textContent = turn.configured ? "configuré" : "aucun";
  facts($("turn-facts"), turn.configured ? [
    ["Adresses TURN", turn.urls.join(", ")],
    ["STUN (même serveur)", turn.stun_urls.join(", ") || "aucun (pas d'adresse TURN en UDP)"],
    ["Secret partagé avec coturn", turn.secret_set ? "présent (jamais affiché)" : "absent"],
    ["Identifiants des élèves", `jusqu'à la fin prévue du cours (${duration(turn.class_s)} au plus) + ${duration(turn.margin_s)}`],
    ["Identifiants des kits", `valables ${duration(turn.kit_ttl_s)}, renouvelés toutes les ${duration(turn.kit_renew_every_s)}`],
  ] : [
    ["État", "Aucun relais TURN : seuls les élèves que le réseau de l'école laisse passer en direct peuvent suivre le cours (kit-provisioning serve --turn-url … --turn-secret-file …)."],
  ]);
}

const CONFIG_WORDS = { applied: "appliquée", pending: "en attente", deferred: "après le cours", refused: "refusée", "": "—" };

const STATE_WORDS = { online: "en ligne", offline: "hors ligne", problem: "avec un problème", live: "cours en direct", revoked: "révoqués" };
const number = (n) => n.toLocaleString("fr-FR");

function kitRow(kit) {
  const [cls, words] = kitState(kit);
  const stale = state.latest && kit.software && kit.software !== state.latest;
  const school = state.counts?.names?.get(kit.school);
  return el("tr", { class: `kit ${cls}`, dataset: { kit: kit.id } },
    el("td", {}, el("a", { href: `#/kit/${encodeURIComponent(kit.id)}`, textContent: kit.name })),
    el("td", { textContent: school ? `${school} (${kit.school})` : kit.school }),
    el("td", { textContent: kit.departement }),
    el("td", { class: "state", textContent: words }),
    el("td", { class: "problems", textContent: kit.problems.length ? "⚠ " + kit.problems.join(", ") : "" }),
    el("td", { class: stale ? "stale" : "", textContent: kit.software + (stale ? " (ancienne)" : "") }),
    el("td", { textContent: kit.session === "live" ? "cours en direct" : "" }),
    el("td", { class: kit.network?.reach === "none" ? "network network-none" : "network", textContent: kitNetwork(kit) }),
    el("td", { textContent: `config : ${CONFIG_WORDS[kit.config.status] ?? kit.config.status}` }),
    el("td", { textContent: when(kit.last_seen) }));
}

function renderKits() {
  const { kits, total, offset } = state.page;
  for (const kit of kits) noteSoftware(kit.software);
  $("kits").tBodies[0].replaceChildren(...kits.map(kitRow));
  $("page-info").textContent = total
    ? `Kits ${number(offset + 1)} à ${number(offset + kits.length)} sur ${number(total)}`
    : "Aucun kit ne correspond.";
  $("page-prev").disabled = offset === 0;
  $("page-next").disabled = offset + kits.length >= total;
  for (const button of document.querySelectorAll("#kits th button")) {
    const sorted = button.dataset.sort === state.query.sort;
    button.parentElement.setAttribute("aria-sort", sorted ? (state.query.order === "asc" ? "ascending" : "descending") : "none");
  }
}

function countWords(c) {
  return `${number(c.live)} en cours · ${number(c.problem)} avec un problème · ${number(c.revoked)} révoqué${c.revoked > 1 ? "s" : ""}`;
}

function schoolBlock(s) {
  return el("div", { class: "school", dataset: { school: s.id } },
    el("h3", {}, `${s.name} (${s.id}) `,
      el("a", { class: "settings", href: `#/config/school/${encodeURIComponent(s.id)}`, textContent: "réglages" }),
      el("span", { class: s.reach === "none" ? "network network-none" : "network", textContent: s.reach ? `réseau de l'école : ${reachWords(s.reach)}` : "" })),
    s.kits
      ? el("p", { class: "counts" }, `${number(s.online)}/${number(s.kits)} en ligne · ${countWords(s)} `,
        el("button", { type: "button", class: "link", textContent: "voir ses kits", "aria-label": `Voir les kits de ${s.name}`, onclick: () => filterSchool(s.id) }))
      : el("p", { class: "empty", textContent: "Aucun kit enrôlé." }));
}

function renderCounts() {
  const counts = state.counts;
  if (!counts) return;
  counts.names = new Map(counts.schools.map((s) => [s.id, s.name]));
  const t = counts.total;
  const summary = `${number(t.online)} kits en ligne sur ${number(t.kits)} · ${number(t.live)} en cours · ${number(t.problem)} avec un problème d'appareil`;
  if ($("summary").textContent !== summary) $("summary").textContent = summary;
  const text = JSON.stringify([counts.departements, counts.schools]);
  if (text === state.countsText) return;  // nothing changed: the DOM (and focus) stays
  state.countsText = text;
  const bySchool = new Map();
  for (const s of counts.schools) {
    if (!bySchool.has(s.departement)) bySchool.set(s.departement, []);
    bySchool.get(s.departement).push(s);
  }
  const openAll = counts.schools.length <= OPEN_SCHOOLS;
  $("groups").replaceChildren(...counts.departements.map((d) => {
    const open = state.opened.get(d.departement) ?? openAll;
    const list = el("div", { class: "schools" });
    const fill = () => { if (!list.childElementCount) list.append(...bySchool.get(d.departement).map(schoolBlock)); };
    const details = el("details", { class: "departement", open, dataset: { departement: d.departement } },
      el("summary", {},
        el("h2", { textContent: `Département ${d.departement} — ${number(d.online)}/${number(d.kits)} en ligne` }),
        el("span", { class: "counts", textContent: ` · ${countWords(d)}` })),
      list);
    if (open) fill();  // schools of closed départements are built when opened
    details.addEventListener("toggle", () => { state.opened.set(d.departement, details.open); if (details.open) fill(); });
    return details;
  }));
  const select = $("kit-dep");
  select.replaceChildren(el("option", { value: "", textContent: "tous" }),
    ...counts.departements.map((d) => el("option", { value: d.departement, textContent: d.departement })));
  select.value = state.query.departement;
}

function filterSchool(school) {
  $("kit-school").value = school;
  setQuery({ school });
  $("kit-list").scrollIntoView();
}

function setQuery(changes) {
  Object.assign(state.query, changes, { offset: changes.offset ?? 0 });
  loadPage();
}

for (const button of document.querySelectorAll("#kits th button")) {
  button.addEventListener("click", () => {
    const sort = button.dataset.sort;
    const order = state.query.sort === sort && state.query.order === "asc" ? "desc" : "asc";
    setQuery({ sort, order });
  });
}
$("kit-state").addEventListener("change", () => setQuery({ state: $("kit-state").value }));
$("kit-dep").addEventListener("change", () => setQuery({ departement: $("kit-dep").value }));
let typing = null;
for (const [id, key] of [["kit-q", "q"], ["kit-school", "school"]]) {
  $(id).addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => setQuery({ [key]: $(id).value.trim() }), 300);
  });
}
$("kit-filters").addEventListener("submit", (event) => event.preventDefault());
$("page-prev").addEventListener("click", () => setQuery({ offset: Math.max(0, state.page.offset - PAGE_SIZE) }));
$("page-next").addEventListener("click", () => setQuery({ offset: state.page.offset + PAGE_SIZE }));

function listen() {
  if (state.events) state.events.close();
  const events = new EventSource("/api/v1/events");
  state.events = events;
  events.onopen = () => { $("live-state").textContent = "mises à jour en direct"; $("live-state").className = "badge live"; };
  events.onerror = () => { $("live-state").textContent = "reconnexion…"; $("live-state").className = "badge"; };
  events.addEventListener("kit", (event) => {
    const kit = JSON.parse(event.data);
    if (state.fresh) state.fresh.set(kit.id, kit);
    const index = state.page.kits.findIndex((k) => k.id === kit.id);
    if (index >= 0) {  // a visible row: updated in place; the others come with the next page
      state.page.kits[index] = kit;
      scheduleRender(kit.id);
    } else if (currentKit === kit.id) {
      scheduleRender(kit.id);
    }
    scheduleCounts();
  });
  events.addEventListener("resync", () => { loadPage(); loadCounts().catch(() => {}); });
  events.addEventListener("signedout", () => showLogin());  // signed out elsewhere, or removed
}

const dirty = new Set();
function scheduleRender(kitId) {
  if (dirty.size === 0) requestAnimationFrame(renderDirty);
  dirty.add(kitId);
}

function renderDirty() {
  const body = $("kits").tBodies[0];
  for (const kitId of dirty) {
    const kit = state.page.kits.find((k) => k.id === kitId);
    const row = body.querySelector(`tr[data-kit="${CSS.escape(kitId)}"]`);
    if (kit && row) {
      noteSoftware(kit.software);
      row.replaceWith(kitRow(kit));
    }
    if (currentKit === kitId && !$("kit-view").hidden) renderKit(kitId);
  }
  dirty.clear();
}

$("code-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const result = await api("POST", "/api/v1/enrollment-codes", {
      school: $("code-school").value,
      uses: Number($("code-uses").value),
      expires_s: Number($("code-days").value) * 86400,
    });
    $("code-output").textContent = result.code;
  } catch (error) {
    $("code-output").textContent = error.message;
  }
});

$("school-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const school = { id: $("school-id").value.trim(), name: $("school-name").value.trim(), departement: $("school-dep").value.trim().toUpperCase() };
  try {
    await api("POST", "/api/v1/schools", school);
    $("school-output").textContent = `École ${school.id} ajoutée.`;
    $("school-form").reset();
    await Promise.all([loadCounts(), loadSchools()]);
  } catch (error) {
    $("school-output").textContent = error.message;
  }
});

// -- configuration of the fleet or of a school -------------------------------------------------

let currentScope = null;  // [level, id]

async function renderScopeConfig(level, id) {
  const name = state.counts?.names?.get(id) ?? state.schools.find((s) => s.id === id)?.name;
  $("config-title").textContent = level === "fleet" ? "Réglages de tout le parc" : `Réglages de l'école ${name ? name + " " : ""}(${id})`;
  $("scope-config-output").textContent = "";
  $("scope-config-error").textContent = "";
  // Not editable until the layer has arrived: text typed meanwhile would be mixed into it.
  const box = $("scope-config-json");
  box.disabled = true;
  try {
    const layer = await api("GET", `/api/v1/config/${level}/${encodeURIComponent(id)}`);
    box.value = JSON.stringify(layer, null, 2);
  } finally {
    box.disabled = false;
  }
}

// PUT one configuration layer from its JSON text; the server's answer, or null once the reason
// is shown in errorBox.
async function saveLayer(level, id, text, errorBox) {
  errorBox.textContent = "";
  let body;
  try { body = JSON.parse(text || "{}"); } catch { errorBox.textContent = "JSON invalide"; return null; }
  try {
    return await api("PUT", `/api/v1/config/${level}/${encodeURIComponent(id)}`, body);
  } catch (error) {
    errorBox.textContent = error.message;
    return null;
  }
}

$("scope-config-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("scope-config-output").textContent = "";
  const result = await saveLayer(...currentScope, $("scope-config-json").value, $("scope-config-error"));
  if (result) $("scope-config-output").textContent = `Enregistré ; envoyé à ${result.pushed_to} kit(s) en ligne.`;
});

// -- account: own password, admins (national admins), audit log ------------------------------

const ROLE_WORDS = { national: "administrateur national", departement: "administrateur de département", school: "technicien d'école" };
const SCOPE_WORDS = { departement: "Périmètre : numéro du département", school: "Périmètre : code UAI de l'école" };

async function renderAccount() {
  const national = state.me.role === "national";
  $("admins-part").hidden = !national;
  $("audit-title").textContent = national ? "Journal des actions" : "Journal de mes actions";
  const [{ entries }, users] = await Promise.all([
    api("GET", "/api/v1/audit?limit=200"),
    national ? api("GET", "/api/v1/users") : Promise.resolve({ users: [] }),
  ]);
  $("admins").tBodies[0].replaceChildren(...users.users.map((user) => el("tr", { dataset: { admin: user.email } },
    el("td", { textContent: user.email }),
    el("td", { textContent: ROLE_WORDS[user.role] ?? user.role }),
    el("td", { textContent: user.scope || "toute la France" }),
    el("td", { textContent: when(user.created_at) }),
    el("td", {}, user.id === state.me.id ? "vous" : el("button", {
      type: "button", class: "danger", textContent: "Retirer",
      "aria-label": `Retirer ${user.email}`, onclick: () => removeAdmin(user),
    })))));
  $("audit").tBodies[0].replaceChildren(...entries.map((entry) => el("tr", {},
    el("td", { textContent: when(entry.at) }),
    el("td", { textContent: entry.actor }),
    el("td", { textContent: entry.action }),
    el("td", { textContent: entry.target }),
    el("td", { textContent: Object.keys(entry.detail).length ? JSON.stringify(entry.detail) : "" }))));
}

async function removeAdmin(user) {
  if (!confirm(`Retirer le compte ${user.email} ? Ses sessions se terminent aussitôt.`)) return;
  try {
    await api("DELETE", `/api/v1/users/${user.id}`);
    $("admin-output").textContent = `Compte ${user.email} retiré.`;
  } catch (error) {
    $("admin-error").textContent = error.message;
  }
  await renderAccount();
}

function showScopeField() {
  const role = $("admin-role").value;
  $("admin-scope-label").hidden = role === "national";
  $("admin-scope").required = role !== "national";
  $("admin-scope-words").textContent = SCOPE_WORDS[role] ?? "";
}
$("admin-role").addEventListener("change", showScopeField);
showScopeField();

$("admin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("admin-output").textContent = "";
  $("admin-error").textContent = "";
  const role = $("admin-role").value;
  const user = {
    email: $("admin-email").value.trim(), role, password: $("admin-password").value,
    scope: role === "national" ? "" : role === "departement" ? $("admin-scope").value.trim().toUpperCase() : $("admin-scope").value.trim(),
  };
  try {
    await api("POST", "/api/v1/users", user);
    $("admin-form").reset();
    showScopeField();
    $("admin-output").textContent = `Compte ${user.email.toLowerCase()} créé.`;
    await renderAccount();
  } catch (error) {
    $("admin-error").textContent = error.message;
  }
});

$("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("password-output").textContent = "";
  $("password-error").textContent = "";
  try {
    await api("POST", "/api/v1/me/password", { current: $("password-current").value, new: $("password-new").value });
    $("password-form").reset();
    $("password-output").textContent = "Mot de passe changé ; vos autres sessions sont fermées.";
    await renderAccount();
  } catch (error) {
    $("password-error").textContent = error.message;
  }
});

// -- kit page ----------------------------------------------------------------------------------

let currentKit = null;

function facts(target, pairs) {
  target.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
}

let kitAsked = 0, kitShown = 0;  // a slow answer must not overwrite a newer one

async function renderKit(kitId) {
  const ticket = ++kitAsked;
  const kit = await api("GET", `/api/v1/kits/${encodeURIComponent(kitId)}?history=60`);
  if (ticket < kitShown || currentKit !== kitId) return;
  kitShown = ticket;
  const health = kit.health || {};
  $("kit-title").textContent = `${kit.name} (${kit.id})`;
  facts($("kit-facts"), [
    ["État", kitState(kit)[1]],
    ["École", `${kit.school} (département ${kit.departement})`],
    ["Dernier contact", when(kit.last_seen)],
    ["Logiciel", kit.software || "—"],
    ["Cours", kit.session === "live" ? `en direct, ${health.session?.viewers ?? 0} élèves` : "pas de cours"],
    ["Appareils", health.devices ? Object.entries(health.devices).map(([k, d]) => `${k} : ${d.state}`).join(", ") : "—"],
    ["CPU", health.cpu_percent !== undefined ? `${health.cpu_percent} %` : "—"],
    ["Réseau", kit.network ? reachWords(kit.network.reach) : "non signalé par ce kit"],
    ["Élèves par chemin", kit.network ? pathWords(kit.network.paths) || "aucun élève connecté" : "—"],
    ["Dernier test du réseau", kit.network ? when(kit.network.probed_at) : "—"],
    ...(kit.network?.turn_error ? [["Échec du relais TURN", kit.network.turn_error]] : []),
    ...pupilFacts(health.pupils),
    ...classroomFacts(health.classroom),
  ]);
  facts($("kit-config"), [
    ["Version voulue", kit.config.desired || "—"],
    ["Version appliquée", kit.config.applied || "—"],
    ["État", `${CONFIG_WORDS[kit.config.status] ?? kit.config.status}${kit.config.reason ? " : " + kit.config.reason : ""}`],
    ["Réglages effectifs", JSON.stringify(kit.desired_config)],
  ]);
  if (document.activeElement !== $("config-json")) {
    $("config-json").value = JSON.stringify(kit.layers.kit, null, 2);
  }
  if (document.activeElement !== $("rename-name")) $("rename-name").value = kit.name;  // typing
  await state.schoolsLoaded;
  if (currentKit !== kitId) return;
  if (document.activeElement !== $("move-school")) {
    $("move-school").replaceChildren(...state.schools.map((s) =>
      el("option", { value: s.id, textContent: `${s.id} — ${s.name}`, selected: s.id === kit.school })));
  }
  $("revoke").disabled = kit.revoked;
  $("history").tBodies[0].replaceChildren(...kit.history.map(({ received_at, report }) => el("tr", {},
    el("td", { textContent: when(received_at) }),
    el("td", { textContent: report.cpu_percent }),
    el("td", { textContent: `${report.memory.available_mb} Mo` }),
    el("td", { textContent: report.cpu_temp_c ?? "—" }),
    el("td", { textContent: report.devices.camera.state }),
    el("td", { textContent: report.devices.document.state }),
    el("td", { textContent: report.devices.microphone.state }),
    el("td", { textContent: report.session.state }),
    el("td", { textContent: report.session.viewers }))));
}

$("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  await api("PATCH", `/api/v1/kits/${encodeURIComponent(currentKit)}`, { name: $("rename-name").value });
  renderKit(currentKit);
});

$("move-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const school = $("move-school").value;
  if (!confirm(`Déplacer ce kit vers l'école ${school} ?`)) return;
  await api("PATCH", `/api/v1/kits/${encodeURIComponent(currentKit)}`, { school });
  renderKit(currentKit);
});

$("revoke").addEventListener("click", async () => {
  if (!confirm("Révoquer ce kit ? Il sera déconnecté et devra être enrôlé à nouveau.")) return;
  await api("POST", `/api/v1/kits/${encodeURIComponent(currentKit)}/revoke`);
  renderKit(currentKit);
});

$("config-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await saveLayer("kit", currentKit, $("config-json").value, $("config-error"))) renderKit(currentKit);
});

// -- routing -----------------------------------------------------------------------------------

function route() {
  if (!state.me) return;
  const match = location.hash.match(/^#\/kit\/(.+)$/);
  const scope = location.hash.match(/^#\/config\/(fleet|school)\/(.+)$/);
  if (location.hash === "#/account") {
    currentKit = null;
    show("account-view");
    renderAccount().catch((error) => { $("password-error").textContent = error.message; });
  } else if (scope) {
    currentKit = null;
    currentScope = [scope[1], decodeURIComponent(scope[2])];
    show("config-view");
    renderScopeConfig(...currentScope).catch((error) => { $("scope-config-error").textContent = error.message; });
  } else if (match) {
    currentKit = decodeURIComponent(match[1]);
    show("kit-view");
    renderKit(currentKit).catch((error) => { $("kit-title").textContent = error.message; });
  } else {
    currentKit = null;
    show("dashboard-view");
    if (state.countsStale) loadCounts().catch(() => {});
  }
}

window.addEventListener("hashchange", route);
api("GET", "/api/v1/me").then(signedIn).catch(showLogin);
