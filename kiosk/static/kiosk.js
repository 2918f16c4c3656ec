// The teacher's kiosk. Every second it reads the agent's state (GET /api/status) and draws it:
// the page holds no state of its own, so a reload or a second kiosk shows the same class.
"use strict";

const STRINGS = {
  fr: {
    title: "Classe hybride", onAir: "EN DIRECT", start: "Démarrer le cours",
    idleNote: "Rien n'est filmé ni transmis avant de démarrer.",
    starting: "Démarrage du cours… ouverture des caméras", stopping: "Arrêt du cours…",
    camera: "Caméra de la salle", document: "Caméra document", microphone: "Micro",
    ready: "prête", readyMic: "prêt", absent: "débranchée", absentMic: "débranché",
    notConfigured: "non configurée", previewCamera: "Ce que les élèves voient de la salle",
    previewDocument: "Ce que les élèves voient de la caméra document",
    mute: "Couper le micro", unmute: "Rétablir le micro", linkLabel: "Lien pour les élèves :",
    pupils: (n) => (n === 0 ? "Aucun élève connecté" : n === 1 ? "1 élève connecté" : `${n} élèves connectés`),
    unnamed: (i) => `Élève ${i}`, connecting: "connexion…", lower: "Baisser la main", hand: "main levée",
    lowerAll: "Baisser toutes les mains", stop: "Arrêter le cours",
    confirmStop: "Arrêter le cours ? Les élèves seront déconnectés et le lien ne marchera plus.",
    cancel: "Continuer le cours", confirmStopButton: "Arrêter", close: "Fermer",
    qrZoom: "Agrandir le QR code", qrAlt: "QR code du lien pour les élèves", meter: "Niveau du micro",
    devices: "Appareils", other: "English",
    waitingRoom: (on) => `Salle d'attente : ${on ? "oui" : "non"}`,
    lock: "Verrouiller la classe", locked: "Classe verrouillée : toucher pour rouvrir",
    lobby: (n) => (n === 1 ? "1 élève en attente" : `${n} élèves en attente`),
    admitAll: "Tout admettre", admit: "Admettre", refuse: "Refuser", remove: "Retirer",
    confirmRemove: (name) => `Retirer ${name} du cours ? Cette page ne pourra plus revenir dans ce cours.`,
    questions: (n) => (n === 1 ? "1 question" : `${n} questions`),
    answered: "Répondu", dismiss: "Écarter", show: "Montrer à la classe", unshow: "Ne plus montrer",
    askedBy: (name) => `${name} demande :`,
    // The floor (docs/talkback.md): who speaks to the class, one tap to give it or take it back.
    give: "Donner la parole", takeBack: "Reprendre la parole", speaking: "a la parole",
    floorTitle: (names) => (names.length === 1 ? `${names[0]} a la parole` : `${names.join(" et ")} ont la parole`),
    mic: {
      opening: "ouverture du micro…", on: "la classe l'entend",
      denied: "micro refusé sur sa page", unavailable: "pas de micro sur sa page",
      insecure: "ne peut pas parler : page en http, donner le lien du serveur (https)",
    },
    problems: {
      camera_missing: "La caméra de la salle est débranchée. Les élèves voient « caméra indisponible ».",
      camera_error: "La caméra de la salle ne répond pas. Nouvel essai automatique…",
      document_missing: "La caméra document est débranchée.",
      document_error: "La caméra document ne répond pas. Nouvel essai automatique…",
      microphone_missing: "Le micro est débranché : les élèves n'entendent pas la classe.",
      microphone_error: "Le micro ne répond pas : les élèves n'entendent pas la classe.",
      muted: "Micro coupé : les élèves n'entendent pas la classe.",
      agent: "Le boîtier ne répond pas. Nouvel essai…",
      startFailed: "Le cours n'a pas pu démarrer. Réessayez ; si cela se répète, redémarrez le boîtier.",
      config_unreadable: (p) => `Le fichier de configuration est illisible : ${p.fallback === "last_good" ? "derniers réglages valides utilisés" : "réglages par défaut utilisés"}. Prévenez l'administrateur.`,
      config_missing: (p) => `Le fichier de configuration est absent : ${p.fallback === "last_good" ? "derniers réglages valides utilisés" : "réglages par défaut utilisés"}. Prévenez l'administrateur.`,
      disk_full: "Le disque du boîtier est plein : les réglages ne sont plus enregistrés. Le cours peut continuer ; prévenez l'administrateur.",
      speaker_unavailable: "Le haut-parleur de la salle ne fonctionne pas : l'élève qui a la parole n'est pas entendu dans la salle (les élèves à distance l'entendent). Vérifiez le branchement du haut-parleur ou prévenez l'administrateur.",
      network_none: "Les élèves à la maison ne peuvent pas rejoindre le cours : le réseau de l'établissement bloque la connexion. Les élèves dans l'établissement le peuvent. Prévenez l'administrateur.",
      speaker_unavailable: "Le haut-parleur de la salle ne fonctionne pas : la classe n'entend pas l'élève qui a la parole (les autres élèves l'entendent). Vérifiez qu'il est branché et allumé.",
    },
    path: { direct: "direct", relay: "relais" },
    // Each pupil's connection as the kit judges it (/api/status viewers[i].link, docs/kiosk.md).
    quality: { full: "bonne connexion", reduced: "connexion faible : qualité réduite", "audio-only": "connexion très faible : son seulement" },
    linkFigures: (kbps, loss) => [kbps === null ? "" : `${kbps.toLocaleString("fr-FR")} kbit/s`,
      loss === null ? "" : `${loss.toLocaleString("fr-FR")} % perdus`].filter(Boolean).join(", "),
  },
  en: {
    title: "Hybrid classroom", onAir: "LIVE", start: "Start the class",
    idleNote: "Nothing is filmed or sent before you start.",
    starting: "Starting the class… opening the cameras", stopping: "Ending the class…",
    camera: "Room camera", document: "Document camera", microphone: "Microphone",
    ready: "ready", readyMic: "ready", absent: "unplugged", absentMic: "unplugged",
    notConfigured: "not configured", previewCamera: "What pupils see of the room",
    previewDocument: "What pupils see of the document camera",
    mute: "Mute the microphone", unmute: "Unmute the microphone", linkLabel: "Link for pupils:",
    pupils: (n) => (n === 0 ? "No pupil connected" : n === 1 ? "1 pupil connected" : `${n} pupils connected`),
    unnamed: (i) => `Pupil ${i}`, connecting: "connecting…", lower: "Lower hand", hand: "hand raised",
    lowerAll: "Lower all hands", stop: "End the class",
    confirmStop: "End the class? Pupils will be disconnected and the link will stop working.",
    cancel: "Keep teaching", confirmStopButton: "End", close: "Close",
    qrZoom: "Enlarge the QR code", qrAlt: "QR code of the pupils' link", meter: "Microphone level",
    devices: "Devices", other: "Français",
    waitingRoom: (on) => `Waiting room: ${on ? "on" : "off"}`,
    lock: "Lock the class", locked: "Class locked: tap to reopen",
    lobby: (n) => (n === 1 ? "1 pupil waiting" : `${n} pupils waiting`),
    admitAll: "Admit all", admit: "Admit", refuse: "Refuse", remove: "Remove",
    confirmRemove: (name) => `Remove ${name} from the class? This page will not be able to come back to this class.`,
    questions: (n) => (n === 1 ? "1 question" : `${n} questions`),
    answered: "Answered", dismiss: "Dismiss", show: "Show to the class", unshow: "Stop showing",
    askedBy: (name) => `${name} asks:`,
    give: "Give the floor", takeBack: "Take the floor back", speaking: "has the floor",
    floorTitle: (names) => (names.length === 1 ? `${names[0]} has the floor` : `${names.join(" and ")} have the floor`),
    mic: {
      opening: "opening the microphone…", on: "the class hears them",
      denied: "microphone refused on their page", unavailable: "no microphone on their page",
      insecure: "cannot speak: page over http, give the server's link (https)",
    },
    problems: {
      camera_missing: "The room camera is unplugged. Pupils see “camera unavailable”.",
      camera_error: "The room camera is not responding. Retrying automatically…",
      document_missing: "The document camera is unplugged.",
      document_error: "The document camera is not responding. Retrying automatically…",
      microphone_missing: "The microphone is unplugged: pupils cannot hear the class.",
      microphone_error: "The microphone is not responding: pupils cannot hear the class.",
      muted: "Microphone muted: pupils cannot hear the class.",
      agent: "The kit is not responding. Retrying…",
      startFailed: "The class could not start. Try again; if it happens again, restart the kit.",
      config_unreadable: (p) => `The configuration file is unreadable: ${p.fallback === "last_good" ? "last good settings in use" : "default settings in use"}. Tell the administrator.`,
      config_missing: (p) => `The configuration file is missing: ${p.fallback === "last_good" ? "last good settings in use" : "default settings in use"}. Tell the administrator.`,
      disk_full: "The kit's disk is full: settings are no longer saved. The class can go on; tell the administrator.",
      speaker_unavailable: "The classroom speaker is not working: the pupil who has the floor is not heard in the room (remote pupils still hear them). Check the speaker's cable or tell the administrator.",
      network_none: "Pupils at home cannot join the class: the school's network blocks the connection. Pupils in the school can. Tell the administrator.",
      speaker_unavailable: "The room's speaker is not working: the class cannot hear the pupil who has the floor (the other pupils can). Check it is plugged in and switched on.",
    },
    path: { direct: "direct", relay: "relayed" },
    quality: { full: "good connection", reduced: "weak connection: reduced quality", "audio-only": "very weak connection: sound only" },
    linkFigures: (kbps, loss) => [kbps === null ? "" : `${kbps.toLocaleString("en-GB")} kbit/s`,
      loss === null ? "" : `${loss.toLocaleString("en-GB")} % lost`].filter(Boolean).join(", "),
  },
};

const $ = (id) => document.getElementById(id);
let lang = localStorage.getItem("kiosk.lang") || null;
let status = null;          // last GET /api/status
let agentDown = false;
let startFailed = false;
let busy = null;            // "starting" | "stopping" while a request is under way
let elapsedBase = null;     // [elapsed_s from the agent, performance.now() when read]
let previewTimer = null;
let software = null;        // the agent's version when this page loaded

const T = () => STRINGS[lang || (status && status.language) || "fr"] || STRINGS.fr;

function translate() {
  const t = T();
  document.documentElement.lang = lang || (status && status.language) || "fr";
  document.querySelectorAll("[data-t]").forEach((el) => {
    const value = t[el.dataset.t];
    if (typeof value === "string") el.textContent = value;
  });
  document.querySelectorAll("[data-alt]").forEach((el) => { el.alt = t[el.dataset.alt]; });
  $("lang").textContent = t === STRINGS.fr ? "EN" : "FR";
  $("lang").setAttribute("aria-label", t.other);
  $("qr-button").setAttribute("aria-label", t.qrZoom);
  $("qr").alt = t.qrAlt; $("qr-large").alt = t.qrAlt;
  $("meter").setAttribute("aria-label", t.meter);
  $("devices").setAttribute("aria-label", t.devices);
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

async function refresh() {
  try {
    status = await api("/api/status");
    agentDown = false;
    if (software && status.software !== software) {
      location.reload();  // the agent was upgraded: take its new page
      return;
    }
    software = status.software;
  } catch (err) {
    agentDown = true;
  }
  render();
}

function view() {
  if (busy) return busy === "stopping" ? "starting" : busy;
  if (!status) return "loading";
  const phase = status.session.phase;
  if (phase === "starting") return "starting";
  return status.session.state === "live" ? "live" : "idle";
}

function render() {
  const t = T();
  translate();
  const v = view();
  document.body.dataset.view = v;
  if (status) renderClassControls(t);
  $("starting").querySelector("p").textContent = busy === "stopping" ? t.stopping : t.starting;
  renderProblems(t);
  if (!status) return;
  if (v === "idle") renderDevices(t);
  if (v === "live") renderLive(t);
  if (v === "live" && !previewTimer) startPreviews();
  if (v !== "live" && previewTimer) stopPreviews();
}

function renderProblems(t) {
  const messages = [];
  if (agentDown) messages.push(t.problems.agent);
  if (startFailed) messages.push(t.problems.startFailed);
  for (const problem of (status && status.problems) || []) {  // the kit's own: config, disk
    const text = t.problems[problem.code];
    messages.push(typeof text === "function" ? text(problem) : text || problem.detail || problem.code);
  }
  // Nothing gets out of the school to the fleet's STUN/TURN server (docs/kiosk.md, "Network").
  if (status && status.network && status.network.reach === "none") messages.push(t.problems.network_none);
  if (status && status.session.state === "live") {
    for (const source of status.sources) {
      if (source.state === "missing" || source.state === "error") {
        messages.push(t.problems[`${source.id}_${source.state}`] || `${source.id}: ${source.state}`);
      }
    }
    if (status.session.muted) messages.push(t.problems.muted);
  }
  replaceList($("problems"), messages, (text) => {
    const div = document.createElement("div");
    div.className = "problem"; div.textContent = text;
    return div;
  });
}

function renderDevices(t) {
  const byId = Object.fromEntries(status.sources.map((s) => [s.id, s]));
  replaceList($("devices"), ["camera", "document", "microphone"], (id) => {
    const li = document.createElement("li");
    const source = byId[id];
    const mic = id === "microphone";
    const label = document.createElement("span");
    label.textContent = t[id];
    const state = document.createElement("span");
    state.className = "state";
    if (!source) { li.className = "off"; state.textContent = t.notConfigured; }
    else if (source.state === "ok") state.textContent = mic ? t.readyMic : t.ready;
    else { li.className = "bad"; state.textContent = mic ? t.absentMic : t.absent; }
    li.dataset.source = id; li.dataset.state = source ? source.state : "off";
    li.append(label, state);
    return li;
  });
}

function renderLive(t) {
  const s = status.session;
  const link = s.join_url || "";
  if ($("join-link").textContent !== link) {
    $("join-link").textContent = link; $("qr-large-link").textContent = link;
    const qr = `/api/qr.svg?u=${encodeURIComponent(link)}`;
    $("qr").src = qr; $("qr-large").src = qr;
  }
  elapsedBase = [s.elapsed_s, performance.now()];
  tickElapsed();
  const mic = status.sources.find((x) => x.id === "microphone");
  const level = mic && typeof mic.level_dbfs === "number" ? mic.level_dbfs : -90;
  const pct = Math.max(0, Math.min(100, ((level + 60) / 60) * 100));
  $("meter-fill").style.width = `${pct}%`;
  $("meter").setAttribute("aria-valuenow", String(Math.round(Math.max(-60, level))));
  $("mute").setAttribute("aria-pressed", String(s.muted));
  $("mute").textContent = s.muted ? t.unmute : t.mute;
  $("mute").disabled = !mic;
  const everyone = status.pupils.map((p, i) => ({ ...p, index: i + 1 }));
  const pupils = everyone.filter((p) => p.admitted !== false);
  renderLobby(everyone.filter((p) => p.admitted === false), t);
  renderQuestions(t);
  renderFloor(everyone.filter((p) => p.floor), t);
  $("pupil-count").textContent = t.pupils(pupils.length);
  $("lower-all").hidden = !pupils.some((p) => p.hand_raised_at);
  const ordered = pupils  // who speaks first, then raised hands, oldest first
    .sort((a, b) => (Boolean(b.floor) - Boolean(a.floor))
      || ((a.hand_raised_at || Infinity) - (b.hand_raised_at || Infinity)));
  const links = new Map((status.viewers || []).map((v) => [v.id, v.link]));
  replaceList($("pupils"), ordered, (p) => pupilRow(p, t, links.get(p.id)));
  // The figures change every second: set in place, so the rows (and a "lower" button being
  // pressed) are not rebuilt for a few kbit/s.
  for (const badge of $("pupils").querySelectorAll(".link")) {
    const figures = linkFigures(links.get(badge.closest("li").dataset.id), t);
    if (figures) badge.title = figures; else badge.removeAttribute("title");
  }
}

// A figure worth showing: a finite number ≥ 0, else null (absent, null, or nonsense).
function figure(value, round) {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? round(value) : null;
}

// How this pupil's connection is: the kit's "quality" in words (the estimate and loss go in its
// tooltip, linkFigures). Nothing for a pupil the kit gives no quality for (an older kit, a
// pupil not judged yet, a level this page does not know).
function linkBadge(link, t) {
  const quality = link && typeof link.quality === "string" ? link.quality : null;
  if (!quality || !Object.prototype.hasOwnProperty.call(t.quality, quality)) return null;
  const badge = document.createElement("span");
  badge.className = "link"; badge.dataset.quality = quality;
  badge.textContent = t.quality[quality];
  return badge;
}

function linkFigures(link, t) {
  if (!link || typeof link !== "object") return "";
  const kbps = figure(link.estimate_kbps, (x) => (x >= 1000 ? Math.round(x / 100) * 100 : Math.round(x / 10) * 10));
  return t.linkFigures(kbps, figure(link.loss_percent, (x) => Math.round(x)));
}

function pupilRow(p, t, link) {
  const li = document.createElement("li");
  li.dataset.id = p.id;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = p.name || t.unnamed(p.index);
  li.append(name);
  if (!p.connected) {
    const pending = document.createElement("span");
    pending.className = "pending"; pending.textContent = t.connecting;
    li.append(pending);
  } else if (p.path) {  // how this pupil's media flows: straight, or through the relay server
    const path = document.createElement("span");
    path.className = "path"; path.title = p.path; path.dataset.path = p.path;
    path.textContent = p.path.startsWith("relay/") ? t.path.relay : t.path.direct;
    li.append(path);
  }
  if (p.connected) {
    const badge = linkBadge(link, t);
    if (badge) li.append(badge);
  }
  if (p.floor) {
    li.className = "has-floor";
    const badge = document.createElement("span");
    badge.className = "speaking"; badge.textContent = t.speaking;
    li.append(badge);
  }
  if (p.hand_raised_at) {
    li.className = p.floor ? "has-floor" : "hand";
    const badge = document.createElement("span");
    badge.className = "badge"; badge.textContent = t.hand;
    li.append(badge);
    const lower = document.createElement("button");
    lower.type = "button"; lower.className = "lower"; lower.textContent = t.lower;
    lower.setAttribute("aria-label", `${t.lower} : ${name.textContent}`);
    lower.addEventListener("click", () => act(`/api/pupils/${encodeURIComponent(p.id)}/lower-hand`));
    li.append(lower);
  }
  if (p.connected && !p.floor && ["denied", "unavailable", "insecure"].includes(p.mic)) {
    const why = document.createElement("span");  // why this pupil was not (or cannot be) heard
    why.className = "nomic"; why.dataset.mic = p.mic;
    why.textContent = t.mic[p.mic];
    li.append(why);
  }
  const floor = floorButton(p, name.textContent, t);  // a refused microphone may be retried
  if (floor) li.append(floor);
  li.append(removeButton(p, name.textContent, t));
  return li;
}

// One tap gives the floor, one tap takes it back (docs/talkback.md). None for a pupil whose page
// cannot send sound (the kit would refuse: a page over http, a kit without talk-back).
function floorButton(p, shownName, t) {
  const path = `/api/pupils/${encodeURIComponent(p.id)}/floor`;
  if (p.floor) return button("take-floor", t.takeBack, `${t.takeBack} : ${shownName}`, () => act(path, { floor: false }));
  if (!p.connected || !p.can_speak || p.mic === "insecure") return null;
  return button("give-floor", t.give, `${t.give} : ${shownName}`, () => act(path, { floor: true }));
}

// The banner above everything while a pupil has the floor: their name, whether the class hears
// them yet, and the same one-tap "take it back".
function renderFloor(holders, t) {
  const numbers = new Map(status.pupils.map((p, i) => [p.id, i + 1]));
  const names = holders.map((p) => p.name || t.unnamed(numbers.get(p.id)));
  $("floor").hidden = holders.length === 0;
  document.body.dataset.floor = String(holders.length > 0);
  const title = holders.length ? t.floorTitle(names) : "";
  if ($("floor-title").textContent !== title) $("floor-title").textContent = title;
  replaceList($("floor-list"), holders, (p, i) => {
    const li = document.createElement("li");
    li.dataset.id = p.id;
    const who = document.createElement("span");
    who.className = "who"; who.textContent = names[i];
    const mic = document.createElement("span");
    mic.className = "mic"; mic.dataset.mic = p.mic || "opening";
    mic.textContent = p.mic === "on" ? t.mic.on : t.mic.opening;
    li.append(who, mic, floorButton(p, names[i], t));
    return li;
  });
}

// -- Who is in: waiting room, lock, removal; written questions (docs/kiosk.md) -------------------

function classState() {
  return (status && status.class) || { waiting_room: false, locked: false, shown: null, questions: [] };
}

function renderClassControls(t) {
  const c = classState();
  for (const id of ["waiting-room", "waiting-room-idle"]) {
    $(id).textContent = t.waitingRoom(c.waiting_room);
    $(id).setAttribute("aria-pressed", String(Boolean(c.waiting_room)));
  }
  $("lock").textContent = c.locked ? t.locked : t.lock;
  $("lock").setAttribute("aria-pressed", String(Boolean(c.locked)));
  $("confirm-remove-button").textContent = t.remove;
}

function button(className, text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = className; b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

let removing = null;  // the pupil the confirmation dialog is about: { id }

function removeButton(p, shownName, t) {
  return button(p.admitted === false ? "refuse" : "remove", p.admitted === false ? t.refuse : t.remove,
    `${p.admitted === false ? t.refuse : t.remove} : ${shownName}`, () => {
      removing = { id: p.id };
      $("confirm-remove-text").textContent = t.confirmRemove(shownName);
      $("confirm-remove").showModal();
    });
}

function renderLobby(waiting, t) {
  $("lobby").hidden = waiting.length === 0;
  $("lobby-count").textContent = t.lobby(waiting.length);
  replaceList($("lobby-list"), waiting, (p) => {
    const li = document.createElement("li");
    li.dataset.id = p.id;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = p.name || t.unnamed(p.index);
    li.append(name,
      button("admit", t.admit, `${t.admit} : ${name.textContent}`,
        () => act(`/api/pupils/${encodeURIComponent(p.id)}/admit`)),
      removeButton(p, name.textContent, t));
    return li;
  });
  document.body.dataset.busy = String(waiting.length > 0 || classState().questions.length > 0);
}

function renderQuestions(t) {
  const c = classState();
  const questions = c.questions || [];
  $("questions-section").hidden = questions.length === 0;
  $("questions-title").textContent = t.questions(questions.length);
  const numbers = new Map(status.pupils.map((p, i) => [p.id, i + 1]));
  replaceList($("questions"), questions, (q) => {
    const li = document.createElement("li");
    li.dataset.id = q.id;
    const shown = c.shown === q.id;
    if (shown) li.className = "shown";
    const who = document.createElement("span");
    who.className = "who";
    const asker = q.name || (numbers.has(q.pupil) ? t.unnamed(numbers.get(q.pupil)) : "?");
    who.textContent = t.askedBy(asker);
    const text = document.createElement("p");
    text.className = "text"; text.textContent = q.text;  // the pupil's words: text, never HTML
    const path = `/api/questions/${encodeURIComponent(q.id)}`;
    const show = button("show", shown ? t.unshow : t.show, null,
      () => act("/api/questions/show", { id: shown ? null : q.id }));
    show.setAttribute("aria-pressed", String(shown));
    li.append(who, text,
      button("answered", t.answered, `${t.answered} : ${asker}`, () => act(path, { state: "answered" })),
      button("dismiss secondary", t.dismiss, `${t.dismiss} : ${asker}`, () => act(path, { state: "dismissed" })),
      show);
    return li;
  });
}

// Replace children only when what they show changed (keeps focus and avoids flicker).
function replaceList(parent, items, build) {
  const built = items.map(build);
  const html = built.map((el) => el.outerHTML).join("");
  if (parent.dataset.rendered === html) return;
  parent.dataset.rendered = html;
  parent.replaceChildren(...built);
}

function tickElapsed() {
  if (!elapsedBase) return;
  const seconds = Math.floor(elapsedBase[0] + (performance.now() - elapsedBase[1]) / 1000);
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), sec = seconds % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  $("elapsed").textContent = `${h ? `${h}:` : ""}${mm}:${String(sec).padStart(2, "0")}`;
}

// Previews: a small JPEG of each camera a few times a second, only while live and visible.
function startPreviews() {
  const load = (id) => new Promise((resolve) => {
    const img = new Image();
    img.onload = () => { $(`preview-${id}`).src = img.src; resolve(); };
    img.onerror = () => resolve();
    img.src = `/api/preview/${id}?t=${Date.now()}`;
  });
  const loop = async () => {
    if (document.visibilityState === "visible") await Promise.all([load("camera"), load("document")]);
    previewTimer = setTimeout(loop, 300);
  };
  previewTimer = setTimeout(loop, 0);
}

function stopPreviews() {
  clearTimeout(previewTimer); previewTimer = null;
  $("preview-camera").removeAttribute("src"); $("preview-document").removeAttribute("src");
}

async function act(path, body = {}) {
  try { status = await api(path, body); } catch (err) { /* the next refresh shows the truth */ }
  render();
}

$("start").addEventListener("click", async () => {
  busy = "starting"; startFailed = false; render();
  try { status = await api("/api/session/start", {}); } catch (err) { startFailed = true; }
  busy = null; render();
});
$("stop").addEventListener("click", () => $("confirm-stop").showModal());
$("cancel-stop").addEventListener("click", () => $("confirm-stop").close());
$("confirm-stop-button").addEventListener("click", async () => {
  $("confirm-stop").close();
  busy = "stopping"; render();
  try { status = await api("/api/session/stop", {}); } catch (err) { /* refresh shows it */ }
  busy = null; render();
});
$("mute").addEventListener("click", () => act("/api/session/mute", { muted: !status.session.muted }));
$("lower-all").addEventListener("click", () => act("/api/hands/lower-all"));
$("admit-all").addEventListener("click", () => act("/api/pupils/admit-all"));
for (const id of ["waiting-room", "waiting-room-idle"]) {
  $(id).addEventListener("click", () => act("/api/class/waiting-room", { enabled: !classState().waiting_room }));
}
$("lock").addEventListener("click", () => act("/api/class/lock", { locked: !classState().locked }));
$("cancel-remove").addEventListener("click", () => { removing = null; $("confirm-remove").close(); });
$("confirm-remove-button").addEventListener("click", () => {
  const target = removing;
  removing = null; $("confirm-remove").close();
  if (target) act(`/api/pupils/${encodeURIComponent(target.id)}/remove`);
});
$("qr-button").addEventListener("click", () => $("qr-dialog").showModal());
$("qr-close").addEventListener("click", () => $("qr-dialog").close());
$("lang").addEventListener("click", () => {
  lang = T() === STRINGS.fr ? "en" : "fr";
  localStorage.setItem("kiosk.lang", lang);
  render();
});
document.addEventListener("contextmenu", (event) => event.preventDefault()); // long press on touch

refresh();
setInterval(refresh, 1000);
setInterval(tickElapsed, 250);
