// Unit tests of the sample's streaming module with a scripted wx and a
// manual clock: node --test examples/wechat-miniprogram/node/
// (live.e2e.mjs runs it against the real server, from the Go tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { createStreamer } = require('../utils/streamer.js');
const { toBase64 } = require('../utils/senders.js');
const { meter, mp3Info } = require('../utils/audio.js');
const { checkSettings, closeReason, postOutcome, backoff } = require('../utils/settings.js');
const { FrameQueue } = require('../utils/queue.js');
const { describe } = require('../utils/describe.js');

// frames is n MPEG-2 layer III frames, 48 kbps 16 kHz mono: 216 bytes and
// 36 ms each; gain sets their global_gain (0: silent granules).
function frames(n, gain = 130) {
  const out = new Uint8Array(216 * n);
  for (let i = 0; i < n; i++) {
    const f = out.subarray(216 * i);
    f.set([0xff, 0xf3, 0x68, 0xc4]);
    if (gain) {
      // side info: main_data_begin 8, private 1, part2_3_length 12, big_values 9, global_gain 8
      const bits = '00000000' + '0' + '000001000000' + '000010000' + gain.toString(2).padStart(8, '0');
      for (let k = 0; k < bits.length; k++) if (bits[k] === '1') f[4 + (k >> 3)] |= 0x80 >> (k & 7);
    }
  }
  return out.buffer;
}

function manualClock() {
  let now = 0;
  let timers = [];
  return {
    now: () => now,
    setTimeout(f, ms) {
      const t = { at: now + ms, f };
      timers.push(t);
      return t;
    },
    clearTimeout(t) {
      timers = timers.filter((x) => x !== t);
    },
    advance(ms) {
      const until = now + ms;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const t = timers[0];
        if (!t || t.at > until) break;
        timers.shift();
        now = t.at;
        t.f();
      }
      now = until;
    },
  };
}

// fakeWx records what the streamer asks of wx; the test answers.
function fakeWx() {
  const rec = { cb: {}, starts: [], stops: 0, resumes: 0 };
  for (const ev of ['Start', 'Stop', 'Pause', 'Resume', 'FrameRecorded', 'Error', 'InterruptionBegin', 'InterruptionEnd']) {
    rec[`on${ev}`] = (f) => (rec.cb[ev] = f);
  }
  rec.start = (o) => rec.starts.push(o);
  rec.stop = () => rec.stops++;
  rec.resume = () => rec.resumes++;
  const requests = [];
  const sockets = [];
  const app = { hide: [], show: [] };
  const wx = {
    getRecorderManager: () => rec,
    request: (o) => requests.push(o),
    connectSocket(o) {
      const t = { o, cb: {}, sent: [], closed: null };
      for (const ev of ['Open', 'Message', 'Close', 'Error']) t[`on${ev}`] = (f) => (t.cb[ev] = f);
      t.send = (m) => {
        t.sent.push(m.data);
        m.success && m.success();
      };
      t.close = (c) => (t.closed = c);
      sockets.push(t);
      return t;
    },
    onAppHide: (f) => app.hide.push(f),
    onAppShow: (f) => app.show.push(f),
  };
  return { wx, rec, requests, sockets, app };
}

function start(transport, extra = {}) {
  const f = fakeWx();
  const clock = manualClock();
  const events = [];
  const s = createStreamer(f.wx, {
    server: 'https://p.example', id: 'room1', key: 'k', transport, clock, random: () => 1, rec: 'R', ...extra,
    onEvent: (e) => events.push(e),
  });
  s.start();
  f.rec.cb.Start();
  return { s, clock, events, ...f };
}

const tick = () => new Promise((r) => setImmediate(r));

test('toBase64 is base64', () => {
  for (let n = 0; n < 12; n++) {
    const b = Uint8Array.from({ length: n }, (_, i) => (i * 97 + 13) & 255);
    assert.equal(toBase64(b.buffer), Buffer.from(b).toString('base64'));
  }
});

test('the meter counts a frame cut between chunks once', () => {
  const all = new Uint8Array(frames(10));
  const m = meter(mp3Info);
  let seconds = 0;
  for (const [a, b] of [[0, 100], [100, 333], [333, 334], [334, 1000], [1000, 2160]]) seconds += m(all.slice(a, b).buffer).seconds;
  assert.ok(Math.abs(seconds - 0.36) < 1e-9, `${seconds}`);
});

test('the level follows the quantizer gain', () => {
  assert.equal(mp3Info(frames(3, 0)).level, 0);
  const quiet = mp3Info(frames(3, 100)).level;
  const loud = mp3Info(frames(3, 140)).level;
  assert.ok(quiet < 0.1 && loud > 0.9, `${quiet} ${loud}`);
});

test('settings: the recorder pairs', () => {
  assert.equal(checkSettings({ format: 'mp3', sampleRate: 16000, numberOfChannels: 1, encodeBitRate: 48000, frameSize: 2 }), '');
  assert.match(checkSettings({ format: 'mp3', sampleRate: 44100, numberOfChannels: 1, encodeBitRate: 48000, frameSize: 2 }), /64000–320000/);
  assert.match(checkSettings({ format: 'mp3', sampleRate: 16000, numberOfChannels: 1, encodeBitRate: 48000 }), /frameSize/);
  assert.match(checkSettings({ format: 'mp3', sampleRate: 15000, numberOfChannels: 1, encodeBitRate: 48000, frameSize: 2 }), /sampleRate/);
  assert.throws(() => createStreamer(fakeWx().wx, { sampleRate: 8000, encodeBitRate: 96000 }), /encodeBitRate/);
});

test('replies and close codes: what is retried', () => {
  assert.equal(postOutcome(200, { errcode: 200 }), 'ok');
  assert.equal(postOutcome(409, { errmsg: 'this chunk arrived after the stream went on without it (seq 7, expected 12)' }), 'skip');
  assert.equal(postOutcome(409, { errmsg: 'this live id already has a publisher connected (websocket from x)' }), 'retry');
  for (const s of [0, 408, 429, 499, 502, 503]) assert.equal(postOutcome(s, {}), 'retry', `${s}`);
  for (const s of [400, 403, 404, 413, 415]) assert.equal(postOutcome(s, {}), 'fail', `${s}`);
  assert.equal(closeReason(1008, 'wrong or missing key').retry, false);
  assert.equal(closeReason(1008, 'this live id already has a publisher connected').retry, true);
  assert.equal(closeReason(1008, 'replaced by a new connection for this live id (websocket from x)').retry, false);
  assert.equal(closeReason(1006, '').retry, true);
  assert.equal(closeReason(1003, '').retry, false);
  assert.equal(backoff(0, () => 1), 500);
  assert.equal(backoff(10, () => 1), 8000);
});

test('the queue is bounded and keeps order on requeue', () => {
  const q = new FrameQueue(1000);
  for (let i = 0; i < 5; i++) q.push(new ArrayBuffer(300), 0.1);
  assert.equal(q.length, 3);
  assert.ok(Math.abs(q.dropped - 0.2) < 1e-9);
  const a = q.shift();
  const b = q.shift();
  q.requeue(b);
  q.requeue(a);
  assert.deepEqual(q.items.map((f) => f.n), [2, 3, 4]);
});

test('POST: seq, a retry with the same bytes, end at stop', async () => {
  const { s, rec, requests, clock, events } = start('post');
  rec.cb.FrameRecorded({ frameBuffer: frames(5) });
  rec.cb.FrameRecorded({ frameBuffer: frames(5) }); // queued behind the first POST
  assert.equal(requests.length, 1);
  assert.match(requests[0].url, /^https:\/\/p\.example\/base64\?key=k&id=room1&seq=0&rec=R$/);
  requests[0].success({ statusCode: 503, data: { errcode: 503, errmsg: 'buffer is full' }, header: { 'Retry-After': '1' } });
  assert.equal(s.state(), 'reconnecting');
  clock.advance(999);
  assert.equal(requests.length, 1);
  clock.advance(1);
  assert.equal(requests[1].url, requests[0].url);
  assert.equal(requests[1].data, requests[0].data);
  requests[1].success({ statusCode: 200, data: { errcode: 0, seq: 0 } });
  assert.equal(s.state(), 'live');
  assert.match(requests[2].url, /&seq=1&rec=R$/);
  assert.equal(requests[2].data, toBase64(frames(5)));
  requests[2].success({ statusCode: 200, data: { errcode: 0, seq: 1 } });
  const stopped = s.stop();
  rec.cb.Stop();
  // Everything was sent: the last chunk again, with end=1.
  assert.match(requests[3].url, /&seq=1&rec=R&end=1$/);
  assert.equal(requests[3].data, requests[2].data);
  requests[3].success({ statusCode: 200, data: { errcode: 0, seq: 1, duplicate: true } });
  const r = await stopped;
  assert.equal(r.state, 'stopped');
  assert.ok(Math.abs(r.stats.sentSeconds - 0.36) < 1e-9);
  assert.equal(r.stats.duplicates, 1);
  assert.ok(events.some((e) => e.type === 'retry' && e.delay === 1000));
});

test('POST: the last queued chunk carries end=1; a refusal is final', async () => {
  const { s, rec, requests } = start('post');
  rec.cb.FrameRecorded({ frameBuffer: frames(2) });
  rec.cb.FrameRecorded({ frameBuffer: frames(2) });
  s.stop();
  rec.cb.Stop();
  requests[0].success({ statusCode: 200, data: { errcode: 0 } });
  assert.match(requests[1].url, /&seq=1&rec=R&end=1$/);
  requests[1].success({ statusCode: 200, data: { errcode: 0 } });
  assert.equal((await s.ended).state, 'stopped');

  const b = start('post');
  b.rec.cb.FrameRecorded({ frameBuffer: frames(2) });
  b.requests[0].success({ statusCode: 403, data: { errcode: 403, errmsg: 'wrong or missing key' } });
  const r = await b.s.ended;
  assert.deepEqual([r.state, r.text], ['failed', 'wrong or missing key']);
  assert.equal(b.rec.stops, 1);
});

test('POST: nothing starts in the background; the show sends the queue', () => {
  const { rec, requests, app, events } = start('post');
  rec.cb.FrameRecorded({ frameBuffer: frames(2) });
  requests[0].fail({ errMsg: 'request:fail interrupted' });
  app.hide[0]();
  rec.cb.Pause();
  rec.cb.FrameRecorded({ frameBuffer: frames(2) });
  assert.equal(requests.length, 1);
  app.show[0]();
  assert.equal(rec.resumes, 1);
  assert.equal(requests.length, 2);
  assert.ok(requests[1].url === requests[0].url && requests[1].data === requests[0].data, 'a retry is the same POST');
  requests[1].success({ statusCode: 200, data: { errcode: 0 } });
  assert.match(requests[2].url, /&seq=1&/);
  assert.ok(requests[2].data === toBase64(frames(2)), 'then the frames queued in the background');
  assert.ok(events.some((e) => e.type === 'app' && e.what === 'hide'));
});

test('the recorder restarts at its limit and after an interruption', () => {
  const { rec, events } = start('post');
  rec.cb.Stop(); // the 10-minute limit
  assert.equal(rec.starts.length, 2);
  assert.equal(rec.starts[1].duration, 600000);
  rec.cb.Start();
  rec.cb.InterruptionBegin();
  rec.cb.Pause();
  rec.cb.InterruptionEnd();
  assert.equal(rec.resumes, 1);
  assert.ok(events.some((e) => e.type === 'recorder' && e.what === 'restart'));
});

test('WebSocket: frames while offline wait; a drop reconnects; 1000 at stop', async () => {
  const { s, rec, sockets, clock, events } = start('ws');
  assert.match(sockets[0].o.url, /^wss:\/\/p\.example\/ws\?key=k&id=room1$/);
  rec.cb.FrameRecorded({ frameBuffer: frames(1) });
  sockets[0].cb.Open();
  sockets[0].cb.Message({ data: '{"type":"ready","id":"room1"}' });
  assert.equal(s.state(), 'live');
  assert.equal(sockets[0].sent.length, 1);
  sockets[0].cb.Close({ code: 1006, reason: '' });
  rec.cb.FrameRecorded({ frameBuffer: frames(1) });
  rec.cb.FrameRecorded({ frameBuffer: frames(1) });
  clock.advance(500);
  assert.equal(sockets.length, 2);
  sockets[1].cb.Open();
  assert.equal(sockets[1].sent.length, 2);
  s.stop();
  rec.cb.Stop();
  assert.deepEqual(sockets[1].closed, { code: 1000, reason: 'stop' });
  sockets[1].cb.Close({ code: 1000, reason: '' });
  const r = await s.ended;
  assert.equal(r.state, 'stopped');
  assert.equal(r.stats.reconnects, 1);
  assert.ok(events.some((e) => e.type === 'server' && e.msg.type === 'ready'));
  assert.equal(describe({ type: 'server', msg: { type: 'status', ffmpeg: 'publishing', seconds: 3.21 } }).text, '推流中：已送达 3.2 秒');
});

test('WebSocket: a refusal is final', async () => {
  const { s, sockets } = start('ws');
  sockets[0].cb.Open();
  sockets[0].cb.Close({ code: 1008, reason: 'wrong or missing key' });
  const r = await s.ended;
  assert.deepEqual([r.state, r.text], ['failed', 'wrong or missing key']);
  await tick();
  assert.equal(sockets.length, 1);
});
