// One Firefox pupil for the tests (tests/firefox.py drives it): Debian's firefox-esr, headless,
// over WebDriver BiDi with puppeteer-core (no browser download), on the kit's pupil page.
//
//   node pupil.mjs '{"url": "...", "interval": 0.25, "prefs": {...}}'
//
// Prints JSON lines on stdout: {"event": "ready"} once the page is open, then every `interval`
// seconds {"event": "stats", "stats": ...} (what STATS below reads in the page). On stdin,
// "leave" opens about:blank (the page says goodbye: WHEP DELETE) and prints {"event": "left"};
// "quit" or the end of stdin closes Firefox and exits. "eval {"id": 1, "script": "..."}" evaluates
// the script (an expression, awaited) in the page and prints {"event": "result", "id", "value"}
// (or "error"): how a test clicks and reads the page's own state.
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const options = JSON.parse(process.argv[2]);
const print = (message) => process.stdout.write(JSON.stringify(message) + "\n");

// The page's own `session` (agent/http/static/join.js) and its peer connection's statistics.
const STATS = async () => {
  if (typeof session === "undefined" || !session) {
    return { session: false, status: document.getElementById("status").textContent };
  }
  const pc = session.pc;
  const report = await pc.getStats();
  const byId = {};
  report.forEach((s) => { byId[s.id] = s; });
  const midOf = {};
  for (const t of pc.getTransceivers()) if (t.receiver.track) midOf[t.receiver.track.id] = t.mid;
  const out = {
    session: true, state: pc.connectionState, status: document.getElementById("status").textContent,
    quality: document.getElementById("quality").dataset.level || null, tracks: {}, pair: null,
    videos: {},
  };
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      const mid = s.mid ?? midOf[s.trackIdentifier] ?? s.id;
      out.tracks[mid] = {
        kind: s.kind, framesDecoded: s.framesDecoded ?? 0, framesPerSecond: s.framesPerSecond ?? null,
        frameWidth: s.frameWidth ?? null, frameHeight: s.frameHeight ?? null,
        packetsReceived: s.packetsReceived ?? 0, packetsLost: s.packetsLost ?? 0,
        bytesReceived: s.bytesReceived ?? 0, nackCount: s.nackCount ?? null,
        pliCount: s.pliCount ?? null, firCount: s.firCount ?? null,
        audioEnergy: s.totalAudioEnergy ?? null, jitter: s.jitter ?? null,
        codec: s.codecId && byId[s.codecId] ? byId[s.codecId].mimeType : null,
      };
    }
    if (s.type === "candidate-pair" && (s.selected || s.nominated) && s.state === "succeeded") {
      const local = byId[s.localCandidateId], remote = byId[s.remoteCandidateId];
      if (local && remote) {
        out.pair = { local: local.address, remote: remote.address, protocol: local.protocol };
      }
    }
  });
  for (const id of ["camera", "document"]) {
    const v = document.getElementById(id);
    out.videos[id] = { width: v.videoWidth, height: v.videoHeight, paused: v.paused };
  }
  out.audioPaused = document.getElementById("microphone").paused;
  return out;
};

const browser = await puppeteer.launch({
  browser: "firefox",
  protocol: "webDriverBiDi",
  executablePath: options.executable || "/usr/bin/firefox-esr",
  headless: true,
  extraPrefsFirefox: options.prefs || {},
  env: { ...process.env, MOZ_HEADLESS: "1" },
});
let closing = false;
const close = async (code) => {
  if (closing) return;
  closing = true;
  try { await browser.close(); } catch (err) { /* already gone */ }
  process.exit(code);
};
try {
  const page = await browser.newPage();
  if (options.address) {
    // Firefox gathers on every interface whatever its preferences say (force_interface is not
    // honoured by the socket process that gathers): keep the offer's candidates on `address`
    // only, as tests/chromium.py does for Chromium. A preload script (before the page's own)
    // wraps fetch for the WHEP offer (POST) alone; the page itself runs unchanged.
    await page.evaluateOnNewDocument((address) => {
      const original = window.fetch;
      window.fetch = function (resource, init) {
        if (init && init.method === "POST" && typeof init.body === "string"
            && String(resource).includes("/whep/")) {
          const kept = init.body.split("\r\n").filter(
            (line) => !line.startsWith("a=candidate:") || line.split(" ")[4] === address);
          init = { ...init, body: kept.join("\r\n") };
        }
        return original.call(this, resource, init);
      };
    }, options.address);
  }
  page.on("console", (message) => {
    if (options.console) print({ event: "console", text: message.text() });
  });
  await page.goto(options.url, { waitUntil: "load" });
  print({ event: "ready", userAgent: await page.evaluate(() => navigator.userAgent) });
  let left = false;
  const timer = setInterval(async () => {
    if (left) return;
    try {
      print({ event: "stats", stats: await page.evaluate(STATS) });
    } catch (err) {
      print({ event: "error", error: String(err) });
    }
  }, Math.max(50, (options.interval || 0.25) * 1000));
  const lines = createInterface({ input: process.stdin });
  lines.on("line", async (line) => {
    if (line.trim() === "leave") {
      left = true;
      await page.goto("about:blank");
      print({ event: "left" });
    } else if (line.startsWith("eval ")) {
      const { id, script } = JSON.parse(line.slice(5));
      try {
        print({ event: "result", id, value: await page.evaluate(script) });
      } catch (err) {
        print({ event: "result", id, error: String(err) });
      }
    } else if (line.trim() === "quit") {
      clearInterval(timer);
      await close(0);
    }
  });
  lines.on("close", async () => { clearInterval(timer); await close(0); });
} catch (err) {
  print({ event: "error", error: String(err && err.stack ? err.stack : err) });
  await close(1);
}
