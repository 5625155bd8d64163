// The status page: polls /streams with the admin key (sent as a header,
// never in a URL) and shows one row per live stream. The key lives in this
// tab's sessionStorage, so a reload keeps the operator signed in and
// closing the tab forgets it.
import { cells, fmtAdmission } from './lib.js';

const $ = (id) => document.getElementById(id);
const STORE = 'publisher-admin-key';
const POLL_MS = 700; // a change shows within a second, one request at a time
const TIMEOUT_MS = 5000;
const streamsURL = new URL('../streams', location.href);

let key = sessionStorage.getItem(STORE) || '';
let timer = 0;
let skew = 0; // server clock minus this page's, from the Date header
// For tests and the curious: when each ID's row appeared and went (ms).
window.statusSeen = {};
window.statusGone = {};

function show(signedIn, loginError) {
  $('login').hidden = signedIn;
  $('board').hidden = !signedIn;
  $('signout').hidden = !signedIn;
  $('loginerror').textContent = loginError || '';
  $('loginerror').hidden = !loginError;
}

function signOut(reason) {
  key = '';
  sessionStorage.removeItem(STORE);
  clearTimeout(timer);
  for (const row of [...$('rows').children]) row.remove();
  show(false, reason);
  $('adminkey').focus();
}

async function poll() {
  clearTimeout(timer);
  const ctl = new AbortController();
  const abort = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  const asked = key;
  try {
    const resp = await fetch(streamsURL, { headers: { Authorization: `Bearer ${asked}` }, cache: 'no-store', signal: ctl.signal });
    const body = await resp.json().catch(() => ({}));
    if (asked !== key) return; // signed out meanwhile
    if (resp.status === 403 || resp.status === 404) {
      signOut(body.errmsg || `refused (${resp.status})`);
      return;
    }
    if (!resp.ok) throw new Error(body.errmsg || `HTTP ${resp.status}`);
    const date = Date.parse(resp.headers.get('Date') || '');
    if (!Number.isNaN(date)) skew = date - Date.now();
    render(body.streams || []);
    $('admission').textContent = fmtAdmission(body.admission);
    $('admission').className = body.admission && body.admission.saturated ? 'saturated' : '';
    $('error').hidden = true;
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    $('error').textContent = `Cannot reach the server: ${e.message}; retrying.`;
    $('error').hidden = false;
  } finally {
    clearTimeout(abort);
    if (key && asked === key) timer = setTimeout(poll, POLL_MS);
  }
}

const COLUMNS = ['id', 'health', 'transport', 'format', 'remote', 'age', 'seconds', 'sent', 'lag', 'restarts', 'upstream', 'dropped', 'outputs'];

function newRow(id) {
  const row = $('rowtemplate').content.firstElementChild.cloneNode(true);
  row.dataset.id = id;
  row.querySelector('button.end').addEventListener('click', (e) => end(id, e.currentTarget));
  window.statusSeen[id] = Date.now();
  delete window.statusGone[id];
  return row;
}

function render(streams) {
  const now = Date.now() + skew;
  const rows = new Map([...$('rows').children].map((r) => [r.dataset.id, r]));
  let prev = null;
  for (const s of streams) {
    let row = rows.get(s.id);
    rows.delete(s.id);
    if (!row) row = newRow(s.id);
    const c = cells(s, now);
    for (const col of COLUMNS) row.querySelector(`[data-f="${col}"]`).textContent = c[col];
    row.className = c.health;
    row.dataset.transport = c.transport;
    row.dataset.seconds = String(s.seconds || 0);
    row.dataset.sent = String(s.sent_seconds || 0);
    row.title = [s.last_error, ...(s.outputs || []).filter((o) => o.error).map((o) => `output ${o.index}: ${o.error}`)]
      .filter(Boolean).join('\n');
    // Keep the server's order (by ID) without moving rows that are in place.
    const want = prev ? prev.nextElementSibling : $('rows').firstElementChild;
    if (want !== row) $('rows').insertBefore(row, want);
    prev = row;
  }
  for (const [id, row] of rows) {
    row.remove();
    window.statusGone[id] = Date.now();
  }
  $('count').textContent = `${streams.length} live`;
  $('empty').hidden = streams.length > 0;
}

// end asks for confirmation with a second click, then ends the stream.
async function end(id, button) {
  if (!button.dataset.armed) {
    button.dataset.armed = '1';
    button.textContent = 'Sure?';
    setTimeout(() => { delete button.dataset.armed; button.textContent = 'End'; }, 3000);
    return;
  }
  button.disabled = true;
  try {
    const resp = await fetch(new URL(`../streams/${encodeURIComponent(id)}`, location.href),
      { method: 'DELETE', headers: { Authorization: `Bearer ${key}` } });
    if (!resp.ok && resp.status !== 404) {
      const body = await resp.json().catch(() => ({}));
      throw new Error(body.errmsg || `HTTP ${resp.status}`);
    }
    poll();
  } catch (e) {
    $('error').textContent = `Could not end ${id}: ${e.message}`;
    $('error').hidden = false;
    button.disabled = false;
  }
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  key = $('adminkey').value;
  $('adminkey').value = '';
  sessionStorage.setItem(STORE, key);
  show(true);
  poll();
});
$('signout').addEventListener('click', () => signOut(''));

if (key) {
  show(true);
  poll();
} else {
  show(false);
}
