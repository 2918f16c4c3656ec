// The pupil's page: join the class through WHEP (the link's token), play both cameras and the
// sound, raise a hand, ask written questions and speak when the teacher gives the floor, over the
// "classroom" data channel (the microphone is asked for only then, never the camera), and come back
// by itself after a network blip. While the class has not started the page waits and joins when
// it does; in a class with a waiting room it waits, connected but without picture or sound,
// until the teacher lets it in (docs/pupil-channel.md). Text from the kit is only ever set as
// textContent: never parsed as HTML, never made a link.
"use strict";

const STRINGS = {
  fr: {
    title: "Classe en direct", connecting: "Connexion…", live: "En direct",
    waiting: "Le cours n'a pas encore commencé. Cette page se connectera toute seule dès que ton enseignant le démarrera.",
    ended: "Le cours est terminé. Tu peux fermer cette page.",
    invalid: "Ce lien ne marche pas. Vérifie le lien donné par ton enseignant.",
    unsupported: "Navigateur non compatible : il ne sait pas lire la vidéo du cours (H.264 ou VP8). Ouvre ce lien avec un autre navigateur à jour (Firefox, Chrome, Edge ou Safari).",
    full: "La classe est complète pour le moment. Nouvel essai dans quelques secondes…",
    reconnecting: "Connexion perdue. Reconnexion automatique…",
    sound: "Activer le son", raise: "Lever la main", lower: "Baisser la main", swap: "Inverser les vues",
    fullscreen: "Document en plein écran", camera: "Caméra de la salle", document: "Caméra document",
    nameLabel: "Ton prénom (facultatif)", nameSave: "Envoyer",
    nameNote: "Visible par ton enseignant pendant ce cours, et par la classe quand tu as la parole.",
    quality: { good: "Connexion bonne", fair: "Connexion moyenne", poor: "Connexion faible" },
    handLowered: "Ton enseignant a baissé ta main.",
    lobbyShort: "Salle d'attente",
    lobby: "Tu es dans la salle d'attente. Ton enseignant va te faire entrer. Écris ton prénom ci-dessous pour qu'il te reconnaisse.",
    removed: "Ton enseignant t'a retiré de ce cours. Tu ne peux pas revenir avec cette page.",
    locked: "La classe est verrouillée : personne ne peut plus entrer pour le moment. Nouvel essai automatique…",
    questionLabel: "Ta question (280 caractères au plus)", questionSend: "Poser la question",
    questionSent: "Question envoyée à ton enseignant.", questionAnswered: "Ton enseignant a répondu à ta question.",
    questionDismissed: "Ton enseignant a écarté ta question.", questionRefused: "Question refusée : ",
    shownLabel: "Question montrée à la classe :",
    // The floor (docs/talkback.md): who speaks; on the speaker's page, that the class hears them.
    floorYou: "Tu as la parole : la classe t'entend.", floorOpening: "Tu as la parole : ouverture du micro…",
    floorOther: (names) => (names.length === 1 ? `${names[0]} a la parole` : `${names.join(" et ")} ont la parole`),
    aPupil: "Un élève", floorStop: "Arrêter de parler",
    micDenied: "Ton micro est bloqué : la classe ne peut pas t'entendre. Autorise le micro pour cette page dans ton navigateur.",
    micUnavailable: "Aucun micro n'est disponible : la classe ne peut pas t'entendre.",
    micInsecure: "Cette page ne peut pas utiliser de micro (adresse en http). Pour parler à la classe, ouvre le lien du cours qui commence par https.",
    lobbyTimeout: "Personne ne t'a fait entrer : la salle d'attente est fermée pour cette page. Recharge la page pour frapper de nouveau.",
    // What the kit sends this pupil ("quality" message): said plainly while it is not "full".
    adapted: { reduced: "Connexion faible : qualité réduite", "audio-only": "Connexion très faible : son seulement" },
  },
  en: {
    title: "Live class", connecting: "Connecting…", live: "Live",
    waiting: "The class has not started yet. This page will join by itself as soon as your teacher starts it.",
    ended: "The class has ended. You can close this page.",
    invalid: "This link does not work. Check the link your teacher gave you.",
    unsupported: "Browser not supported: it cannot play the class's video (H.264 or VP8). Open this link in another up-to-date browser (Firefox, Chrome, Edge or Safari).",
    full: "The class is full right now. Trying again in a few seconds…",
    reconnecting: "Connection lost. Reconnecting automatically…",
    sound: "Turn sound on", raise: "Raise hand", lower: "Lower hand", swap: "Swap views",
    fullscreen: "Document full screen", camera: "Room camera", document: "Document camera",
    nameLabel: "Your first name (optional)", nameSave: "Send",
    nameNote: "Your teacher sees it during this class; the class does too while you have the floor.",
    quality: { good: "Good connection", fair: "Fair connection", poor: "Poor connection" },
    handLowered: "Your teacher lowered your hand.",
    lobbyShort: "Waiting room",
    lobby: "You are in the waiting room. Your teacher will let you in. Write your first name below so they recognise you.",
    removed: "Your teacher removed you from this class. You cannot come back with this page.",
    locked: "The class is locked: nobody can join right now. Trying again automatically…",
    questionLabel: "Your question (280 characters at most)", questionSend: "Ask the question",
    questionSent: "Question sent to your teacher.", questionAnswered: "Your teacher answered your question.",
    questionDismissed: "Your teacher set your question aside.", questionRefused: "Question refused: ",
    shownLabel: "Question shown to the class:",
    floorYou: "You have the floor: the class hears you.", floorOpening: "You have the floor: opening the microphone…",
    floorOther: (names) => (names.length === 1 ? `${names[0]} has the floor` : `${names.join(" and ")} have the floor`),
    aPupil: "A pupil", floorStop: "Stop speaking",
    micDenied: "Your microphone is blocked: the class cannot hear you. Allow the microphone for this page in your browser.",
    micUnavailable: "No microphone is available: the class cannot hear you.",
    micInsecure: "This page cannot use a microphone (http address). To speak to the class, open the class link that starts with https.",
    lobbyTimeout: "Nobody let you in: the waiting room is closed for this page. Reload the page to knock again.",
    adapted: { reduced: "Weak connection: reduced quality", "audio-only": "Very weak connection: sound only" },
  },
};
const lang = (navigator.languages || [navigator.language || "fr"])
  .map((l) => l.slice(0, 2).toLowerCase()).find((l) => l in STRINGS) || "fr";
const T = STRINGS[lang];

const $ = (id) => document.getElementById(id);
const token = location.pathname.split("/").filter(Boolean).pop();
const whepUrl = new URL(`../whep/${encodeURIComponent(token)}`, location.href).toString();
let session = null;      // the live WHEP session: { pc, channel, streams, close() }
let generation = 0;      // bumps on every (re)join, so stale callbacks do nothing
let failures = 0;        // consecutive failed attempts, for the back-off
let handRaised = false;
let pupilName = sessionStorage.getItem(`name.${token}`) || "";
let inLobby = false;     // connected, in the class's waiting room: no media until admitted
// The rejoin key of this tab for this class (random, never shown): the kit refuses it once the
// teacher has removed this pupil, and lets it back in without waiting after a network blip.
const pupilKey = sessionStorage.getItem(`key.${token}`) || (() => {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const key = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  sessionStorage.setItem(`key.${token}`, key);
  return key;
})();
let statsTimer = null;
let cameraFps = 30;      // the rate the kit sends the room camera at (its welcome says)
// Talk-back (docs/talkback.md): the microphone exists only while the kit says this pupil has the
// floor. A page that is not a secure context (a kit's plain http:// address) cannot have one:
// it offers receive-only audio and tells the kit, so the kiosk shows why.
const micAvailable = window.isSecureContext && Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
const micCapability = !window.isSecureContext ? "insecure" : micAvailable ? "ready" : "unavailable";
let floorYou = false;    // the kit's last word: this pupil has the floor
let micTrack = null;     // the open microphone track, only while floorYou
let micOpening = null;   // the getUserMedia under way

function translatePage() {
  document.documentElement.lang = lang;
  document.title = T.title;
  $("unmute").textContent = T.sound; $("swap").textContent = T.swap;
  $("fullscreen").textContent = T.fullscreen;
  $("label-camera").textContent = T.camera; $("label-document").textContent = T.document;
  $("camera").setAttribute("aria-label", T.camera); $("document").setAttribute("aria-label", T.document);
  $("name-label").textContent = T.nameLabel; $("name-save").textContent = T.nameSave;
  $("name-note").textContent = T.nameNote; $("name").value = pupilName;
  $("question-label").textContent = T.questionLabel; $("question-send").textContent = T.questionSend;
  $("shown-label").textContent = T.shownLabel; $("floor-stop").textContent = T.floorStop;
  renderHand();
}

function setState(state, text) {
  document.body.dataset.state = state;
  $("status").textContent = state === "live" ? T.live : state === "lobby" ? T.lobbyShort : text;
  $("overlay-text").textContent = text;
  $("overlay").setAttribute("aria-hidden", String(state === "live"));
  $("hand").disabled = state !== "live";
  $("question-send").disabled = state !== "live";
}

// Connected: in the class, or in its waiting room (the kit's welcome says which, then
// "waiting" / "admitted"). A kit before the waiting room sends no "waiting": in at once.
function showJoined() {
  if (inLobby) setState("lobby", T.lobby);
  else setState("live", T.live);
}

function renderHand() {
  $("hand").textContent = handRaised ? T.lower : T.raise;
  $("hand").setAttribute("aria-pressed", String(handRaised));
}

// The kit's word on what this pupil gets (docs/pupil-channel.md): nothing on "full" (or any
// level this page does not know), a plain line otherwise, beside the connection indicator.
function showAdapted(level) {
  const text = level === "reduced" || level === "audio-only" ? T.adapted[level] : "";
  $("adapted").textContent = text;
  $("adapted").dataset.level = text ? level : "";
  $("adapted").hidden = !text;
}

function send(message) {
  const channel = session && session.channel;
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(message));
}

async function play(el) {
  try { await el.play(); } catch (err) { if (el.id === "microphone") $("unmute").hidden = false; }
}

async function join() {
  const mine = ++generation;
  if (!document.body.dataset.state || document.body.dataset.state === "connecting") setState("connecting", T.connecting);
  let joined;
  try {
    joined = await whepConnect(whepUrl, {
      dataChannel: true, headers: { "X-Pupil-Key": pupilKey }, talkback: micCapability === "ready",
    });
  } catch (err) {
    if (mine !== generation) return;
    refused(err);
    return;
  }
  if (mine !== generation) { joined.close(); return; }
  session = joined;
  for (const id of ["camera", "document", "microphone"]) {
    const el = $(id);
    el.srcObject = session.streams[id];
    play(el);
  }
  watch(session, mine);
}

function refused(err) {
  // 415 to our application/sdp offer: no video codec the kit sends (docs/whep.md), for good.
  if (err.status === 415 || typeof RTCPeerConnection === "undefined") { setState("unsupported", T.unsupported); return; }
  const state = err.classState || (err.status === 409 ? "waiting" : err.status === 404 ? "invalid" : "");
  if (state === "ended" || state === "invalid" || state === "removed") { setState(state, T[state]); return; }
  if (state === "locked") { failures = 0; setState("locked", T.locked); setTimeout(join, 10000); return; }
  if (state === "waiting") { failures = 0; setState("waiting", T.waiting); setTimeout(join, 2000); return; }
  if (state === "full") { setState("full", T.full); setTimeout(join, 5000); return; }
  retryLater();
}

// 0.25 s, 0.5 s, 1 s, then every 2 s (±25 %): back within a second or two of the kit's return.
function retryLater() {
  failures += 1;
  setState("reconnecting", T.reconnecting);
  const delay = Math.min(2000, 250 * 2 ** Math.min(failures - 1, 3));
  setTimeout(join, delay * (0.75 + Math.random() * 0.5));
}

// The connection went quiet: ask the kit whether it still knows this session. A kit that has
// restarted answers 404 "gone" and one that is down does not answer: reconnect now rather than
// wait for the timer (docs/recovery.md). Anything else (a network blip) leaves ICE to recover.
async function probe(current, lost) {
  let response;
  try {
    response = await fetch(current.resource, { method: "GET", cache: "no-store" });
  } catch (err) {
    lost();
    return;
  }
  if (response.status === 404 && response.headers.get("X-Class-State") === "gone") lost();
}

// The kit sends all the time (a "camera unavailable" card, silence): a second without any
// packet means the kit or the path is gone, before ICE says "disconnected" (~3 s, then the
// 2.5 s grace below). Then the kit is asked (probe); after STALL_LOST_MS without a packet the
// page reconnects whatever the answer (a relay that cannot tell, a path that is gone).
const STALL_MS = 1000;
const STALL_LOST_MS = 2500;

function watchPackets(current, onStall, onLost) {
  // The newest packet time over the receivers, compared with its previous value only (its
  // time base differs between browsers).
  let newest = -1, changedAt = performance.now(), probedAt = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    let latest = 0;
    for (const receiver of current.pc.getReceivers()) {
      for (const source of receiver.getSynchronizationSources()) latest = Math.max(latest, source.timestamp);
    }
    const state = current.pc.connectionState;
    // In the waiting room nothing is sent on purpose: not a stall.
    if (inLobby || latest !== newest || (state !== "connected" && state !== "disconnected")) {
      newest = latest; changedAt = now; return;
    }
    if (now - changedAt > STALL_LOST_MS) onLost();
    else if (now - changedAt > STALL_MS && now - probedAt > STALL_MS) { probedAt = now; onStall(); }
  }, 250);
  return () => clearInterval(timer);
}

function watch(current, mine) {
  const { pc, channel } = current;
  let disconnectTimer = null;
  let welcomed = false;
  let stopWatching = () => {};
  const lost = () => {
    if (mine !== generation || session !== current) return;
    stopWatching();
    session = null; current.close();  // DELETE: free our place at once
    stopStats(); showAdapted("full");  // the next session's kit says again if need be
    stopMic(); showFloor(false, []);    // a new session starts without the floor
    retryLater();
  };
  stopWatching = watchPackets(current, () => probe(current, lost), lost);
  const onState = () => {
    const state = pc.connectionState;
    clearTimeout(disconnectTimer);
    if (state === "connected") {
      failures = 0; startStats(current);
      // The welcome says whether this pupil is in or waits: shown when it comes (the channel
      // opens just after the connection), or after 3 s without one (a player with no channel).
      if (welcomed) showJoined();
      else setTimeout(() => { if (!welcomed && session === current && pc.connectionState === "connected") showJoined(); }, 3000);
    }
    else if (state === "failed" || state === "closed") lost();
    else if (state === "disconnected") {
      disconnectTimer = setTimeout(lost, 2500);  // may recover
      probe(current, lost);
    }
  };
  pc.addEventListener("connectionstatechange", onState);
  if (pc.connectionState === "connected") onState();  // it may have come before this listener
  // What this page's microphone can do (the kit answers with who has the floor), the name and
  // the hand, each time the channel opens. Its first events may have come before these
  // listeners (whep.js keeps the early messages; a channel already open is greeted now).
  const sayWhoIAm = () => {
    channel.send(JSON.stringify({ type: "mic", state: micCapability }));
    if (pupilName) channel.send(JSON.stringify({ type: "name", name: pupilName }));
    if (handRaised) channel.send(JSON.stringify({ type: "hand", raised: true }));
  };
  channel.addEventListener("open", sayWhoIAm);
  const onMessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (err) { return; }
    if (message.type === "welcome") {
      const fps = Number(message.fps?.camera);
      if (fps >= 1 && fps <= 60) cameraFps = fps;
      welcomed = true; inLobby = message.admitted === false;  // a kit before it: in at once
      if (pc.connectionState === "connected") showJoined();
    } else if (message.type === "ended" || message.type === "removed" || message.type === "lobby_timeout") {
      generation += 1; session = null; stopMic(); current.close(); stopStats(); stopWatching(); showAdapted("full");
      inLobby = false; showShown(null); showFloor(false, []);
      setState(message.type, message.type === "lobby_timeout" ? T.lobbyTimeout : T[message.type]);
    } else if (message.type === "admitted") {
      inLobby = false; if (pc.connectionState === "connected") showJoined();
    } else if (message.type === "question" && typeof message.state === "string") {
      const text = { open: T.questionSent, answered: T.questionAnswered, dismissed: T.questionDismissed }[message.state];
      if (text) $("question-status").textContent = text;
      if (message.state === "open") $("question").value = "";
    } else if (message.type === "floor" && typeof message.you === "boolean" && Array.isArray(message.holders)) {
      showFloor(message.you, message.holders);
      // Given the floor, the hand went down for that: not "your teacher lowered your hand".
      if (message.you && $("status").textContent === T.handLowered) $("status").textContent = T.live;
      if (message.you) openMic(current); else stopMic();
    } else if (message.type === "shown") {
      showShown(typeof message.text === "string" ? message.text : null);
    } else if (message.type === "error" && typeof message.reason === "string" && /question/.test(message.reason)) {
      $("question-status").textContent = T.questionRefused + message.reason.slice(0, 200);
    } else if (message.type === "hand" && typeof message.raised === "boolean") {
      if (handRaised && !message.raised) $("status").textContent = T.handLowered;
      handRaised = message.raised; renderHand();
    } else if (message.type === "quality" && typeof message.level === "string") {
      showAdapted(message.level);
    }
  };
  channel.addEventListener("message", onMessage);
  for (const event of current.takeEarlyMessages()) onMessage(event);
  if (channel.readyState === "open") sayWhoIAm();
  channel.addEventListener("close", () => lost());  // the kit closed our session
}

// Connection quality from the room camera's receive statistics, every 2 s.
function startStats(current) {
  stopStats();
  let previous = null;
  statsTimer = setInterval(async () => {
    const stats = await current.pc.getStats();
    let inbound = null, rtt = null;
    const cameraTrack = current.streams.camera.getVideoTracks()[0];
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.trackIdentifier === cameraTrack.id) inbound = s;
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
    });
    if (!inbound) return;
    const now = { lost: inbound.packetsLost || 0, received: inbound.packetsReceived || 0 };
    if (previous) {
      const lostDelta = Math.max(0, now.lost - previous.lost);
      const total = lostDelta + Math.max(0, now.received - previous.received);
      const loss = total ? lostDelta / total : 1;
      const fps = inbound.framesPerSecond || 0;
      // Judged against the rate the kit sends at: a school set to 15 fps is not "fair" forever.
      const level = loss < 0.02 && fps >= 0.7 * cameraFps && (rtt === null || rtt < 0.3) ? "good"
        : loss < 0.08 && fps >= 0.35 * cameraFps ? "fair" : "poor";
      $("quality").dataset.level = level;
      $("quality-text").textContent = T.quality[level];
      $("quality").title = `${Math.round(fps)} i/s, ${(loss * 100).toFixed(1)} %`;
    }
    previous = now;
  }, 2000);
}

// -- The floor (docs/talkback.md) ------------------------------------------------------------

// Who has the floor, on every page: names as text (never HTML), "a pupil" for one without.
function showFloor(you, holders) {
  floorYou = you;
  const names = holders.slice(0, 2).map((n) => (typeof n === "string" && n ? n.slice(0, 40) : T.aPupil));
  const section = $("floor");
  section.hidden = !you && names.length === 0;
  section.dataset.you = String(you);
  $("floor-stop").hidden = !you;
  $("floor-text").textContent = you ? (micTrack ? T.floorYou : T.floorOpening) : names.length ? T.floorOther(names) : "";
}

// The kit gave this pupil the floor: ask for the microphone now (sound only, never the camera)
// and put it on the audio sender negotiated from the start. Refused or missing: say so, and tell
// the kit (which takes the floor back and shows why on the kiosk).
async function openMic(current) {
  if (micTrack || micOpening) return;
  $("mic-problem").hidden = true;
  const problem = (state) => {
    $("mic-problem").textContent = state === "denied" ? T.micDenied : state === "insecure" ? T.micInsecure : T.micUnavailable;
    $("mic-problem").hidden = false;
    send({ type: "mic", state });
  };
  if (micCapability !== "ready" || !current.audioSender) { problem(micCapability === "ready" ? "unavailable" : micCapability); return; }
  let stream;
  try {
    micOpening = navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    stream = await micOpening;
  } catch (err) {
    micOpening = null;
    problem(err && (err.name === "NotAllowedError" || err.name === "SecurityError") ? "denied" : "unavailable");
    return;
  } finally {
    micOpening = null;
  }
  const track = stream.getAudioTracks()[0];
  if (!track || !floorYou || session !== current) {  // taken back (or gone) while asking
    stream.getTracks().forEach((t) => t.stop());
    if (!track) problem("unavailable");
    return;
  }
  track.addEventListener("ended", () => {  // unplugged, or revoked by the browser
    if (micTrack !== track) return;
    stopMic(); problem("unavailable");
  });
  micTrack = track;
  try { await current.audioSender.replaceTrack(track); } catch (err) { stopMic(); problem("unavailable"); return; }
  send({ type: "mic", state: "on" });
  $("floor-text").textContent = T.floorYou;
}

// The floor is over (taken back, released, the session gone): the microphone is closed, its light
// goes off, and nothing more is sent.
function stopMic() {
  const track = micTrack;
  micTrack = null;
  if (track) track.stop();
  const sender = session && session.audioSender;
  if (sender && sender.track) sender.replaceTrack(null).catch(() => {});
}

// The question the teacher shows to the class: plain text, never the asker's name.
function showShown(text) {
  $("shown-text").textContent = text || "";
  $("shown").hidden = !text;
}

function stopStats() {
  clearInterval(statsTimer); statsTimer = null;
  $("quality").dataset.level = "";
}

$("floor-stop").addEventListener("click", () => {
  stopMic(); floorYou = false;
  $("floor-stop").hidden = true;
  send({ type: "floor_release" });  // the kit answers with the floor as it is now
});
$("unmute").addEventListener("click", () => {
  const audio = $("microphone");
  audio.muted = false; audio.play().catch(() => {}); $("unmute").hidden = true;
});
$("hand").addEventListener("click", () => {
  handRaised = !handRaised; renderHand();
  send({ type: "hand", raised: handRaised });
});
$("swap").addEventListener("click", () => {
  const stage = $("stage");
  stage.dataset.main = stage.dataset.main === "camera" ? "document" : "camera";
});
$("fullscreen").addEventListener("click", () => {
  const video = $("document");
  if (video.requestFullscreen) video.requestFullscreen().catch(() => {});
  else if (video.webkitEnterFullscreen) video.webkitEnterFullscreen();  // iOS Safari
});
$("name-form").addEventListener("submit", (event) => {
  event.preventDefault();
  pupilName = $("name").value.trim().slice(0, 40);
  sessionStorage.setItem(`name.${token}`, pupilName);  // this tab, this class only
  send({ type: "name", name: pupilName || null });
  $("name").blur();
});
$("question-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("question").value.trim().slice(0, 280);
  if (!text) return;
  send({ type: "question", text });
});
window.addEventListener("pagehide", () => { stopMic(); if (session) session.close(); });

translatePage();
join();
