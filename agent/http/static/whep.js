// Minimal WHEP client (draft-ietf-wish-whep), no trickle: the offer carries every candidate.
// Asks for the room camera, the document camera and the audio, in that order, and (when asked)
// opens the "classroom" data channel in the same peer connection (docs/pupil-channel.md).
// talkback: the audio transceiver is sendrecv with no track, so the kit may answer sendrecv
// and the page can later send its microphone with replaceTrack, without renegotiating (WHEP has
// no renegotiation); with no track a browser sends no RTP (docs/talkback.md).
"use strict";

class WhepError extends Error {
  constructor(status, message, classState) {
    super(message); this.status = status; this.classState = classState;
  }
}

// Non-trickle: wait until the offer holds the candidates worth sending.
// Without STUN/TURN servers only host candidates can come: the UDP ones arrive within a few ms
// of each other, and waiting for the rest (TCP, ~100 ms later) gains nothing, as the agent speaks
// ICE over UDP only; so send QUIET_MS after the last UDP candidate.
// With servers, what a pupil at home needs is its relay candidate (TURN given) or its
// server-reflexive one (STUN only): send SERVER_GRACE_MS after the first of them (the others of
// a burst come within a few ms: several TURN URLs, IPv4 and IPv6), or when gathering completes.
// Measured in Chromium 14x (issue 12): a TURN relay candidate comes 60-80 ms after the offer on
// loopback (one 401 round trip plus the allocation), gathering itself never completes within 4 s
// (it waits for every STUN/TURN transaction), and an unreachable server (packets dropped) never
// answers; so an unreachable server costs at most the cap, gatherTimeoutMs, never its own timeout.
const QUIET_MS = 40;
const SERVER_GRACE_MS = 100;

function serverUrls(iceServers) {
  return iceServers.flatMap((s) => (Array.isArray(s.urls) ? s.urls : [s.urls]));
}

function gathered(pc, iceServers, timeoutMs) {
  const withServers = iceServers.length > 0;
  const wanted = serverUrls(iceServers).some((u) => /^turns?:/i.test(u)) ? "relay" : "srflx";
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    let quiet = null, grace = null;
    const done = () => { clearTimeout(timer); clearTimeout(quiet); clearTimeout(grace); resolve(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
    pc.addEventListener("icecandidate", (event) => {
      const candidate = event.candidate;
      if (!candidate) return;
      if (withServers) {
        if ((candidate.type === wanted || candidate.type === "relay") && grace === null) {
          grace = setTimeout(done, SERVER_GRACE_MS);
        }
        return;
      }
      if (candidate.protocol !== "udp") return;
      clearTimeout(quiet);
      quiet = setTimeout(done, QUIET_MS);
    });
    // Candidates gathered before these listeners existed are in the description already.
    if (!withServers && / udp /i.test(pc.localDescription.sdp)) quiet = setTimeout(done, QUIET_MS);
  });
}

// -- ICE servers from the WHEP endpoint's Link headers (RFC 9725 section 4.6, RFC 8288) ---------

// Every link of a Link header value (several headers arrive joined by ", "): [{uri, params}].
// Parameters are lower-cased, quoted strings unescaped, the first occurrence of each kept (RFC
// 8288 section 3); a comma inside quotes or inside <…> does not split links; malformed parts are
// skipped up to the next link.
function parseLinkHeader(text) {
  const links = [];
  const n = text.length;
  let i = 0;
  const spaces = () => { while (i < n && (text[i] === " " || text[i] === "\t")) i++; };
  const quoted = () => {
    let value = "";
    i++;  // the opening quote
    while (i < n && text[i] !== '"') {
      if (text[i] === "\\" && i + 1 < n) i++;
      value += text[i++];
    }
    i++;  // the closing quote
    return value;
  };
  const toNextLink = () => {
    while (i < n && text[i] !== ",") { if (text[i] === '"') quoted(); else i++; }
  };
  while (i < n) {
    spaces();
    if (text[i] === ",") { i++; continue; }
    if (text[i] !== "<") { toNextLink(); continue; }
    const end = text.indexOf(">", i);
    if (end < 0) break;
    const uri = text.slice(i + 1, end).trim();
    i = end + 1;
    const params = {};
    for (;;) {
      spaces();
      if (i >= n || text[i] === ",") break;
      if (text[i] !== ";") { toNextLink(); break; }
      i++;
      spaces();
      let name = "";
      while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(text[i])) name += text[i++];
      name = name.toLowerCase();
      spaces();
      let value = "";
      if (text[i] === "=") {
        i++;
        spaces();
        if (text[i] === '"') value = quoted();
        else while (i < n && !/[,;\s]/.test(text[i])) value += text[i++];
      }
      if (name && !Object.prototype.hasOwnProperty.call(params, name)) params[name] = value;
    }
    links.push({ uri, params });
  }
  return links;
}

// RTCIceServer entries out of a Link header value: the links whose rel includes "ice-server"
// and whose URI is stun:, stuns:, turn: or turns:.
function iceServersFromLinks(text) {
  const servers = [];
  for (const link of parseLinkHeader(text || "")) {
    const rels = (link.params.rel || "").toLowerCase().split(/\s+/);
    if (!rels.includes("ice-server") || !/^(stuns?|turns?):/i.test(link.uri)) continue;
    const server = { urls: link.uri };
    if ("username" in link.params) server.username = link.params.username;
    if ("credential" in link.params) server.credential = link.params.credential;
    servers.push(server);
  }
  return servers;
}

// Ask the WHEP endpoint for its ICE servers before the offer (OPTIONS, as the WHEP draft allows:
// the POST's answer comes too late for a non-trickle client). None on any error.
async function whepIceServers(url, timeoutMs = 3000) {
  try {
    const response = await fetch(url, {
      method: "OPTIONS", cache: "no-store", signal: AbortSignal.timeout(timeoutMs),
    });
    return iceServersFromLinks(response.headers.get("Link"));
  } catch (err) {
    return [];
  }
}

function newPeerConnection(iceServers) {
  // max-bundle: one transport for everything (the agent bundles), so the browser gathers
  // candidates once instead of once per m-line.
  try {
    return { pc: new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" }), iceServers };
  } catch (err) {  // a server the browser refuses (a bad URL, TURN without credentials)
    return { pc: new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" }), iceServers: [] };
  }
}

// iceServers: null (the default) asks the endpoint first (whepIceServers).
// headers: extra request headers for the offer (the pupil page's X-Pupil-Key).
async function whepConnect(url, { iceServers = null, gatherTimeoutMs = 1000, dataChannel = false, headers = {}, talkback = false } = {}) {
  const made = newPeerConnection(iceServers === null ? await whepIceServers(url) : iceServers);
  const pc = made.pc;
  const camera = pc.addTransceiver("video", { direction: "recvonly" });
  const documentCam = pc.addTransceiver("video", { direction: "recvonly" });
  const audio = pc.addTransceiver("audio", { direction: talkback ? "sendrecv" : "recvonly" });
  const channel = dataChannel ? pc.createDataChannel("classroom") : null;
  // The channel can open, and the kit's first message arrive, before setRemoteDescription's
  // promise below resolves (a browser delivers them as tasks of other sources: seen with
  // Chromium on a loaded machine, where the page then missed the kit's welcome and never said
  // its name). Messages are kept here until the caller takes them (takeEarlyMessages).
  const early = [];
  const keep = (event) => { if (early.length < 64) early.push(event); };
  if (channel) channel.addEventListener("message", keep);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, made.iceServers, gatherTimeoutMs);
  let response;
  try {
    response = await fetch(url, {
      method: "POST", headers: { ...headers, "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
    });
  } catch (err) {
    pc.close();
    throw new WhepError(0, "network", null);
  }
  if (response.status !== 201) {
    pc.close();
    const text = (await response.text()).trim();
    throw new WhepError(response.status, text, response.headers.get("X-Class-State"));
  }
  const resource = new URL(response.headers.get("Location"), url).toString();
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  } catch (err) {
    pc.close();
    fetch(resource, { method: "DELETE", keepalive: true }).catch(() => {});
    throw new WhepError(0, "bad answer", null);
  }
  return {
    pc, resource, channel,
    // The channel's messages so far, once: the caller attaches its own listener in the same
    // task, so none is lost or seen twice (a caller that never takes them leaves at most 64 here).
    takeEarlyMessages() {
      if (channel) channel.removeEventListener("message", keep);
      return early.splice(0);
    },
    // The sender the microphone goes on, when the kit's answer lets this page send sound.
    audioSender: ["sendrecv", "sendonly"].includes(audio.currentDirection) ? audio.sender : null,
    streams: {
      camera: new MediaStream([camera.receiver.track]),
      document: new MediaStream([documentCam.receiver.track]),
      microphone: new MediaStream([audio.receiver.track]),
    },
    async close() {
      pc.close();
      // keepalive: this runs on pagehide, and an unloading page cancels its ordinary fetches.
      try { await fetch(resource, { method: "DELETE", keepalive: true }); } catch (err) { /* already gone */ }
    },
  };
}
