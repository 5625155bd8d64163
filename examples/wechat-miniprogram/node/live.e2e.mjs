// The sample's streaming module against a real server, through the wx
// shim. Run by the Go test TestWeChatMiniProgram, which starts the server
// and nginx-rtmp, makes the MP3 and checks what the RTMP server recorded:
//
//   PUBLISHER_URL=http://127.0.0.1:8081 PUBLISHER_KEY=testkey WECHAT_MP3=in.mp3 \
//   WECHAT_MP3_SECONDS=10.008 WECHAT_ID=wx1 node --test --test-name-pattern '^websocket$' live.e2e.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createWx } from './wxshim.mjs';

const require = createRequire(import.meta.url);
const { createStreamer } = require('../utils/streamer.js');

const env = process.env;
const configured = !!env.PUBLISHER_URL;

// session starts a streamer over transport on a fresh shim; until(pred)
// resolves at the first event (past or future) that satisfies pred.
function session(transport, extra = {}) {
  // The microphone: the MP3 file, or with format 'pcm' the PCM one (both
  // constant bitrate, cut anywhere as the recorder's frames are).
  const pcm = extra.format === 'pcm';
  const mp3 = readFileSync(pcm ? env.WECHAT_PCM : env.WECHAT_MP3);
  const seconds = Number(pcm ? env.WECHAT_PCM_SECONDS : env.WECHAT_MP3_SECONDS);
  const { wx, phone } = createWx({ mp3, seconds });
  const events = [];
  const waiters = [];
  const s = createStreamer(wx, {
    server: env.PUBLISHER_URL, id: env.WECHAT_ID, key: env.PUBLISHER_KEY, transport,
    ...extra,
    onEvent: (e) => {
      events.push(e);
      for (const w of waiters.slice()) {
        if (w.pred(e, s)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    },
  });
  const until = (pred) => {
    const past = events.find((e) => pred(e, s));
    return past ? Promise.resolve(past) : new Promise((resolve) => waiters.push({ pred, resolve }));
  };
  return { s, phone, events, until, seconds };
}

// streamAll streams the whole file, stops, and checks what the client
// side says: everything recorded was sent, nothing is left queued.
async function streamAll({ s, phone, events, seconds }, during) {
  s.start();
  if (during) await during();
  await phone.shim.micDone;
  const r = await s.stop();
  const st = r.stats;
  const log = () => JSON.stringify({ text: r.text, stats: st, events: events.filter((e) => e.type !== 'level' && e.type !== 'sent') });
  assert.equal(r.state, 'stopped', log());
  assert.equal(r.text, '', log());
  assert.ok(Math.abs(st.recordedSeconds - seconds) < 0.1, `recorded ${st.recordedSeconds} s of ${seconds}: ${log()}`);
  assert.ok(Math.abs(st.sentSeconds - st.recordedSeconds) < 1e-6, `sent ${st.sentSeconds} s of ${st.recordedSeconds}: ${log()}`);
  assert.equal(st.queuedFrames, 0, log());
  assert.equal(st.droppedSeconds, 0, log());
  assert.ok(events.some((e) => e.type === 'level' && e.level > 0.3), 'the meter never moved');
  console.log(JSON.stringify({ test: env.WECHAT_ID, stats: st }));
  return { r, st, log };
}

test('websocket', { skip: !configured && 'run by TestWeChatMiniProgram' }, async () => {
  const c = session('ws');
  const { st, log } = await streamAll(c);
  assert.equal(st.reconnects, 0, log());
  assert.ok(c.events.some((e) => e.type === 'server' && e.msg.type === 'ready'), log());
  assert.ok(c.events.some((e) => e.type === 'server' && e.msg.ffmpeg === 'publishing'), log());
});

test('post', { skip: !configured && 'run by TestWeChatMiniProgram' }, async () => {
  const c = session('post');
  const { st, log } = await streamAll(c);
  assert.equal(st.retries, 0, log());
  const posts = c.phone.shim.requests;
  assert.ok(posts.length >= 20, `${posts.length} POSTs`);
  assert.match(posts.at(-1).url, /&end=1/, 'the last POST ends the stream');
  assert.ok(posts.every((p) => p.status === 200), JSON.stringify(posts));
  // seq numbers the POSTs; a stop with nothing left to send sends the
  // last chunk again with end=1, a duplicate.
  const seqs = posts.map((p) => Number(/&seq=(\d+)/.exec(p.url)[1]));
  const want = seqs.map((_, i) => (i === seqs.length - 1 && st.duplicates ? i - 1 : i));
  assert.deepEqual(seqs, want);
});

test('socket dropped', { skip: !configured && 'run by TestWeChatMiniProgram' }, async () => {
  const c = session('ws');
  const { st, log } = await streamAll(c, async () => {
    await c.until((e, s) => e.type === 'sent' && s.stats().sentSeconds >= 4);
    c.phone.dropSockets();
    await c.until((e) => e.type === 'retry');
    await c.until((e) => e.type === 'server' && e.msg.type === 'ready');
  });
  // One reconnect, or a few if the server had not yet let go of the
  // dropped connection, which had sent audio within the last second
  // (1008 "already has a publisher", retried; -takeover after that second).
  assert.ok(st.reconnects >= 1, log());
  assert.equal(c.phone.shim.socketsOpened, st.reconnects + 1, log());
});

test('recorder restart', { skip: !configured && 'run by TestWeChatMiniProgram' }, async () => {
  // The 10-minute limit, shortened: the recorder stops itself every 4 s.
  const c = session('post', { duration: 4000 });
  const { st, log } = await streamAll(c);
  assert.equal(st.recorderStarts, 3, log());
  assert.equal(c.events.filter((e) => e.type === 'recorder' && e.what === 'restart').length, 2, log());
});

test('background', { skip: !configured && 'run by TestWeChatMiniProgram' }, async () => {
  const c = session('post');
  let queued = 0;
  await streamAll(c, async () => {
    // Live (audio sent), 2 s into the recording: 8 s of it remain for
    // the 5 s away, however late a loaded machine opened the publish.
    await c.until((e, s) => e.type === 'level' && s.stats().sentSeconds > 0 && s.stats().recordedSeconds >= 2);
    c.phone.hide();
    // 5 s in the background: the recorder goes on, no request starts.
    // (Or the file ends first: then the assertion below says so.)
    await Promise.race([c.until((e, s) => e.type === 'level' && s.stats().queuedSeconds >= 5), c.phone.shim.micDone]);
    const before = c.s.stats();
    queued = before.queuedSeconds;
    c.phone.show();
    // The queue drains: what was recorded by the show is sent.
    await c.until((e, s) => e.type === 'sent' && s.stats().sentSeconds >= before.recordedSeconds - 1e-6);
  });
  assert.ok(queued >= 5, `queued ${queued} s in the background`);
});

// PCM: 16 kHz mono s16le frames, as onFrameRecorded gives them with
// format 'PCM', over each transport.
for (const [name, transport] of [['pcm websocket', 'ws'], ['pcm post', 'post']]) {
  test(name, { skip: !configured && 'run by TestWeChatMiniProgram' }, async () => {
    const c = session(transport, { format: 'pcm', frameSize: 4 });
    const { st, log } = await streamAll(c);
    assert.equal(st.reconnects + st.retries, 0, log());
  });
}
