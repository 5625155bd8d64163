// A small stand-in for the parts of wx the streamer uses, in Node:
// request (fetch), connectSocket (the vendored ws), a RecorderManager that
// plays an MP3 file as a microphone at real-time pace, and the app's
// hide/show. It keeps the limits of the real one that the streamer must
// respect: 5 sockets, 10 requests at once, requests held while the app is
// in the background and failed after 5 s there, the recorder's settings
// and its duration limit.
import WebSocket from './vendor/ws/index.js';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { ENCODE_BITRATES, MAX_RECORDING } = require('../utils/settings.js');

const MAX_SOCKETS = 5;
const MAX_REQUESTS = 10;
const BACKGROUND_REQUEST_LIMIT = 5000;

// mp3Mic cuts an MP3 file into frameSize-byte chunks (cut anywhere, as the
// recorder's frames are) and says when each is recorded, in seconds from
// the start of the file (constant bitrate).
function mp3Mic(bytes, seconds) {
  let pos = 0;
  let back = null; // a chunk taken but not recorded when the recorder stopped
  return {
    next(size) {
      if (back) {
        const c = back;
        back = null;
        return c;
      }
      if (pos >= bytes.length) return null;
      const end = Math.min(bytes.length, pos + size);
      const chunk = bytes.subarray(pos, end);
      const from = (pos / bytes.length) * seconds;
      pos = end;
      return { data: chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.length), seconds: (end / bytes.length) * seconds - from };
    },
    unread(c) {
      back = c;
    },
  };
}

class RecorderManager {
  constructor(shim) {
    this.shim = shim;
    this.cb = {};
    this.timer = null;
    this.state = 'stopped'; // 'recording', 'paused'
    for (const ev of ['Start', 'Stop', 'Pause', 'Resume', 'FrameRecorded', 'Error', 'InterruptionBegin', 'InterruptionEnd']) {
      this[`on${ev}`] = (f) => { this.cb[ev] = f; }; // one listener each, as in wx
    }
  }

  emit(ev, arg) {
    setImmediate(() => this.cb[ev] && this.cb[ev](arg));
  }

  start(o) {
    const range = ENCODE_BITRATES[o.sampleRate];
    if (this.state !== 'stopped') return this.emit('Error', { errMsg: 'operateRecorder:fail recorder is recording' });
    if (!range || (o.format === 'mp3' && (o.encodeBitRate < range[0] || o.encodeBitRate > range[1]))) {
      return this.emit('Error', { errMsg: 'operateRecorder:fail encodeBitRate invalid' });
    }
    this.options = o;
    this.limit = Math.min(o.duration || 60000, MAX_RECORDING) / 1000;
    this.recorded = 0; // seconds in this start, against the duration limit
    this.state = 'recording';
    this.shim.recorderStarts++;
    this.emit('Start', {});
    this.schedule(performance.now());
  }

  // schedule emits the next chunk when its audio has been recorded.
  schedule(from) {
    const c = this.shim.mic.next(this.options.frameSize * 1024);
    if (!c) {
      this.shim.micEnded();
      return;
    }
    this.pending = { chunk: c, due: from + c.seconds * 1000 };
    this.timer = setTimeout(() => this.deliver(), Math.max(0, this.pending.due - performance.now()));
  }

  deliver() {
    const { chunk, due } = this.pending;
    this.pending = null;
    this.timer = null;
    this.recorded += chunk.seconds;
    const last = this.recorded >= this.limit - 1e-9;
    this.cb.FrameRecorded && this.cb.FrameRecorded({ frameBuffer: chunk.data, isLastFrame: last });
    if (last) return this.finish();
    this.schedule(due);
  }

  finish() {
    clearTimeout(this.timer);
    this.timer = null;
    this.state = 'stopped';
    this.emit('Stop', { duration: Math.round(this.recorded * 1000) });
  }

  stop() {
    if (this.state === 'stopped') return this.emit('Error', { errMsg: 'operateRecorder:fail recorder not start' });
    if (this.pending) this.shim.mic.unread(this.pending.chunk);
    this.pending = null;
    this.finish();
  }

  pause() {
    if (this.state !== 'recording') return;
    clearTimeout(this.timer);
    this.left = this.pending ? Math.max(0, this.pending.due - performance.now()) : 0;
    this.state = 'paused';
    this.emit('Pause', {});
  }

  resume() {
    if (this.state !== 'paused') return;
    this.state = 'recording';
    this.emit('Resume', {});
    if (this.pending) {
      this.pending.due = performance.now() + this.left;
      this.timer = setTimeout(() => this.deliver(), this.left);
    }
  }

  // interrupt is a phone call: the system pauses the recorder.
  interrupt() {
    this.cb.InterruptionBegin && this.cb.InterruptionBegin({});
    this.pause();
  }

  endInterruption() {
    this.cb.InterruptionEnd && this.cb.InterruptionEnd({});
  }
}

class SocketTask {
  constructor(shim, url) {
    this.shim = shim;
    this.cb = {};
    for (const ev of ['Open', 'Message', 'Close', 'Error']) this[`on${ev}`] = (f) => { this.cb[ev] = f; };
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'arraybuffer';
    this.ws.on('open', () => this.cb.Open && this.cb.Open({ header: {} }));
    this.ws.on('message', (data, binary) => this.cb.Message && this.cb.Message({ data: binary ? data : data.toString() }));
    this.ws.on('error', (e) => this.cb.Error && this.cb.Error({ errMsg: e.message }));
    this.ws.on('close', (code, reason) => {
      shim.sockets.delete(this);
      this.cb.Close && this.cb.Close({ code, reason: reason.toString() });
    });
  }

  send({ data, success, fail }) {
    if (this.ws.readyState !== WebSocket.OPEN) {
      setImmediate(() => fail && fail({ errMsg: 'sendSocketMessage:fail WebSocket is not connected' }));
      return;
    }
    this.shim.socketBytes += data.byteLength;
    this.ws.send(data, (err) => (err ? fail && fail({ errMsg: err.message }) : success && success({})));
  }

  close({ code, reason } = {}) {
    try {
      if (code) this.ws.close(code, reason);
      else this.ws.close();
    } catch (e) {
      this.ws.terminate();
    }
  }
}

// createWx returns a fresh wx for one test, with mp3 (a Buffer of bare MP3
// frames lasting seconds) as the microphone.
export function createWx({ mp3, seconds }) {
  const appHide = new Set();
  const appShow = new Set();
  const held = []; // requests made in the background, started on show
  const running = new Set();
  const waiting = []; // over MAX_REQUESTS
  let micEndedResolve;
  const shim = {
    mic: mp3Mic(mp3, seconds),
    micEnded: () => micEndedResolve(),
    micDone: new Promise((r) => (micEndedResolve = r)),
    sockets: new Set(),
    socketBytes: 0,
    recorderStarts: 0,
    requests: [], // { url, status }
    hidden: false,
  };
  const recorder = new RecorderManager(shim);

  function runRequest(o) {
    const ac = new AbortController();
    const entry = { ac, o, started: performance.now() };
    running.add(entry);
    if (shim.hidden) entry.interrupt = setTimeout(() => ac.abort('interrupted'), BACKGROUND_REQUEST_LIMIT);
    const timeout = setTimeout(() => ac.abort('timeout'), o.timeout || 60000);
    fetch(o.url, { method: o.method || 'GET', body: o.data, headers: o.header, signal: ac.signal })
      .then(async (res) => {
        const text = await res.text();
        let data = text;
        try {
          data = JSON.parse(text);
        } catch (e) {
          // not JSON: wx gives the string
        }
        shim.requests.push({ url: o.url, status: res.status });
        o.success && o.success({ statusCode: res.status, data, header: Object.fromEntries(res.headers) });
      })
      .catch(() => {
        const why = ac.signal.aborted ? ac.signal.reason : 'fail';
        o.fail && o.fail({ errMsg: `request:fail ${why}` });
      })
      .finally(() => {
        clearTimeout(timeout);
        clearTimeout(entry.interrupt);
        running.delete(entry);
        o.complete && o.complete({});
        if (waiting.length && running.size < MAX_REQUESTS) runRequest(waiting.shift());
      });
  }

  const wx = {
    getRecorderManager: () => recorder,
    request(o) {
      if (shim.hidden) held.push(o);
      else if (running.size >= MAX_REQUESTS) waiting.push(o);
      else runRequest(o);
    },
    connectSocket(o) {
      if (shim.sockets.size >= MAX_SOCKETS) {
        const t = { onOpen() {}, onMessage() {}, onClose() {}, onError() {}, send() {}, close() {} };
        setImmediate(() => o.fail && o.fail({ errMsg: 'connectSocket:fail exceed max task count' }));
        return t;
      }
      const t = new SocketTask(shim, o.url);
      shim.sockets.add(t);
      shim.socketsOpened = (shim.socketsOpened || 0) + 1;
      return t;
    },
    onAppHide: (f) => appHide.add(f),
    onAppShow: (f) => appShow.add(f),
    offAppHide: (f) => appHide.delete(f),
    offAppShow: (f) => appShow.delete(f),
  };

  // The test's hands on the phone.
  const phone = {
    hide() {
      shim.hidden = true;
      for (const e of running) e.interrupt = setTimeout(() => e.ac.abort('interrupted'), BACKGROUND_REQUEST_LIMIT);
      for (const f of appHide) f();
    },
    show() {
      shim.hidden = false;
      for (const e of running) clearTimeout(e.interrupt);
      for (const f of appShow) f({});
      for (const o of held.splice(0)) wx.request(o);
    },
    // dropSockets cuts every socket as a lost network does: no close frame.
    dropSockets() {
      for (const t of shim.sockets) t.ws.terminate();
    },
    recorder,
    shim,
  };
  return { wx, phone };
}
