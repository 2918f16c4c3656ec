// The browser benchmark's page side (docs/benchmark.md, "The browser's view"). bench/browser.py
// injects this file into the pupil page with Playwright before the page's own scripts; the
// shipped page does not contain it. It defines `window.benchClock`:
//
// - readFrame(videoFrame) → Promise<code | null>: the clock code (docs/clock-code.md) of a
//   WebCodecs VideoFrame, by the rule of agent/sources/clockcode.py. Only the 768×24 strip is
//   copied out of the frame; on a YUV frame (what Chromium's decoder gives) the luma is read as
//   is, on an RGB frame it is computed back (BT.601, limited range);
// - readSource(canvasImageSource, width, height): the same through a 2D canvas (RGB), for
//   sources a VideoFrame cannot be made of;
// - delayMs(code, wallMs): wallMs − code modulo 2^32, read as signed (as clockcode.delay_ms);
// - watch(id): from then on, each frame the <video id=…> hands to the compositor is read in a
//   requestVideoFrameCallback and recorded with its instants on the wall clock;
// - marks: milestones of the join (navigation, WHEP POST, answer, ICE, first room-camera frame).
//
// Every instant is in Unix milliseconds on the machine's wall clock, the clock the agent stamps
// pictures with. The offer leaves the page with its 127.0.0.1 candidates only: the benchmark
// stays on loopback, like tests/chromium.py, without a round trip through Playwright on the
// join's path.
"use strict";
(() => {
  const BLOCK = 24, BITS = 32, WIDTH = BLOCK * BITS, TWO32 = 2 ** 32, ROOM_WIDTH = 1280;
  const WHITE = 235, BLACK = 16, THRESHOLD = (WHITE + BLACK) / 2;
  const YUV = new Set(["I420", "I420A", "I422", "I422A", "I444", "I444A", "NV12"]);
  const RGB = { RGBA: [0, 1, 2, 4], RGBX: [0, 1, 2, 4], BGRA: [2, 1, 0, 4], BGRX: [2, 1, 0, 4] };

  // Wall clock (Unix ms) of a performance.now()-based instant: both clocks are read together,
  // so a slewed or stepped wall clock is followed, as the agent's time.time() follows it.
  const toWall = (t) => t + (Date.now() - performance.now());

  // Limited-range (BT.601) luma of a pixel converted from limited-range YUV to full-range RGB
  // (Y 16 → 0, Y 235 → 255). The code's blocks are grey, so R = G = B anyway.
  const lumaOfRgb = (r, g, b) => 16 + ((0.299 * r + 0.587 * g + 0.114 * b) * 219) / 255;

  // The code from luma(x, y) over the strip, or null when a block is neither black nor white.
  // `block`: the blocks' size in this picture (a lower quality layer is scaled: 6 at 320 wide).
  function readCode(luma, block = BLOCK) {
    const low = Math.round(block / 4), high = Math.max(Math.round((block * 3) / 4), low + 1);
    let code = 0;
    for (let i = 0; i < BITS; i++) {
      let sum = 0;
      const left = Math.round(block * i);
      for (let y = low; y < high; y++) {
        for (let x = left + low; x < left + high; x++) sum += luma(x, y);
      }
      const mean = sum / ((high - low) * (high - low));
      if (mean > 80 && mean < 170) return null;  // scaled, cropped or not a test card
      code = code * 2 + (mean >= THRESHOLD ? 1 : 0);  // no bitwise ops: they are 32-bit signed
    }
    return code;
  }

  // An RGB(A) strip: `order` gives the offsets of R, G, B and the bytes per pixel.
  const readRgb = (data, offset, stride, order, block = BLOCK) => readCode((x, y) => {
    const p = offset + y * stride + x * order[3];
    return lumaOfRgb(data[p + order[0]], data[p + order[1]], data[p + order[2]]);
  }, block);

  async function readFrame(frame) {
    const visible = frame.visibleRect;
    if (!visible) return null;
    // a picture too narrow for the code is one of the room camera's lower layers, scaled
    // from its 1280-pixel-wide picture (docs/clock-code.md)
    const block = visible.width < WIDTH ? (BLOCK * visible.width) / ROOM_WIDTH : BLOCK;
    const width = 2 * Math.ceil((block * BITS) / 2), height = 2 * Math.ceil(block / 2);
    if (block < 4 || visible.width < width || visible.height < height) return null;
    const rect = { x: visible.x, y: visible.y, width, height };
    let order = null;
    if (!YUV.has(frame.format)) {
      order = RGB[frame.format];
      if (!order) return null;  // a format we do not know: no guess
    }
    const data = new Uint8Array(frame.allocationSize({ rect }));
    const [plane] = await frame.copyTo(data, { rect });
    if (order) return readRgb(data, plane.offset, plane.stride, order, block);
    return readCode((x, y) => data[plane.offset + y * plane.stride + x], block);
  }

  let canvas = null;
  function readSource(source, width, height) {
    if (width < WIDTH || height < BLOCK) return null;
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.width = WIDTH;
      canvas.height = BLOCK;
    }
    const ctx = canvas.getContext("2d", { willReadFrequently: true, alpha: false });
    ctx.drawImage(source, 0, 0, WIDTH, BLOCK, 0, 0, WIDTH, BLOCK);  // native size, no scaling
    return readRgb(ctx.getImageData(0, 0, WIDTH, BLOCK).data, 0, WIDTH * 4, RGB.RGBA);
  }

  function delayMs(code, wallMs) {
    const diff = (((wallMs - code) % TWO32) + TWO32) % TWO32;
    return diff < TWO32 / 2 ? diff : diff - TWO32;
  }

  // Per video: [presented, expectedDisplay, received, code, presentedFrames, rtpTimestamp].
  const tracks = {};
  const marks = { navigation: performance.timeOrigin };
  let resolveFirstFrame;
  const firstFrame = new Promise((resolve) => { resolveFirstFrame = resolve; });

  function watch(id) {
    const video = document.getElementById(id);
    const track = (tracks[id] = { frames: [], unreadable: 0, readMs: 0, width: 0, height: 0 });
    const record = (meta, code, started) => {
      track.readMs += performance.now() - started;
      if (code === null) track.unreadable += 1;
      track.width = meta.width;
      track.height = meta.height;
      track.frames.push([
        toWall(meta.presentationTime),
        toWall(meta.expectedDisplayTime),
        meta.receiveTime === undefined ? null : toWall(meta.receiveTime),
        code,
        meta.presentedFrames,
        meta.rtpTimestamp === undefined ? null : meta.rtpTimestamp,
      ]);
    };
    const onFrame = (now, meta) => {
      video.requestVideoFrameCallback(onFrame);
      if (id === "camera" && marks.firstFrame === undefined) {
        marks.firstFrame = toWall(meta.presentationTime);
        resolveFirstFrame(marks.firstFrame);
      }
      const started = performance.now();
      let frame = null;
      try {
        frame = new VideoFrame(video);  // the frame on screen now; the rtpTimestamp tells
      } catch (err) {                   // bench/browser.py whether it is the metadata's frame
        record(meta, readSource(video, meta.width, meta.height), started);
        return;
      }
      readFrame(frame).then(
        (code) => record(meta, code, started),
        () => record(meta, null, started),
      ).finally(() => frame.close());
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // Take the samples so far and start again (the warm-up ends, the window begins).
  function take() {
    const out = {};
    for (const [id, track] of Object.entries(tracks)) {
      out[id] = { ...track };
      Object.assign(track, { frames: [], unreadable: 0, readMs: 0 });
    }
    return out;
  }

  const originalFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    if (!init || init.method !== "POST" || !/\/whep\//.test(String(input))) {
      return originalFetch(input, init);
    }
    const kept = String(init.body).split("\r\n").filter(
      (line) => !line.startsWith("a=candidate:") || line.split(" ")[4] === "127.0.0.1");
    if (marks.post === undefined) marks.post = toWall(performance.now());
    const response = await originalFetch(input, { ...init, body: kept.join("\r\n") });
    if (marks.answer === undefined) marks.answer = toWall(performance.now());
    return response;
  };

  const OriginalPC = window.RTCPeerConnection;
  if (OriginalPC) {
    window.RTCPeerConnection = function RTCPeerConnection(...args) {
      const pc = new OriginalPC(...args);
      if (marks.created === undefined) marks.created = toWall(performance.now());
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete" && marks.gathered === undefined) {
          marks.gathered = toWall(performance.now());
        }
      });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "connected" && marks.connected === undefined) {
          marks.connected = toWall(performance.now());
        }
      });
      return pc;
    };
    window.RTCPeerConnection.prototype = OriginalPC.prototype;
  }

  window.benchClock = {
    readFrame, readSource, delayMs, watch, take, marks, tracks, firstFrame,
  };
  document.addEventListener("DOMContentLoaded", () => {
    marks.dom = toWall(performance.now());
    for (const id of ["camera", "document"]) if (document.getElementById(id)) watch(id);
  });
})();
