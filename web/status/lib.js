// Pure helpers of the status page, tested with node's test runner.

// LAG_SECONDS: audio held beyond this is more than ffmpeg's progress
// reports (every 0.5 s), a client's chunk and a poll can explain.
export const LAG_SECONDS = 2;

// FAILING_RESTARTS: restarts past this are not a passing hiccup.
export const FAILING_RESTARTS = 3;

// health classes a stream from its /streams entry: failing (the RTMP
// server stopped reading, audio was given up, or ffmpeg keeps failing),
// restarting, lagging, or healthy. Until its ffmpeg first confirms
// sending, a stream holds what arrived during the start: not a lag (an
// ffmpeg that publishes and then stops sending is restarted).
export function health(s) {
  const restarting = s.ffmpeg === 'restarting' || (s.ffmpeg === 'starting' && s.restarts > 0);
  if (s.upstream || s.dropped_bytes > 0 || (restarting && s.restarts >= FAILING_RESTARTS)) return 'failing';
  // A restream that is down is being reopened; the primary goes on.
  if (restarting || (s.outputs || []).some((o) => o.state === 'down' || o.state === 'stalled')) return 'restarting';
  if (s.held_seconds > LAG_SECONDS && s.sent_seconds > 0) return 'lagging';
  return 'healthy';
}

// fmtAge is a duration in ms as 0:07, 12:03 or 1:02:03.
export function fmtAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const mm = String(Math.floor(s / 60) % 60), ss = String(s % 60).padStart(2, '0');
  if (s < 3600) return `${mm}:${ss}`;
  return `${Math.floor(s / 3600)}:${mm.padStart(2, '0')}:${ss}`;
}

// fmtSeconds shows seconds of audio with one decimal.
export function fmtSeconds(x) {
  return `${Number(x || 0).toFixed(1)} s`;
}

// fmtBytes shows a byte count in B, KiB or MiB.
export function fmtBytes(n) {
  n = Number(n || 0);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// fmtOutputs shows each output's state: the one output's, or "0 publishing,
// 1 down" for several (primary first); "–" before the first ffmpeg.
export function fmtOutputs(list) {
  if (!list || list.length === 0) return '–';
  if (list.length === 1) return list[0].state;
  return list.map((o) => `${o.index} ${o.state}`).join(', ');
}

// fmtAdmission tells admission control's state from /streams: "" without
// it, otherwise whether new streams are taken, and the refusals so far.
export function fmtAdmission(a) {
  if (!a) return '';
  const refused = Object.values(a.refused || {}).reduce((n, x) => n + x, 0);
  const state = a.saturated ? `saturated (${a.reason}): new streams refused` : 'taking new streams';
  return refused > 0 ? `${state}; ${refused} refused so far` : state;
}

// cells turns a /streams entry into the row's cells, in column order;
// now and started are in ms on the server's clock.
export function cells(s, now) {
  return {
    id: s.id,
    health: health(s),
    transport: s.transport || s.publisher || '–',
    format: s.format || 'mp3',
    remote: s.remote || '–',
    age: fmtAge(now - Date.parse(s.started)),
    seconds: fmtSeconds(s.seconds),
    sent: fmtSeconds(s.sent_seconds),
    lag: fmtSeconds(s.held_seconds),
    restarts: String(s.restarts || 0),
    upstream: s.upstream || s.ffmpeg || '–',
    dropped: fmtBytes(s.dropped_bytes),
    outputs: fmtOutputs(s.outputs),
  };
}
