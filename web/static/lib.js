// Pure helpers of the recorder page, tested with node's test runner.

// toInt16 converts samples in [-1, 1] to 16-bit PCM, clipping.
export function toInt16(f32) {
  const out = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) {
    const s = Math.max(-1, Math.min(1, f32[i]));
    out[i] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
  }
  return out;
}

// toS16LE converts samples in [-1, 1] to the bytes of 16-bit little-endian
// PCM, what the server takes as format=pcm, whatever the machine's order.
export function toS16LE(f32) {
  const s = toInt16(f32);
  const out = new DataView(new ArrayBuffer(s.length * 2));
  for (let i = 0; i < s.length; i++) out.setInt16(2 * i, s[i], true);
  return out.buffer;
}

// level is the block's loudness for the meter, 0..1 (RMS on a dB scale
// from -60 dB).
export function level(f32) {
  let sum = 0;
  for (let i = 0; i < f32.length; i++) sum += f32[i] * f32[i];
  const rms = Math.sqrt(sum / Math.max(1, f32.length));
  if (rms <= 0) return 0;
  return Math.max(0, Math.min(1, (20 * Math.log10(rms) + 60) / 60));
}

// backoff is the wait before reconnection attempt n (0-based): 0.5 s
// doubling to 8 s, with up to 20% jitter so many pages do not retry in step.
export function backoff(n, random = Math.random) {
  const base = Math.min(8000, 500 * 2 ** n);
  return Math.round(base * (0.8 + 0.2 * random()));
}

// describe turns a server status message into plain words, and says
// whether it is an error the person must act on.
export function describe(msg) {
  switch (msg.type) {
    case 'ready':
      return { text: `Connected: streaming to live ID “${msg.id}”.`, error: false };
    case 'status':
      if (msg.state === 'waiting') return { text: 'The server is reconnecting to the RTMP server; sending slowly meanwhile.', error: false };
      if (msg.upstream === 'not answering') return { text: 'The RTMP server is not answering; your audio is kept and sent when it is back.', error: false };
      switch (msg.ffmpeg) {
        case 'publishing': return { text: `Live: ${Number(msg.seconds || 0).toFixed(1)} s of audio delivered.`, error: false };
        case 'starting': return { text: 'Starting the live stream…', error: false };
        case 'restarting': return { text: 'The live stream is reconnecting to the RTMP server…', error: false };
        default: return { text: 'Connected.', error: false };
      }
    case 'error':
      return { text: msg.errmsg || 'The server reported an error.', error: true };
    default:
      return { text: '', error: false };
  }
}

// closeReason explains why the server closed the connection, and whether
// reconnecting can help.
export function closeReason(code, reason) {
  switch (code) {
    case 1000: return { text: 'Stopped.', retry: false };
    case 1008: return { text: reason || 'Refused: check the live ID and key.', retry: false };
    case 1003: return { text: reason || 'The server cannot use this audio format.', retry: false };
    case 1009: return { text: reason || 'A message was too large.', retry: false };
    case 1013: return { text: reason || 'The server is busy; retrying…', retry: true };
    // 1001 is a server going away, or a connection that sent no audio for
    // the server's read timeout: the reason says which.
    case 1001: return { text: reason && !/shutting down/.test(reason) ? `${reason}; reconnecting…` : 'The server is restarting; reconnecting…', retry: true };
    default: return { text: reason || 'Connection lost; reconnecting…', retry: true };
  }
}
