// Unit tests of the status page's pure parts: node --test web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { health, fmtAge, fmtBytes, fmtOutputs, fmtAdmission, cells } from './status/lib.js';

const live = { id: 'a', state: 'live', ffmpeg: 'publishing', restarts: 0, held_seconds: 0.3, sent_seconds: 5, dropped_bytes: 0 };

test('health: one class per condition, the worst wins', () => {
  assert.equal(health(live), 'healthy');
  assert.equal(health({ ...live, held_seconds: 2.5 }), 'lagging');
  assert.equal(health({ ...live, held_seconds: 2.5, sent_seconds: 0 }), 'healthy'); // its start
  assert.equal(health({ ...live, ffmpeg: 'restarting', restarts: 1 }), 'restarting');
  assert.equal(health({ ...live, ffmpeg: 'starting', restarts: 1, held_seconds: 5 }), 'restarting');
  assert.equal(health({ ...live, ffmpeg: 'starting', restarts: 0 }), 'healthy'); // a first start
  assert.equal(health({ ...live, ffmpeg: 'restarting', restarts: 3 }), 'failing');
  assert.equal(health({ ...live, upstream: 'not answering' }), 'failing');
  assert.equal(health({ ...live, dropped_bytes: 10, held_seconds: 9 }), 'failing');
  const two = [{ index: 0, state: 'publishing' }, { index: 1, state: 'down', error: 'Connection refused' }];
  assert.equal(health({ ...live, outputs: two }), 'restarting'); // a restream reopened; the primary goes on
  assert.equal(health({ ...live, outputs: two.slice(0, 1) }), 'healthy');
});

test('fmtAge', () => {
  assert.equal(fmtAge(0), '0:00');
  assert.equal(fmtAge(-5000), '0:00'); // clocks a little apart
  assert.equal(fmtAge(7999), '0:07');
  assert.equal(fmtAge(12 * 60e3 + 3000), '12:03');
  assert.equal(fmtAge(3723e3), '1:02:03');
});

test('fmtBytes', () => {
  assert.equal(fmtBytes(0), '0 B');
  assert.equal(fmtBytes(2048), '2.0 KiB');
  assert.equal(fmtBytes(3 * 1024 * 1024), '3.0 MiB');
});

test('cells', () => {
  const c = cells({ ...live, transport: 'websocket', remote: '203.0.113.7:5', started: '2026-01-01T00:00:00Z', seconds: 10.26, sent_seconds: 9.9 },
    Date.parse('2026-01-01T00:01:05Z'));
  assert.equal(c.age, '1:05');
  assert.equal(c.seconds, '10.3 s');
  assert.equal(c.sent, '9.9 s');
  assert.equal(c.lag, '0.3 s');
  assert.equal(c.transport, 'websocket');
  assert.equal(c.format, 'mp3');
  assert.equal(c.upstream, 'publishing');
  assert.equal(c.health, 'healthy');
});

test('fmtOutputs', () => {
  assert.equal(fmtOutputs([]), '–');
  assert.equal(fmtOutputs(undefined), '–');
  assert.equal(fmtOutputs([{ index: 0, state: 'publishing' }]), 'publishing');
  assert.equal(fmtOutputs([{ index: 0, state: 'publishing' }, { index: 1, state: 'down' }]), '0 publishing, 1 down');
});

test('fmtAdmission', () => {
  assert.equal(fmtAdmission(undefined), '');
  assert.equal(fmtAdmission({ saturated: false, refused: {} }), 'taking new streams');
  assert.equal(fmtAdmission({ saturated: true, reason: 'cpu', refused: { cpu: 3, starting: 1 } }), 'saturated (cpu): new streams refused; 4 refused so far');
});
