// Unit tests of the recorder page's pure parts: node --test web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toInt16, toS16LE, level, backoff, describe, closeReason } from './static/lib.js';

test('toInt16 scales and clips', () => {
  assert.deepEqual(Array.from(toInt16(new Float32Array([0, 1, -1, 0.5, 2, -3]))), [0, 32767, -32768, 16384, 32767, -32768]);
});

test('toS16LE is little-endian 16-bit PCM', () => {
  assert.deepEqual(Array.from(new Uint8Array(toS16LE(new Float32Array([0, 1, -1, 0.5])))), [0, 0, 0xff, 0x7f, 0x00, 0x80, 0x00, 0x40]);
});

test('level is 0 for silence and 1 for full scale', () => {
  assert.equal(level(new Float32Array(100)), 0);
  assert.equal(level(new Float32Array(100).fill(1)), 1);
  const mid = level(new Float32Array(100).fill(0.01)); // -40 dB
  assert.ok(Math.abs(mid - 1 / 3) < 1e-6, `got ${mid}`);
});

test('backoff doubles to a cap, with jitter below it', () => {
  assert.equal(backoff(0, () => 1), 500);
  assert.equal(backoff(3, () => 1), 4000);
  assert.equal(backoff(10, () => 1), 8000);
  assert.equal(backoff(10, () => 0), 6400);
});

test('describe speaks plainly', () => {
  assert.match(describe({ type: 'ready', id: 'a' }).text, /live ID “a”/);
  assert.match(describe({ type: 'status', ffmpeg: 'publishing', seconds: 3.21 }).text, /3\.2 s/);
  assert.equal(describe({ type: 'error', errmsg: 'wrong or missing key' }).error, true);
  assert.match(describe({ type: 'status', upstream: 'not answering' }).text, /not answering/);
});

test('closeReason tells whether to retry', () => {
  assert.equal(closeReason(1008, 'wrong or missing key').retry, false);
  assert.equal(closeReason(1006, '').retry, true);
  assert.equal(closeReason(1001, '').retry, true);
  assert.match(closeReason(1001, 'the server is shutting down').text, /restarting/);
  assert.match(closeReason(1001, 'no audio for 1m0s').text, /no audio for 1m0s; reconnecting/);
  assert.equal(closeReason(1000, '').retry, false);
});
