// The frames recorded and not yet handed to the network, oldest first.
// Bounded: past maxBytes the oldest are dropped (and counted), since a
// phone offline for minutes must not run out of memory.

class FrameQueue {
  constructor(maxBytes) {
    this.maxBytes = maxBytes;
    this.items = []; // { n, data: ArrayBuffer, seconds }
    this.bytes = 0;
    this.seconds = 0;
    this.dropped = 0; // seconds of audio given up
    this.next = 0; // number of the next frame, for requeueing in order
  }

  get length() {
    return this.items.length;
  }

  push(data, seconds) {
    this.items.push({ n: this.next++, data, seconds });
    this.bytes += data.byteLength;
    this.seconds += seconds;
    while (this.bytes > this.maxBytes && this.items.length > 1) {
      this.dropped += this.shift().seconds;
    }
  }

  shift() {
    const f = this.items.shift();
    if (f) {
      this.bytes -= f.data.byteLength;
      this.seconds -= f.seconds;
    }
    return f;
  }

  // requeue puts frames that could not be sent back in their place.
  requeue(f) {
    let i = 0;
    while (i < this.items.length && this.items[i].n < f.n) i++;
    this.items.splice(i, 0, f);
    this.bytes += f.data.byteLength;
    this.seconds += f.seconds;
  }

  // take removes frames from the head up to maxBytes (at least one) and
  // returns them joined.
  take(maxBytes) {
    const frames = [this.shift()];
    let size = frames[0].data.byteLength;
    while (this.items.length && size + this.items[0].data.byteLength <= maxBytes) {
      const f = this.shift();
      frames.push(f);
      size += f.data.byteLength;
    }
    const out = new Uint8Array(size);
    let at = 0;
    let seconds = 0;
    for (const f of frames) {
      out.set(new Uint8Array(f.data), at);
      at += f.data.byteLength;
      seconds += f.seconds;
    }
    return { data: out.buffer, seconds, frames: frames.length };
  }
}

module.exports = { FrameQueue };
