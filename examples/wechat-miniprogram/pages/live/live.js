// The live page: pick a live ID and a transport, press 开始; the level,
// the elapsed time and the server's messages show while it streams. All
// the streaming is in utils/streamer.js; this page only draws.
const { createStreamer } = require('../../utils/streamer.js');
const { describe, clock } = require('../../utils/describe.js');

// FORMATS_ON_SERVER: the formats offered; PCM avoids the phone's MP3 encoder.
const FORMATS_ON_SERVER = ['mp3', 'pcm'];
const MAX_LINES = 20;

Page({
  data: {
    server: '',
    key: '',
    id: 'room1',
    transports: [
      { value: 'ws', name: 'WebSocket' },
      { value: 'post', name: 'POST' },
    ],
    transport: 'ws',
    formats: FORMATS_ON_SERVER,
    format: 'mp3',
    running: false,
    level: 0,
    elapsed: '0:00',
    sent: '0.0',
    queued: '0.0',
    lines: [],
  },

  onLoad(query) {
    this.streamer = null;
    this.ticker = null;
    const g = getApp().globalData;
    this.setData({ server: g.server, key: g.key, id: query.id || this.data.id });
  },

  onUnload() {
    if (this.streamer) this.streamer.stop();
  },

  onInput(e) {
    this.setData({ [e.currentTarget.dataset.field]: e.detail.value.trim() });
  },

  onTransport(e) {
    this.setData({ transport: e.detail.value });
  },

  onFormat(e) {
    this.setData({ format: e.detail.value });
  },

  toggle() {
    if (this.data.running) {
      this.stop();
    } else {
      wx.authorize({
        scope: 'scope.record',
        success: () => this.start(),
        fail: () => this.say({ text: '需要麦克风权限：请在设置中允许录音', error: true }),
      });
    }
  },

  start() {
    let s;
    try {
      s = createStreamer(wx, {
        server: this.data.server,
        id: this.data.id,
        key: this.data.key,
        transport: this.data.transport,
        format: this.data.format,
        onEvent: (e) => this.onEvent(e),
      });
    } catch (err) {
      this.say({ text: err.message, error: true });
      return;
    }
    this.streamer = s;
    this.setData({ running: true, lines: [], level: 0 });
    s.ended.then(() => this.ended(s)); // stopped, or failed for good
    s.start();
    this.ticker = setInterval(() => this.tick(), 500);
  },

  stop() {
    if (this.streamer) this.streamer.stop();
  },

  ended(s) {
    if (this.streamer !== s) return;
    clearInterval(this.ticker);
    this.tick();
    this.streamer = null;
    this.setData({ running: false, level: 0 });
  },

  onEvent(e) {
    if (e.type === 'level') {
      this.setData({ level: Math.round(e.level * 100) });
      return;
    }
    const line = describe(e);
    if (line) this.say(line);
  },

  tick() {
    const s = this.streamer;
    if (!s) return;
    const st = s.stats();
    this.setData({ elapsed: clock(st.elapsedMs), sent: st.sentSeconds.toFixed(1), queued: st.queuedSeconds.toFixed(1) });
  },

  say(line) {
    const lines = [{ text: line.text, error: !!line.error, key: Date.now() + Math.random() }].concat(this.data.lines);
    this.setData({ lines: lines.slice(0, MAX_LINES) });
  },
});
