// The pupil's page: join the class through WHEP, wait while it has not started, reconnect
// after a network blip. (Interim page; the full pupil page comes with the kiosk issue.)
"use strict";

const token = location.pathname.split("/").filter(Boolean).pop();
const whepUrl = new URL(`/whep/${token}`, location.href).toString();
const statusEl = document.getElementById("status");
const unmute = document.getElementById("unmute");
const fr = (navigator.language || "fr").toLowerCase().startsWith("fr");
const T = fr
  ? { connecting: "Connexion…", live: "En direct", waiting: "Le cours n'a pas encore commencé. La page se connectera toute seule.",
      ended: "Le cours est terminé ou le lien n'est plus valide.", retry: "Connexion perdue, nouvelle tentative…", sound: "Activer le son" }
  : { connecting: "Connecting…", live: "Live", waiting: "The class has not started yet. This page will join by itself.",
      ended: "The class has ended or this link is no longer valid.", retry: "Connection lost, retrying…", sound: "Turn sound on" };
unmute.textContent = T.sound;
let session = null;

function show(text) { statusEl.textContent = text; }

async function play(el) {
  try { await el.play(); } catch (err) { unmute.hidden = false; }
}

unmute.addEventListener("click", () => {
  const audio = document.getElementById("microphone");
  audio.muted = false; audio.play(); unmute.hidden = true;
});

async function join() {
  show(T.connecting);
  try {
    session = await whepConnect(whepUrl);
  } catch (err) {
    if (err.status === 404) { show(T.ended); return; }
    show(err.status === 409 ? T.waiting : T.retry);
    setTimeout(join, 2000);
    return;
  }
  for (const id of ["camera", "document", "microphone"]) {
    const el = document.getElementById(id);
    el.srcObject = session.streams[id];
    play(el);
  }
  session.pc.addEventListener("connectionstatechange", () => {
    const state = session.pc.connectionState;
    if (state === "connected") show(T.live);
    if (state === "failed" || state === "closed" || state === "disconnected") {
      const old = session; session = null; old.close();  // and DELETE: free our place at once
      show(T.retry); setTimeout(join, 1000);
    }
  });
}

window.addEventListener("pagehide", () => { if (session) session.close(); });
join();
