// The in-page recorder: microphone → MP3 (lamejs, in the page), WebM/Opus
// (MediaRecorder) or PCM (the worklet's samples as they are) → WebSocket
// binary messages to /ws. A dropped connection
// is retried with backoff; audio recorded meanwhile is queued and sent on
// reconnection, so the server's session (kept for its idle timeout)
// continues the same stream.
import { toInt16, toS16LE, level, backoff, describe, closeReason } from './lib.js';
import { publishWHIP } from './whip.js';

const $ = (id) => document.getElementById(id);
const QUEUE_LIMIT = 2 << 20; // bytes kept while disconnected (minutes of audio)

let rec = null; // the running recording, or null

function show(text, error) {
  if (error) {
    $('error').textContent = text;
    $('error').hidden = false;
  } else {
    $('status').textContent = text;
  }
}

function fmtBytes(n) {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1024 / 1024).toFixed(2)} MB`;
}

function tick() {
  if (!rec) return;
  const s = Math.floor((performance.now() - rec.started) / 1000);
  $('elapsed').textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  $('sent').textContent = fmtBytes(rec.sent);
}

function wsURL(id, key, format, rate) {
  const u = new URL('../ws', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  u.searchParams.set('id', id);
  u.searchParams.set('key', key);
  if (format === 'webm') u.searchParams.set('format', 'webm');
  if (format === 'pcm') {
    u.searchParams.set('format', 'pcm');
    u.searchParams.set('rate', String(rate)); // the AudioContext's, usually 48000 or 44100
    u.searchParams.set('channels', '1');
  }
  return u.toString();
}

function send(data) {
  if (!rec) return;
  if (rec.ws && rec.ws.readyState === WebSocket.OPEN && rec.queue.length === 0) {
    rec.ws.send(data);
    rec.sent += data.byteLength ?? data.size;
    return;
  }
  rec.queue.push(data);
  rec.queued += data.byteLength ?? data.size;
  if (rec.queued > QUEUE_LIMIT) {
    stop(`The connection has been lost for too long; stopped.`);
  }
}

function flushQueue() {
  while (rec && rec.queue.length && rec.ws.readyState === WebSocket.OPEN) {
    const d = rec.queue.shift();
    rec.queued -= d.byteLength ?? d.size;
    rec.ws.send(d);
    rec.sent += d.byteLength ?? d.size;
  }
}

function connect() {
  const r = rec;
  const ws = new WebSocket(r.url);
  ws.binaryType = 'arraybuffer';
  r.ws = ws;
  ws.onopen = () => {
    r.attempt = 0;
    r.connects = (r.connects || 0) + 1;
    document.body.dataset.connects = String(r.connects);
    flushQueue();
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    const d = describe(msg);
    if (d.text && !r.stopping) show(d.text, d.error); // a status sent before our close must not undo "Stopped."
    if (msg.type === 'status' && msg.seconds) $('delivered').textContent = `${Number(msg.seconds).toFixed(1)} s`;
  };
  ws.onclose = (ev) => {
    if (rec !== r || r.stopping) return;
    const why = closeReason(ev.code, ev.reason);
    if (!why.retry) {
      stop(why.text, true);
      return;
    }
    const wait = backoff(r.attempt++);
    show(`${why.text} (in ${(wait / 1000).toFixed(1)} s)`);
    r.retry = setTimeout(() => { if (rec === r) connect(); }, wait);
  };
}

async function start() {
  $('error').hidden = true;
  const id = $('id').value.trim();
  const key = $('key').value;
  const format = $('format').value;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    show('The live ID must be 1 to 64 letters, digits, “-” or “_”.', true);
    return;
  }
  $('start').disabled = true;
  show('Asking for the microphone…');
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
  } catch (e) {
    show(`No microphone: ${e.message}. Allow the page to use it (and use https:// except on localhost).`, true);
    $('start').disabled = false;
    return;
  }
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule('capture-worklet.js');
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, 'capture');
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination);
  rec = { stream, ctx, node, started: performance.now(), sent: 0, queue: [], queued: 0, attempt: 0, samples: 0,
    url: wsURL(id, key, format, ctx.sampleRate), format };
  node.port.onmessage = (ev) => {
    if (!rec) return;
    $('level').style.width = `${Math.round(level(ev.data) * 100)}%`;
    // WebRTC sends nothing before it connects (no queue, unlike the WebSocket).
    if (rec.format === 'whip' && !rec.live) return;
    rec.samples += ev.data.length;
    // Seconds captured, for people and for the browser tests.
    document.body.dataset.captured = (rec.samples / ctx.sampleRate).toFixed(3);
    if (rec.format === 'pcm') {
      send(toS16LE(ev.data)); // 100 ms blocks: no encoder in the page
    } else if (rec.encoder) {
      const mp3 = rec.encoder.encodeBuffer(toInt16(ev.data));
      if (mp3.length) send(mp3);
    }
  };
  if (format === 'webm') {
    rec.recorder = new MediaRecorder(stream, { mimeType: 'audio/webm;codecs=opus', audioBitsPerSecond: 64000 });
    rec.recorder.ondataavailable = (ev) => { if (ev.data.size) ev.data.arrayBuffer().then(send); };
    rec.recorder.start(100);
  } else if (format === 'mp3') {
    rec.encoder = new lamejs.Mp3Encoder(1, ctx.sampleRate, 64);
  }
  rec.timer = setInterval(tick, 250);
  if (format === 'whip') {
    startWHIP(id, key);
  } else {
    connect();
  }
  $('stop').disabled = false;
  show('Connecting…');
}

// startWHIP publishes over WebRTC instead of the WebSocket: the browser
// encodes Opus itself, and WebRTC takes care of loss and congestion.
async function startWHIP(id, key) {
  const r = rec;
  const endpoint = new URL(`../whip/${encodeURIComponent(id)}`, location.href).toString();
  const states = {
    connected: 'Live: sending Opus over WebRTC (WHIP).',
    disconnected: 'The WebRTC connection is interrupted; waiting for it to come back…',
    failed: 'The WebRTC connection failed.',
  };
  try {
    r.whip = await publishWHIP(endpoint, key, r.stream, (state) => {
      if (rec !== r || r.stopping || !states[state]) return;
      if (state === 'connected') r.live = true;
      if (state === 'failed') stop(states[state], true);
      else show(states[state]);
    });
    if (r.stopping) r.whip.stop();
  } catch (e) {
    if (rec === r) stop(e.message, true);
  }
}

function stop(message, isError) {
  const r = rec;
  if (!r) return;
  r.stopping = true;
  if (r.whip) r.whip.stop();
  clearTimeout(r.retry);
  clearInterval(r.timer);
  if (r.encoder) {
    const last = r.encoder.flush();
    if (last.length && r.ws && r.ws.readyState === WebSocket.OPEN) r.ws.send(last);
  }
  if (r.recorder && r.recorder.state !== 'inactive') r.recorder.stop();
  r.stream.getTracks().forEach((t) => t.stop());
  r.ctx.close();
  // Close with 1000 once queued data is out: the server ends the stream now.
  const closeWhenSent = () => {
    if (r.ws && r.ws.readyState === WebSocket.OPEN && r.ws.bufferedAmount > 0) {
      setTimeout(closeWhenSent, 50);
      return;
    }
    if (r.ws) r.ws.close(1000, 'stopped');
  };
  setTimeout(closeWhenSent, 150); // MediaRecorder's last chunk
  rec = null;
  $('level').style.width = '0%';
  $('start').disabled = false;
  $('stop').disabled = true;
  show(message || 'Stopped.', isError);
}

// Listening back: play the stream's HLS output (nginx-rtmp's "hls on"),
// so a person hears the round trip and sees how far behind live it is.
let hls = null;
function hlsDefault() {
  return `${location.protocol}//${location.hostname}:8088/hls/${$('id').value.trim()}.m3u8`;
}
function play() {
  const url = $('hls').value.trim() || hlsDefault();
  $('hls').value = url;
  if (hls) hls.destroy();
  const audio = $('player');
  if (!window.Hls || !Hls.isSupported()) {
    audio.src = url; // Safari plays HLS itself
    audio.play();
    return;
  }
  hls = new Hls({ liveSyncDurationCount: 2, lowLatencyMode: true });
  hls.loadSource(url);
  hls.attachMedia(audio);
  hls.on(Hls.Events.MANIFEST_PARSED, () => audio.play());
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (data.fatal) $('lag').textContent = `Cannot play ${url}: ${data.details}. Is the stream live, and does the RTMP server make HLS?`;
  });
  setInterval(() => {
    if (hls && hls.latency) $('lag').textContent = `You hear the stream about ${hls.latency.toFixed(1)} s behind its live edge.`;
  }, 1000);
}
$('play').addEventListener('click', play);

const params = new URLSearchParams(location.search);
for (const f of ['id', 'key', 'format']) if (params.get(f)) $(f).value = params.get(f);
const hlsParam = params.get('hls');
$('hls').value = hlsParam && hlsParam !== '1' ? hlsParam : hlsDefault();
$('id').addEventListener('change', () => { if (!hlsParam || hlsParam === '1') $('hls').value = hlsDefault(); });
$('start').addEventListener('click', start);
$('stop').addEventListener('click', () => stop());
