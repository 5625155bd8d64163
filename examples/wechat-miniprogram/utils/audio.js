// What the streamer needs to know about the recorder's frames: how many
// seconds of audio they hold and how loud they are. Pure functions of
// bytes; no wx calls.

const MP3_BITRATES = {
  1: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
  2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
};
const MP3_RATES = { 1: [44100, 48000, 32000], 2: [22050, 24000, 16000], 25: [11025, 12000, 8000] };

// mp3Header reads the layer III frame header at b[i], or returns null.
function mp3Header(b, i) {
  if (i + 4 > b.length || b[i] !== 0xff || (b[i + 1] & 0xe0) !== 0xe0) return null;
  const version = [25, 0, 2, 1][(b[i + 1] >> 3) & 3];
  if (!version || ((b[i + 1] >> 1) & 3) !== 1) return null; // reserved version, or not layer III
  const kbps = MP3_BITRATES[version === 1 ? 1 : 2][b[i + 2] >> 4];
  const rate = MP3_RATES[version][(b[i + 2] >> 2) & 3];
  if (!kbps || !rate) return null; // free format, bad bitrate or rate
  const mpeg1 = version === 1;
  return {
    mpeg1,
    rate,
    channels: (b[i + 3] >> 6) === 3 ? 1 : 2,
    crc: (b[i + 1] & 1) === 0,
    samples: mpeg1 ? 1152 : 576,
    length: Math.floor(((mpeg1 ? 144 : 72) * kbps * 1000) / rate) + ((b[i + 2] >> 1) & 1),
  };
}

// bitReader reads big-endian bit fields from b starting at byte pos.
function bitReader(b, pos) {
  let bit = pos * 8;
  return (n) => {
    let v = 0;
    for (let k = 0; k < n; k++, bit++) v = (v << 1) | ((b[bit >> 3] >> (7 - (bit & 7))) & 1);
    return v;
  };
}

// globalGain is the largest global_gain in a frame's side information: the
// encoder's quantizer step, which grows by 1.5 dB a unit with the signal.
function globalGain(b, i, h) {
  const side = i + 4 + (h.crc ? 2 : 0);
  if (side + (h.mpeg1 ? 32 : 17) > b.length) return 0;
  const read = bitReader(b, side);
  let gain = 0;
  if (h.mpeg1) {
    read(9 + (h.channels === 1 ? 5 : 3) + 4 * h.channels); // main_data_begin, private bits, scfsi
    for (let g = 0; g < 2 * h.channels; g++) {
      const bits = read(12);
      const big = read(9);
      const gg = read(8);
      if (bits || big) gain = Math.max(gain, gg); // an empty granule is silence, whatever its gain
      read(4 + 1 + 22 + 3);
    }
  } else {
    read(8 + (h.channels === 1 ? 1 : 2));
    for (let g = 0; g < h.channels; g++) {
      const bits = read(12);
      const big = read(9);
      const gg = read(8);
      if (bits || big) gain = Math.max(gain, gg); // an empty granule is silence, whatever its gain
      read(9 + 1 + 22 + 2);
    }
  }
  return gain;
}

// dbLevel maps a loudness in dB below full scale to the meter's 0..1
// (-60 dB and below is 0), as the demo page's meter does.
function dbLevel(db) {
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

// GAIN_0DBFS is the global_gain of a full-scale tone as LAME encodes it
// at every rate and bitrate a recorder uses (measured with ffmpeg's
// libmp3lame; the step is 1.5 dB a unit from there down to -80 dB).
const GAIN_0DBFS = 142;

// mp3Info scans whole MP3 frames in bytes: their seconds, and a level from
// their quantizer gains (an estimate: the frames are not decoded).
function mp3Info(bytes) {
  const b = new Uint8Array(bytes);
  let seconds = 0;
  let frames = 0;
  let gains = 0;
  let loud = 0; // frames that are not silent
  let i = 0;
  while (i + 4 <= b.length) {
    const h = mp3Header(b, i);
    if (h && i + h.length > b.length) break; // cut: the next chunk completes it
    if (!h) {
      i++;
      continue;
    }
    seconds += h.samples / h.rate;
    frames++;
    const g = globalGain(b, i, h);
    if (g) {
      gains += g;
      loud++;
    }
    i += h.length;
  }
  const level = loud ? dbLevel(1.5 * (gains / loud - GAIN_0DBFS)) * (loud / frames) : 0;
  return { seconds, level, frames, used: i };
}

// pcmInfo measures signed 16-bit little-endian PCM: seconds and RMS level.
function pcmInfo(bytes, rate, channels) {
  const n = Math.floor(bytes.byteLength / 2);
  const v = new DataView(bytes, 0, n * 2);
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const s = v.getInt16(2 * k, true) / 32768;
    sum += s * s;
  }
  const rms = Math.sqrt(sum / Math.max(1, n));
  const frames = Math.floor(n / channels);
  return { seconds: frames / rate, level: rms > 0 ? dbLevel(20 * Math.log10(rms)) : 0, frames, used: frames * channels * 2 };
}

// meter measures a recorder's chunks as they come, carrying a frame cut
// between two chunks over to the next, so its seconds are counted once.
function meter(info) {
  let tail = new Uint8Array(0);
  return (chunk) => {
    const b = new Uint8Array(tail.length + chunk.byteLength);
    b.set(tail);
    b.set(new Uint8Array(chunk), tail.length);
    const r = info(b.buffer);
    tail = b.slice(Math.max(r.used, b.length - MAX_CARRY));
    return r;
  };
}

// MAX_CARRY bounds the carried bytes: the largest MP3 frame (320 kbps at
// 32 kHz) is 1441 bytes.
const MAX_CARRY = 1441;

module.exports = { mp3Info, pcmInfo, mp3Header, meter };
