// The recorder settings a mini-program may use, the formats the server
// takes, and the small policies (backoff, close codes) of the streamer.

const { mp3Info, pcmInfo } = require('./audio.js');

// ENCODE_BITRATES: for each sampleRate RecorderManager accepts, the
// encodeBitRate range it allows; a pair outside it makes start() fail.
const ENCODE_BITRATES = {
  8000: [16000, 48000],
  11025: [16000, 48000],
  12000: [24000, 64000],
  16000: [24000, 96000],
  22050: [32000, 128000],
  24000: [32000, 128000],
  32000: [48000, 192000],
  44100: [64000, 320000],
  48000: [64000, 320000],
};

// MAX_RECORDING is RecorderManager's limit: it stops by itself after it.
const MAX_RECORDING = 10 * 60 * 1000;

// FORMATS: what the recorder is asked for, what the server is told, and
// how a chunk is measured (README "Audio formats").
const FORMATS = {
  mp3: {
    recorder: 'mp3',
    query: () => '',
    info: () => mp3Info,
  },
  pcm: {
    recorder: 'PCM',
    query: (s) => `&format=pcm&rate=${s.sampleRate}&channels=${s.numberOfChannels}`,
    info: (s) => (b) => pcmInfo(b, s.sampleRate, s.numberOfChannels),
  },
};

// checkSettings returns why the recorder would refuse s, or '' if it
// would not.
function checkSettings(s) {
  const range = ENCODE_BITRATES[s.sampleRate];
  if (!range) return `sampleRate ${s.sampleRate} is not one of ${Object.keys(ENCODE_BITRATES).join(', ')}`;
  if (s.numberOfChannels !== 1 && s.numberOfChannels !== 2) return 'numberOfChannels must be 1 or 2';
  if (s.format === 'mp3' && (s.encodeBitRate < range[0] || s.encodeBitRate > range[1])) {
    return `encodeBitRate ${s.encodeBitRate} is outside ${range[0]}–${range[1]} for sampleRate ${s.sampleRate}`;
  }
  if (!FORMATS[s.format]) return `format must be one of ${Object.keys(FORMATS).join(', ')}`;
  if (!(s.frameSize > 0)) return 'frameSize (KB) is needed: without it the recorder gives no frames';
  return '';
}

// backoff is the wait before retry n (0-based): 0.5 s doubling to 8 s,
// jittered so that many phones do not retry in step.
function backoff(n, random) {
  const base = Math.min(8000, 500 * 2 ** n);
  return Math.round(base * (0.8 + 0.2 * random()));
}

// closeReason says why the server closed a socket and whether to retry:
// refusals (1008 key or ID, 1003 format, 1009 size) are final, except a
// live ID still held by this phone's previous connection: the server lets
// the new one take over once the old one has been quiet for a second (or,
// run with -takeover=false, once it notices the old one is gone).
// 'replaced by a new connection' is final: the stream goes on there.
function closeReason(code, reason) {
  switch (code) {
    case 1000: return { text: 'stopped', retry: false };
    case 1008: return { text: reason || 'refused: check the live ID and key', retry: /already has a publisher/.test(reason || '') };
    case 1003: return { text: reason || 'the server cannot use this audio format', retry: false };
    case 1009: return { text: reason || 'a frame was larger than the server allows', retry: false };
    case 1013: return { text: reason || 'the server is busy', retry: true };
    case 1001: return { text: reason || 'the server is restarting', retry: true };
    case 1011: return { text: reason || 'the RTMP server failed', retry: true };
    default: return { text: reason || 'connection lost', retry: true };
  }
}

// postOutcome says what to do with a POST's reply: 'ok', 'skip' (the
// server went on without this chunk), 'retry' or 'fail' (retrying cannot
// help). A mini-program of the old server tested errcode === 200; this
// one tests the HTTP status, which both conventions share.
function postOutcome(status, data) {
  const msg = (data && data.errmsg) || '';
  if (status === 200) return 'ok';
  if (status === 409 && /\(seq \d+/.test(msg)) return 'skip';
  if ([400, 403, 404, 405, 413, 415].includes(status)) return 'fail';
  return 'retry'; // 408, 409 (another publisher), 429, 499, 502, 503, no answer
}

module.exports = { ENCODE_BITRATES, MAX_RECORDING, FORMATS, checkSettings, backoff, closeReason, postOutcome };
