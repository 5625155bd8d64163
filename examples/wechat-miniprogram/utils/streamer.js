// streamer: goes live with the microphone. It records with wx's
// RecorderManager, queues the frames, and sends them over a WebSocket or
// numbered POSTs (senders.js). It restarts the recorder at its 10-minute
// limit, resumes it after an interruption (a call) or a trip to the
// background, and reconnects with backoff.
//
// wx is a parameter: the page passes the real one, tests pass a shim.
//
//   const s = createStreamer(wx, { server: 'https://publisher.example.com',
//     id: 'room1', key: 'testkey', transport: 'ws', onEvent: (e) => … });
//   s.start(); … s.stop().then(({ state, text, stats }) => …);
//
// Events: { type: 'state', state: 'starting'|'live'|'reconnecting'|'stopping'|'stopped'|'failed', text },
// { type: 'level', level: 0..1 }, { type: 'server', msg } (the server's
// status messages, WebSocket only), { type: 'sent', seconds, seq, duplicate },
// { type: 'recorder', what: 'start'|'restart'|'pause'|'resume'|'interrupted'|'error', text },
// { type: 'app', what: 'hide'|'show' }, { type: 'retry', text, delay }, { type: 'skipped', text }.

const { FORMATS, MAX_RECORDING, checkSettings } = require('./settings.js');
const { meter } = require('./audio.js');
const { FrameQueue } = require('./queue.js');
const { postSender, socketSender } = require('./senders.js');

const DEFAULTS = {
  transport: 'ws', // 'ws' or 'post'
  format: 'mp3',
  sampleRate: 16000,
  numberOfChannels: 1,
  encodeBitRate: 48000,
  frameSize: 2, // KB per onFrameRecorded: about 1/3 s at 48 kbps
  duration: MAX_RECORDING,
  maxPostBytes: 64 * 1024, // a POST carries what queued up to this
  maxQueueBytes: 4 << 20, // about 10 minutes at 48 kbps
  requestTimeout: 10000,
  connectTimeout: 10000,
  stopTimeout: 15000, // at stop, how long queued audio may take to go out
  recorderRetries: 3, // recorder errors in a row before giving up
};

function createStreamer(wx, options) {
  const opts = { ...DEFAULTS, ...options };
  opts.duration = Math.min(opts.duration, MAX_RECORDING);
  opts.rec = opts.rec || `r${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const problem = checkSettings(opts);
  if (problem) throw new Error(problem);
  const clock = opts.clock || {
    setTimeout: (f, ms) => setTimeout(f, ms),
    clearTimeout: (t) => clearTimeout(t),
    now: () => Date.now(),
  };
  const emit = (ev) => opts.onEvent && opts.onEvent(ev);
  const format = FORMATS[opts.format];
  const measure = meter(format.info(opts));
  const queue = new FrameQueue(opts.maxQueueBytes);
  const stats = {
    recordedSeconds: 0, sentSeconds: 0, sentBytes: 0, skippedSeconds: 0,
    recorderStarts: 0, reconnects: 0, retries: 0, posts: 0, duplicates: 0,
    level: 0, startedAt: 0, endedAt: 0,
  };
  const recorderOptions = {
    format: format.recorder, sampleRate: opts.sampleRate, numberOfChannels: opts.numberOfChannels,
    encodeBitRate: opts.encodeBitRate, frameSize: opts.frameSize, duration: opts.duration,
  };
  const rm = wx.getRecorderManager();
  let state = 'idle';
  let wanted = false; // the recorder should be recording
  let recording = false; // between its onStart and onStop
  let paused = false;
  let recorderDone = false; // stopped for good: every frame is queued
  let recorderErrors = 0;
  let hidden = false;
  let stopTimer = null;
  let resolveEnded;
  const ended = new Promise((resolve) => (resolveEnded = resolve));

  function setState(s, text) {
    if (state === s && !text) return;
    state = s;
    emit({ type: 'state', state: s, text: text || '' });
  }

  const ctx = {
    wx, opts, queue, clock, format, stats,
    random: opts.random || Math.random,
    hidden: () => hidden,
    finishing: () => recorderDone,
    emit,
    sent(seconds, bytes, info) {
      stats.sentSeconds += seconds;
      stats.sentBytes += bytes;
      if (info && info.duplicate) stats.duplicates++;
      if (state === 'starting' || state === 'reconnecting') setState('live');
      emit({ type: 'sent', seconds, ...info });
    },
    skipped(seconds, text) {
      stats.skippedSeconds += seconds;
      emit({ type: 'skipped', seconds, text });
    },
    retrying(text, delay) {
      stats.retries++;
      if (state !== 'stopping') setState('reconnecting', text);
      emit({ type: 'retry', text, delay });
    },
    server(msg) {
      if (msg.type === 'ready' && (state === 'starting' || state === 'reconnecting')) setState('live');
      emit({ type: 'server', msg });
    },
    fail(text) {
      finish('failed', text);
    },
    done() {
      finish('stopped', queue.length ? `${queue.seconds.toFixed(1)} s of audio were not sent` : '');
    },
  };
  const sender = opts.transport === 'post' ? postSender(ctx) : socketSender(ctx);

  function startRecorder() {
    rm.start(recorderOptions);
  }

  rm.onStart(() => {
    recording = true;
    paused = false;
    stats.recorderStarts++;
    emit({ type: 'recorder', what: stats.recorderStarts > 1 ? 'restart' : 'start' });
  });
  rm.onFrameRecorded(({ frameBuffer }) => {
    if (state === 'idle' || state === 'stopped' || state === 'failed') return;
    recorderErrors = 0;
    const info = measure(frameBuffer);
    stats.recordedSeconds += info.seconds;
    stats.level = info.level;
    emit({ type: 'level', level: info.level });
    queue.push(frameBuffer, info.seconds);
    sender.pump();
  });
  rm.onStop(() => {
    recording = false;
    if (wanted) {
      startRecorder(); // the 10-minute limit, or the system stopped it: the stream goes on
      return;
    }
    recorderDone = true;
    sender.pump();
  });
  rm.onPause(() => {
    paused = true;
    emit({ type: 'recorder', what: 'pause' });
  });
  rm.onResume(() => {
    paused = false;
    emit({ type: 'recorder', what: 'resume' });
  });
  rm.onInterruptionBegin(() => emit({ type: 'recorder', what: 'interrupted' }));
  rm.onInterruptionEnd(() => {
    if (wanted && paused && !hidden) rm.resume();
  });
  rm.onError((e) => {
    const text = (e && e.errMsg) || 'recorder error';
    emit({ type: 'recorder', what: 'error', text });
    if (!wanted) return;
    if (++recorderErrors > opts.recorderRetries || /auth|permission|denied/i.test(text)) {
      finish('failed', `the recorder failed: ${text}`);
      return;
    }
    if (!recording) clock.setTimeout(() => wanted && !recording && startRecorder(), 1000);
  });

  function onHide() {
    hidden = true;
    emit({ type: 'app', what: 'hide' });
  }
  function onShow() {
    hidden = false;
    emit({ type: 'app', what: 'show' });
    if (wanted && paused) rm.resume();
    sender.wake();
  }

  function finish(s, text) {
    if (state === 'stopped' || state === 'failed') return;
    wanted = false;
    if (recording) rm.stop();
    clock.clearTimeout(stopTimer);
    sender.close();
    if (wx.offAppHide) wx.offAppHide(onHide);
    if (wx.offAppShow) wx.offAppShow(onShow);
    stats.endedAt = clock.now();
    setState(s, text);
    resolveEnded({ state: s, text: text || '', stats: snapshot() });
  }

  function snapshot() {
    return {
      ...stats,
      queuedSeconds: queue.seconds,
      queuedFrames: queue.length,
      droppedSeconds: queue.dropped,
      elapsedMs: stats.startedAt ? (stats.endedAt || clock.now()) - stats.startedAt : 0,
    };
  }

  return {
    start() {
      if (state !== 'idle') throw new Error('a streamer starts once; create another');
      stats.startedAt = clock.now();
      setState('starting');
      wanted = true;
      if (wx.onAppHide) wx.onAppHide(onHide);
      if (wx.onAppShow) wx.onAppShow(onShow);
      startRecorder();
      sender.start();
    },
    // stop ends the recording, sends what is queued and ends the stream;
    // it resolves when that is done (or given up after stopTimeout).
    stop() {
      if (state === 'idle' || state === 'stopped' || state === 'failed' || !wanted) return ended;
      wanted = false;
      setState('stopping');
      stopTimer = clock.setTimeout(() => finish('stopped', `gave up: ${queue.seconds.toFixed(1)} s of audio were not sent`), opts.stopTimeout);
      if (recording) {
        rm.stop();
      } else {
        recorderDone = true;
        sender.pump();
      }
      return ended;
    },
    stats: snapshot,
    state: () => state,
    ended,
  };
}

module.exports = { createStreamer, DEFAULTS };
