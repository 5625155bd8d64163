// The two ways to the server: numbered POSTs to /base64, or one WebSocket
// to /ws. Each takes frames from the streamer's queue and reports through
// ctx (see streamer.js); wx comes in through ctx, never from a global.

const { backoff, closeReason, postOutcome } = require('./settings.js');

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

// toBase64 encodes bytes (wx.arrayBufferToBase64 is deprecated).
function toBase64(buf) {
  const b = new Uint8Array(buf);
  let out = '';
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i < b.length) {
    const n = (b[i] << 16) | ((b[i + 1] || 0) << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < b.length ? B64[(n >> 6) & 63] : '=') + '=';
  }
  return out;
}

function query(ctx) {
  const o = ctx.opts;
  return `key=${encodeURIComponent(o.key)}&id=${encodeURIComponent(o.id)}${ctx.format.query(o)}`;
}

// postSender sends one POST at a time, in order. Each carries the frames
// queued so far (up to maxPostBytes) under the next seq; a failed POST is
// sent again with the same seq and bytes, so the server writes it once. At
// stop the last POST carries end=1; if everything was already sent, the
// last chunk is sent again with end=1 (the server answers a duplicate and
// ends the stream). Nothing is started in the background, where requests
// fail after 5 s.
function postSender(ctx) {
  const { wx, opts, queue, clock } = ctx;
  let seq = 0;
  let inflight = null; // the chunk being sent: { seq, body, bytes, seconds, end }
  let last = null; // the last chunk the server took
  let busy = false;
  let timer = null;
  let attempt = 0;
  let closed = false;

  function pump() {
    if (busy || timer || closed || ctx.hidden()) return;
    if (!inflight) {
      if (queue.length) {
        const t = queue.take(opts.maxPostBytes);
        inflight = { seq: seq++, body: toBase64(t.data), bytes: t.data.byteLength, seconds: t.seconds, end: false };
      } else if (ctx.finishing()) {
        if (!last) return ctx.done();
        inflight = { seq: last.seq, body: last.body, bytes: 0, seconds: 0, end: true };
      } else {
        return;
      }
      inflight.end = inflight.end || (ctx.finishing() && queue.length === 0);
    }
    const c = inflight;
    busy = true;
    ctx.stats.posts++;
    wx.request({
      url: `${opts.server}/base64?${query(ctx)}&seq=${c.seq}&rec=${opts.rec}${c.end ? '&end=1' : ''}`,
      method: 'POST',
      data: c.body,
      header: { 'content-type': 'text/plain' },
      timeout: opts.requestTimeout,
      success: (res) => replied(c, res.statusCode, res.data, res.header || {}),
      fail: (err) => replied(c, 0, { errmsg: err.errMsg }, {}),
    });
  }

  function replied(c, status, data, header) {
    busy = false;
    if (closed) return;
    const body = data && typeof data === 'object' ? data : { errmsg: String(data || '') };
    const what = postOutcome(status, body);
    if (what === 'fail') return ctx.fail(body.errmsg || `HTTP ${status}`);
    if (what === 'retry') {
      const after = Number(header['Retry-After'] || header['retry-after']) * 1000;
      const delay = after > 0 ? after : backoff(attempt, ctx.random);
      attempt++;
      ctx.retrying(body.errmsg || `HTTP ${status}`, delay);
      timer = clock.setTimeout(() => {
        timer = null;
        pump();
      }, delay);
      return;
    }
    attempt = 0;
    inflight = null;
    if (what === 'ok') {
      last = c;
      ctx.sent(c.seconds, c.bytes, { seq: c.seq, duplicate: !!body.duplicate });
    } else {
      ctx.skipped(c.seconds, body.errmsg);
    }
    if (c.end) {
      closed = true;
      return ctx.done();
    }
    pump();
  }

  return {
    start() {},
    pump,
    // wake retries now: the app is back in front, or the network is.
    wake() {
      attempt = 0;
      if (timer) clock.clearTimeout(timer);
      timer = null;
      pump();
    },
    close() {
      closed = true;
      if (timer) clock.clearTimeout(timer);
    },
  };
}

// socketSender keeps one WebSocket (a mini-program may hold 5): frames go
// out as binary messages while it is open and wait in the queue while it
// is not; a lost connection is retried with backoff and the server's
// session continues the stream. At stop it closes with 1000, which ends
// the stream at once.
function socketSender(ctx) {
  const { wx, opts, queue, clock } = ctx;
  const url = `${opts.server.replace(/^http/, 'ws')}/ws?${query(ctx)}`;
  let task = null;
  let open = false;
  let attempt = 0;
  let timer = null;
  let connectTimer = null;
  let closed = false;
  let ending = false;
  let connects = 0;

  function connect() {
    timer = null;
    if (closed) return;
    if (connects++ > 0) ctx.stats.reconnects++;
    const t = wx.connectSocket({ url, fail: (e) => gone(t, 1006, e.errMsg) });
    task = t;
    connectTimer = clock.setTimeout(() => gone(t, 1006, 'no connection within the timeout'), opts.connectTimeout);
    t.onOpen(() => {
      if (task !== t) return;
      open = true;
      clock.clearTimeout(connectTimer);
      pump();
    });
    t.onMessage((m) => {
      if (task !== t || typeof m.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (msg.type === 'ready') attempt = 0;
      ctx.server(msg);
    });
    t.onClose((r) => gone(t, r.code, r.reason));
    t.onError((e) => gone(t, 1006, e.errMsg));
  }

  function gone(t, code, reason) {
    if (t !== task) return;
    task = null;
    open = false;
    clock.clearTimeout(connectTimer);
    try {
      t.close({}); // releases one of the 5 sockets, whatever state it is in
    } catch (e) {
      // already closed
    }
    if (ending) {
      closed = true;
      return ctx.done();
    }
    if (closed) return;
    const r = closeReason(code, reason);
    if (!r.retry) return ctx.fail(r.text);
    const delay = backoff(attempt++, ctx.random);
    ctx.retrying(r.text, delay);
    timer = clock.setTimeout(connect, delay);
  }

  function pump() {
    if (!open || closed || ending) return;
    const t = task;
    while (queue.length) {
      const f = queue.shift();
      t.send({
        data: f.data,
        success: () => ctx.sent(f.seconds, f.data.byteLength),
        fail: () => {
          queue.requeue(f);
          gone(t, 1006, 'send failed');
        },
      });
    }
    if (ctx.finishing()) {
      ending = true;
      t.close({ code: 1000, reason: 'stop' });
    }
  }

  return {
    start: connect,
    pump,
    wake() {
      if (!timer) return pump();
      clock.clearTimeout(timer);
      attempt = 0;
      connect();
    },
    close() {
      closed = true;
      if (timer) clock.clearTimeout(timer);
      clock.clearTimeout(connectTimer);
      if (task) {
        const t = task;
        task = null;
        try {
          t.close({ code: 1000, reason: 'stop' });
        } catch (e) {
          // already closed
        }
      }
    },
  };
}

module.exports = { postSender, socketSender, toBase64 };
