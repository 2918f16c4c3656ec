// Minimal WHEP client (draft-ietf-wish-whep), no trickle: the offer carries every candidate.
// Asks for the room camera, the document camera and the audio, in that order, and (when asked)
// opens the "classroom" data channel in the same peer connection (docs/pupil-channel.md).
"use strict";

class WhepError extends Error {
  constructor(status, message, classState) {
    super(message); this.status = status; this.classState = classState;
  }
}

// Non-trickle: wait until the offer holds the candidates worth sending. With STUN/TURN servers,
// that is the end of gathering. Without, only host candidates can come: the UDP ones arrive
// within a few ms of each other, and waiting for the rest (TCP, ~100 ms later) gains nothing,
// as the agent speaks ICE over UDP only; so send QUIET_MS after the last UDP candidate.
const QUIET_MS = 40;

function gathered(pc, withServers, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, timeoutMs);
    let quiet = null;
    const done = () => { clearTimeout(timer); clearTimeout(quiet); resolve(); };
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
    pc.addEventListener("icecandidate", (event) => {
      if (withServers || !event.candidate || event.candidate.protocol !== "udp") return;
      clearTimeout(quiet);
      quiet = setTimeout(done, QUIET_MS);
    });
    // Candidates gathered before these listeners existed are in the description already.
    if (!withServers && / udp /i.test(pc.localDescription.sdp)) quiet = setTimeout(done, QUIET_MS);
  });
}

async function whepConnect(url, { iceServers = [], gatherTimeoutMs = 2000, dataChannel = false } = {}) {
  // max-bundle: one transport for everything (the agent bundles), so the browser gathers
  // candidates once instead of once per m-line.
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  const camera = pc.addTransceiver("video", { direction: "recvonly" });
  const documentCam = pc.addTransceiver("video", { direction: "recvonly" });
  const audio = pc.addTransceiver("audio", { direction: "recvonly" });
  const channel = dataChannel ? pc.createDataChannel("classroom") : null;
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, iceServers.length > 0, gatherTimeoutMs);
  let response;
  try {
    response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
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
