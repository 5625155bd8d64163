// WHIP (RFC 9725) from the page: the browser's own Opus over WebRTC, no
// encoder in the page. The offer goes to /whip/ID with the key as a
// Bearer token; the answer's Location is the session, which a DELETE ends.

// gathered resolves once ICE gathering is complete (the server takes no
// trickled candidates), or after limitMs with what there is.
function gathered(pc, limitMs = 2000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, limitMs);
  });
}

// refusal reads the server's reason from a refused offer's JSON reply.
async function refusal(resp) {
  try {
    const body = await resp.json();
    if (body.errmsg) return `${body.errmsg} (${resp.status})`;
  } catch { /* not JSON */ }
  return `The server refused the WebRTC offer (${resp.status}).`;
}

// publishWHIP sends stream's audio to endpoint; onState hears the
// connection's states ('connected', 'disconnected', 'failed', ...).
export async function publishWHIP(endpoint, key, stream, onState) {
  const pc = new RTCPeerConnection();
  for (const track of stream.getAudioTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
  pc.addEventListener('connectionstatechange', () => onState(pc.connectionState));
  const auth = key ? { Authorization: `Bearer ${key}` } : {};
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const resp = await fetch(endpoint, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp', ...auth }, body: pc.localDescription.sdp,
    });
    if (resp.status !== 201) throw new Error(await refusal(resp));
    const location = new URL(resp.headers.get('Location'), endpoint).toString();
    await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
    return {
      // stop ends the stream on the server (DELETE), then the connection.
      async stop() {
        try { await fetch(location, { method: 'DELETE', headers: auth }); } catch { /* the server goes by the idle timeout */ }
        pc.close();
      },
    };
  } catch (e) {
    pc.close();
    throw e;
  }
}
