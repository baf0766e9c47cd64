// The Agora dashboard: four views fed by one server-sent event stream each.
//
// Everything a peer controls (domains, labels, versions, error text) is
// written as text nodes or attribute values, never parsed as markup: `h()`
// below is the only way this script builds elements.
'use strict';

// ---- helpers --------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (k === 'value') e.value = v;
    // Styles go through the CSSOM: the content security policy refuses
    // style attributes.
    else if (k === 'style') Object.assign(e.style, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, kids);
  return e;
}

function append(e, ...kids) {
  for (const c of kids.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG_NS = 'http:' + '//www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of kids.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function replace(el, ...kids) {
  el.replaceChildren();
  return append(el, kids);
}

const credits = (m) => (m === null || m === undefined) ? '–' : (m / 1e6).toLocaleString(undefined, { maximumFractionDigits: 6 });
const price = (m) => `${credits(m)} /CU·s`;
const bytes = (b) => {
  if (b === null || b === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${i ? b.toFixed(1) : b} ${u[i]}`;
};
const num = (n, d = 0) => (n === null || n === undefined) ? '–' : Number(n).toLocaleString(undefined, { maximumFractionDigits: d });
const ms = (n) => (n === null || n === undefined) ? '–' : n < 1000 ? `${Math.round(n)} ms` : n < 120000 ? `${(n / 1000).toFixed(1)} s` : `${(n / 60000).toFixed(1)} min`;
const time = (t) => t ? new Date(t).toLocaleTimeString() : '–';
const datetime = (t) => t ? new Date(t).toLocaleString() : '–';
const short = (id) => (id && id.length > 14) ? `…${id.slice(-8)}` : (id || '–');

// A peer id shortened in the text, whole in the title and data-peer.
function peer(id, extra) {
  if (!id) return h('span', { class: 'muted' }, '–');
  return h('span', { class: 'mono', title: id, 'data-peer': id }, short(id), extra || '');
}

function card(k, v, title) {
  return h('div', { class: 'card', title }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v));
}

function table(cols, rows, opts = {}) {
  const t = h('table', { class: opts.class });
  t.append(h('thead', {}, h('tr', {}, cols.map((c) => h('th', { class: c.num ? 'num' : null }, c.label)))));
  const body = h('tbody');
  for (const r of rows) {
    const tr = h('tr', { class: [r.class, opts.click ? 'click' : null].filter(Boolean).join(' ') || null });
    if (opts.click) tr.addEventListener('click', () => opts.click(r));
    for (const c of cols) tr.append(h('td', { class: c.num ? 'num' : null }, c.get(r)));
    body.append(tr);
  }
  t.append(body);
  if (!rows.length && opts.empty) return h('div', { class: 'empty' }, opts.empty);
  return t;
}

async function api(method, path, body, type) {
  const headers = {};
  if (type) headers['Content-Type'] = type;
  const r = await fetch(path, { method, body, headers, credentials: 'same-origin' });
  if (!r.ok) {
    let m = `${r.status} ${r.statusText}`;
    try { m = (await r.json()).error || m; } catch (_) { /* not JSON */ }
    if (r.status === 401) loggedOut();
    throw new Error(m);
  }
  return r;
}

function banner(text) {
  const b = document.getElementById('banner');
  if (!text) { b.hidden = true; return; }
  b.hidden = false;
  replace(b, text);
}

function loggedOut() {
  banner('This browser is logged out (or the node restarted). Run `agora dashboard` for a new login link.');
}

// ---- the live stream --------------------------------------------------------

let source = null;
function stream(view, job, onData) {
  if (source) source.close();
  const q = new URLSearchParams({ view });
  if (job) q.set('job', job);
  const es = new EventSource(`/v1/events?${q}`);
  source = es;
  const live = document.getElementById('live');
  es.addEventListener('open', () => { live.classList.add('on'); banner(null); });
  es.addEventListener('snapshot', (ev) => {
    live.classList.add('on');
    try { onData(JSON.parse(ev.data)); } catch (e) { banner(`cannot show this view: ${e.message}`); }
  });
  es.addEventListener('failure', (ev) => { banner(ev.data); es.close(); live.classList.remove('on'); });
  es.addEventListener('error', () => {
    live.classList.remove('on');
    if (es.readyState === EventSource.CLOSED) {
      // A refused stream (401) does not reconnect by itself.
      fetch('/v1/status', { credentials: 'same-origin' }).then((r) => {
        if (r.status === 401) loggedOut(); else banner('The node does not answer; retrying.');
      }).catch(() => banner('The node does not answer; retrying.'));
      setTimeout(() => { if (source === es) route(); }, 2000);
    }
  });
}

// ---- network ----------------------------------------------------------------

function depth(d) { return d ? d.split('/').length : 0; }

function viewNetwork(root) {
  const cards = h('div', { class: 'cards' });
  const tree = h('div');
  const filter = h('select', { id: 'domain-filter' }, h('option', { value: '' }, 'every domain'));
  const nodes = h('div', { id: 'nodes' });
  let last = null;
  filter.addEventListener('change', () => last && draw(last));
  append(root,
    h('h1', {}, 'Network'), cards,
    h('h2', {}, 'Domains'), tree,
    h('h2', {}, 'Nodes'), h('div', { class: 'toolbar' }, h('label', {}, 'Show ', filter)), nodes);

  function draw(d) {
    last = d;
    const st = d.status;
    replace(cards,
      card('This node', peer(st.peer_id)),
      card('Domain', st.domain || '/'),
      card('Capacity', `${num(st.cu)} CU`, `${num(st.per_slot_cu)} CU per slot, measured`),
      card('Slots free', `${st.free_slots} / ${st.slots}`),
      card('Price', price(st.price_micros)),
      card('Peers', `${st.connected} connected, ${st.peers} known`),
      card('Domains known', num(st.domains)),
      card('Reachability', st.reachability || 'unknown'),
      card('Energy', st.energy ? `${num(st.energy)} mJ/CU·s (${st.energy_source})` : 'unknown'));
    const doms = [...d.domains].sort((a, b) => String(a.domain).localeCompare(String(b.domain)));
    replace(tree, table([
      { label: 'domain', get: (r) => `${'  '.repeat(Math.max(0, depth(r.domain) - 1))}${r.domain || '/'}${r.local ? '  (this node)' : ''}` },
      { label: 'nodes', num: true, get: (r) => num(r.nodes) },
      { label: 'free CU', num: true, get: (r) => `${num(r.free_cu)} / ${num(r.total_cu)}` },
      { label: 'free slots', num: true, get: (r) => num(r.free_slots) },
      { label: 'price', get: (r) => `${credits(r.price_min_micros)} – ${credits(r.price_max_micros)}` },
      { label: 'best RTT', num: true, get: (r) => `${r.best_rtt_ms} ms` },
    ], doms, { class: 'tree', empty: 'No domain summaries yet.' }));

    const known = new Set(['']);
    const self = {
      class: 'self', peer_id: st.peer_id, domain: st.domain, cu: st.cu, slots: st.slots, free_slots: st.free_slots,
      price_micros: st.price_micros, energy: st.energy, reputation: null, rtt_ms: null, path: null, labels: [], version: st.version,
      accepting: st.accepting, me: true,
    };
    const rows = [self, ...[...d.peers].sort((a, b) => String(a.domain).localeCompare(String(b.domain)) || a.peer_id.localeCompare(b.peer_id))];
    for (const r of rows) known.add(r.domain || '');
    const want = filter.value;
    if (filter.options.length !== known.size) {
      filter.replaceChildren(h('option', { value: '' }, 'every domain'),
        [...known].filter(Boolean).sort().map((k) => h('option', { value: k }, k)));
      filter.value = want;
    }
    const shown = rows.filter((r) => !filter.value || r.domain === filter.value);
    replace(nodes, table([
      { label: 'node', get: (r) => [peer(r.peer_id), r.me ? h('span', { class: 'muted' }, ' this node') : ''] },
      { label: 'domain', get: (r) => r.domain || '/' },
      { label: 'CU', num: true, get: (r) => num(r.cu) },
      { label: 'free slots', num: true, get: (r) => `${r.free_slots} / ${r.slots}` },
      { label: 'price', num: true, get: (r) => credits(r.price_micros) },
      { label: 'energy', num: true, get: (r) => r.energy ? `${num(r.energy)} mJ/CU·s` : '–' },
      { label: 'reputation', num: true, get: (r) => r.reputation === null || r.reputation === undefined ? '–' : num(r.reputation, 2) },
      { label: 'RTT', num: true, get: (r) => r.rtt_ms === null || r.rtt_ms === undefined ? '–' : `${num(r.rtt_ms, 1)} ms` },
      { label: 'path', get: (r) => r.me ? '–' : (r.path || 'not connected') },
      { label: 'labels', get: (r) => (r.labels || []).map((l) => h('span', { class: 'chip label' }, l)) },
      { label: 'version', get: (r) => h('span', { class: 'mono' }, r.version) },
      { label: 'state', get: (r) => r.banned ? h('span', { class: 'badge bad' }, 'banned') : r.accepting ? h('span', { class: 'badge ok' }, 'accepting') : h('span', { class: 'badge' }, 'not accepting') },
    ], shown, { class: 'nodes' }));
    nodes.dataset.count = String(rows.length);
  }
  stream('network', null, draw);
}

// ---- jobs -------------------------------------------------------------------

const PHASES = ['pending', 'placed', 'running', 'verifying', 'verified', 'failed'];

function progress(counts, total) {
  const bar = h('div', { class: 'progress', title: PHASES.map((p) => `${p} ${counts[p] || 0}`).join(', ') });
  for (const p of ['verified', 'verifying', 'running', 'placed', 'failed']) {
    const n = counts[p] || 0;
    if (n) bar.append(h('span', { class: `ph-${p}`, style: { width: `${(100 * n) / Math.max(1, total)}%` } }));
  }
  return bar;
}

function submitForm(onDone) {
  const status = h('div', { class: 'muted', id: 'submit-status' });
  const f = h('form', { class: 'submit', id: 'submit' },
    h('h3', {}, 'Submit a job'),
    h('label', {}, 'Module (.wasm)', h('input', { type: 'file', name: 'module', id: 'module', accept: '.wasm', required: true })),
    h('label', {}, 'Inputs (one task per file)', h('input', { type: 'file', name: 'inputs', id: 'inputs', multiple: true, required: true })),
    h('label', {}, 'Arguments (space-separated)', h('input', { type: 'text', name: 'args', id: 'args' })),
    h('label', {}, 'Reduce module (optional)', h('input', { type: 'file', name: 'reduce', id: 'reduce', accept: '.wasm' })),
    h('div', { class: 'row' },
      h('label', {}, 'Replicas', h('input', { type: 'number', name: 'replicas', min: 1, max: 16, value: '1' })),
      h('label', {}, 'Max price (credits/CU·s)', h('input', { type: 'text', name: 'max_price', value: '1' }))),
    h('div', { class: 'row' },
      h('label', {}, 'Fuel per task', h('input', { type: 'text', name: 'fuel', value: '10000000000' })),
      h('label', {}, 'Memory per task (MiB)', h('input', { type: 'number', name: 'memory', min: 1, value: '256' }))),
    h('div', { class: 'row' },
      h('label', {}, 'Deadline (s)', h('input', { type: 'number', name: 'deadline', min: 1, value: '60' })),
      h('label', {}, 'Spot-check rate (0–1)', h('input', { type: 'text', name: 'spot_check', value: '0' }))),
    h('label', {}, 'Energy budget (J, optional)', h('input', { type: 'text', name: 'energy_budget' })),
    h('label', {}, 'Latency class', h('select', { name: 'class' },
      h('option', { value: 'batch' }, 'batch: cheapest and fastest'),
      h('option', { value: 'interactive' }, 'interactive: soonest, ahead of batch work'))),
    h('button', { type: 'submit', id: 'submit-button' }, 'Submit'), status);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const btn = f.querySelector('button');
    btn.disabled = true;
    try {
      const fd = new FormData(f);
      const upload = async (file) => {
        replace(status, `uploading ${file.name} (${bytes(file.size)})…`);
        const r = await api('PUT', '/v1/content', file, 'application/octet-stream');
        return r.json();
      };
      const module = await upload(fd.get('module'));
      const reduceFile = fd.get('reduce');
      const reduce = reduceFile && reduceFile.size ? await upload(reduceFile) : null;
      const inputs = [];
      for (const file of document.getElementById('inputs').files) {
        const c = await upload(file);
        inputs.push({ name: file.name, id: c.id, size: c.size });
      }
      inputs.sort((a, b) => a.name.localeCompare(b.name));
      const microsOf = (t) => Math.round(parseFloat(t) * 1e6);
      const spec = {
        module: module.id, module_size: module.size, reduce: reduce ? reduce.id : null, inputs,
        args: String(fd.get('args') || '').split(/\s+/).filter(Boolean), reduce_args: [],
        fuel: Number(fd.get('fuel')), memory: Number(fd.get('memory')) * 1024 * 1024,
        deadline_ms: Number(fd.get('deadline')) * 1000, max_price_micros: microsOf(fd.get('max_price')),
        replicas: Number(fd.get('replicas')), spot_check: parseFloat(fd.get('spot_check')) || 0,
        seed: Math.floor(Math.random() * 2 ** 32), class: fd.get('class') || 'batch',
        energy_budget_j: parseFloat(fd.get('energy_budget')) || null,
      };
      replace(status, 'submitting…');
      const r = await (await api('POST', '/v1/jobs', JSON.stringify({ spec }), 'application/json')).json();
      replace(status, `submitted ${r.id}`);
      onDone(r.id);
    } catch (e) {
      replace(status, h('span', { class: 'err' }, `not submitted: ${e.message}`));
    } finally {
      btn.disabled = false;
    }
  });
  return f;
}

function viewJobs(root) {
  const list = h('div', { id: 'jobs' });
  append(root, h('h1', {}, 'Jobs'),
    h('div', { class: 'cols' }, submitForm((id) => { location.hash = `#jobs/${id}`; }), h('div', {}, list)));
  stream('jobs', null, (d) => {
    const jobs = [...d.jobs].sort((a, b) => b.submitted_at - a.submitted_at);
    replace(list, table([
      { label: 'job', get: (j) => h('span', { class: 'mono', title: j.id }, j.id.slice(0, 12)) },
      { label: 'state', get: (j) => stateBadge(j.state) },
      { label: 'progress', get: (j) => [progress({ verified: j.verified, failed: j.failed }, j.tasks), h('span', { class: 'muted' }, `${j.verified}/${j.tasks}`)] },
      { label: 'submitted', get: (j) => datetime(j.submitted_at) },
      { label: 'error', get: (j) => j.error ? h('span', { class: 'err' }, j.error) : '' },
    ], jobs, { click: (j) => { location.hash = `#jobs/${j.id}`; }, empty: 'No jobs yet: submit one.' }));
  });
}

function stateBadge(state) {
  const cls = { done: 'ok', failed: 'bad', cancelled: 'bad', running: 'warn' }[state] || '';
  return h('span', { class: `badge ${cls}`, 'data-state': state }, state);
}

// Tile outputs of the Mandelbrot example ("MBT1": width, height, x, y,
// tile width, tile height as u32 LE, then one palette index per pixel) are
// drawn as they are verified; a reduced output that is a PNG is shown whole.
const PALETTE = (() => {
  const stops = [[0, 7, 100], [32, 107, 203], [237, 255, 255], [255, 170, 0], [0, 2, 0]];
  const p = [[0, 0, 0]];
  for (let i = 1; i < 256; i++) {
    const pos = i - 1, seg = Math.floor(pos / 51), t = pos % 51;
    const a = stops[seg], b = stops[(seg + 1) % 5];
    p.push([0, 1, 2].map((c) => Math.floor((a[c] * (51 - t) + b[c] * t) / 51)));
  }
  return p;
})();

function tiles() {
  const canvas = h('canvas', { id: 'tiles', width: 1, height: 1 });
  const img = h('img', { id: 'reduced', alt: 'the reduced result' });
  const tilesBox = h('figure', { hidden: true }, canvas, h('figcaption', { class: 'muted' }, 'tiles, drawn as they are verified'));
  const imgBox = h('figure', { hidden: true }, img, h('figcaption', { class: 'muted' }, 'the reduced result'));
  const drawn = new Set();
  const busy = new Set();
  // Tiles asked for while five are being fetched wait here: a view that
  // stops changing (a job done in one step) sends no snapshot to ask again.
  const waiting = new Set();
  let ctx = null;
  async function tile(id) {
    waiting.delete(id);
    if (drawn.has(id) || busy.has(id)) return;
    if (busy.size > 4) { waiting.add(id); return; }
    busy.add(id);
    try {
      const buf = new Uint8Array(await (await api('GET', `/v1/content/${id}`)).arrayBuffer());
      drawn.add(id);
      if (buf.length < 28 || String.fromCharCode(...buf.slice(0, 4)) !== 'MBT1') return;
      const v = new DataView(buf.buffer);
      const [w, hh, x, y, tw, th] = [4, 8, 12, 16, 20, 24].map((o) => v.getUint32(o, true));
      if (w > 16384 || hh > 16384 || buf.length < 28 + tw * th) return;
      if (canvas.width !== w || canvas.height !== hh) { canvas.width = w; canvas.height = hh; ctx = null; }
      ctx = ctx || canvas.getContext('2d');
      tilesBox.hidden = false;
      const im = ctx.createImageData(tw, th);
      for (let i = 0; i < tw * th; i++) {
        const c = PALETTE[buf[28 + i]];
        im.data.set([c[0], c[1], c[2], 255], i * 4);
      }
      ctx.putImageData(im, x, y);
      canvas.dataset.tiles = String(drawn.size);
    } catch (_) { /* a preview is best effort */ } finally {
      busy.delete(id);
      for (const next of [...waiting]) {
        if (busy.size > 4) break;
        tile(next);
      }
    }
  }
  async function reduced(id) {
    if (drawn.has(id) || busy.has(id)) return;
    busy.add(id);
    try {
      const blob = await (await api('GET', `/v1/content/${id}`)).blob();
      const head = new Uint8Array(await blob.slice(0, 8).arrayBuffer());
      drawn.add(id);
      if (head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47) {
        img.src = URL.createObjectURL(new Blob([blob], { type: 'image/png' }));
        imgBox.hidden = false;
      }
    } catch (_) { /* best effort */ } finally { busy.delete(id); }
  }
  return { el: h('div', { class: 'preview' }, tilesBox, imgBox), tile, reduced };
}

function viewJob(root, id) {
  const head = h('div');
  const grid = h('div', { class: 'grid', id: 'grid' });
  const legend = h('div', { class: 'legend' }, PHASES.map((p) => h('span', {}, h('i', { class: `ph-${p}` }), p)));
  const task = h('div', { id: 'task' });
  const providers = h('div');
  const logs = h('div');
  const preview = tiles();
  let cells = [];
  let selected = null;
  let last = null;
  let explain = null;
  let receipts = null;
  append(root, h('p', {}, h('a', { href: '#jobs' }, '← all jobs')), head,
    h('h2', {}, 'Tasks'), legend, grid, task, preview.el,
    h('h2', {}, 'Providers'), providers, h('h2', {}, 'Live logs'), logs);

  async function select(i) {
    selected = i;
    cells.forEach((c, j) => c.classList.toggle('sel', j === i));
    drawTask();
    try {
      if (!explain) explain = await (await api('GET', `/v1/jobs/${id}/explain`)).json();
      if (!receipts || last && last.job.counts.verified + last.job.counts.failed !== receipts.counts.verified + receipts.counts.failed) {
        receipts = await (await api('GET', `/v1/jobs/${id}?receipts=true`)).json();
      }
      drawTask();
    } catch (e) { banner(e.message); }
  }

  function drawTask() {
    if (selected === null || !last) { task.replaceChildren(); return; }
    const t = last.job.tasks[selected];
    if (!t) return;
    const rt = receipts && receipts.tasks[selected];
    const ex = explain && explain.tasks.find((e) => e.index === t.index);
    replace(task,
      h('h3', {}, `Task ${t.index}: `, t.name, ' ', stateBadge(t.phase)),
      h('div', { class: 'cards' },
        card('Verified by', t.providers.length ? t.providers.map((p) => peer(p)) : '–'),
        card('Fuel', num(t.fuel)),
        card('Exit', t.exit || '–'),
        card('Spot-checked', t.spot_checked ? 'yes, re-run here' : 'no'),
        card('Output', t.output ? h('span', { class: 'mono', title: t.output }, short(t.output)) : '–')),
      t.error ? h('p', { class: 'err' }, t.error) : null,
      t.stderr ? [h('h3', {}, 'stderr of a copy that failed'), h('pre', {}, t.stderr)] : null,
      t.reproduce ? [h('h3', {}, 'Run it locally'), h('pre', {}, t.reproduce)] : null,
      h('h3', {}, 'Copies'),
      table([
        { label: 'attempt', num: true, get: (c) => c.attempt },
        { label: 'provider', get: (c) => peer(c.provider) },
        { label: 'state', get: (c) => c.state },
        { label: 'outcome', get: (c) => c.wrong ? h('span', { class: 'badge bad' }, 'wrong') : t.providers.includes(c.provider) && t.phase === 'verified' ? h('span', { class: 'badge ok' }, 'agreed') : c.backup ? 'backup' : '' },
        { label: 'price', num: true, get: (c) => credits(c.price_micros) },
        { label: 'paid', num: true, get: (c) => credits(c.paid_micros) },
        { label: 'fuel', num: true, get: (c) => num(c.fuel) },
        { label: 'run', num: true, get: (c) => ms(c.exec_ms) },
        { label: 'exit', get: (c) => c.exit || '' },
        { label: 'receipt', get: (c) => {
          const r = rt && rt.copies.find((x) => x.attempt === c.attempt && x.provider === c.provider);
          return r && r.receipt ? h('details', {}, h('summary', {}, 'signed receipt'), h('pre', { class: 'receipt' }, r.receipt)) : '';
        } },
      ], t.copies, { empty: 'No copy placed yet.' }),
      h('h3', {}, 'Placement'),
      ex ? ex.decisions.map((d) => h('div', { class: 'decision' },
        h('p', {}, `attempt ${d.attempt} at ${time(d.at)}: `, d.chosen ? ['chose ', peer(d.chosen)] : 'no provider chosen'),
        d.candidates.length ? table([
          { label: 'candidate', get: (c) => peer(c.node) },
          { label: 'score', num: true, get: (c) => num(c.score, 3) },
          { label: 'finish est.', num: true, get: (c) => ms(c.ect_ms) },
          { label: 'wait', num: true, get: (c) => ms(c.wait_ms) },
          { label: 'transfer', num: true, get: (c) => ms(c.transfer_ms) },
          { label: 'run', num: true, get: (c) => ms(c.run_ms) },
          { label: 'RTT', num: true, get: (c) => ms(c.rtt_ms) },
          { label: 'speed', num: true, get: (c) => `${num(c.speed_cu)} CU` },
        ], d.candidates) : null,
        d.excluded.length ? h('p', { class: 'muted' }, 'excluded: ', d.excluded.map(([n, why]) => h('span', { class: 'chip' }, peer(n), ' ', why))) : null,
        d.declined.length ? h('p', { class: 'muted' }, 'declined: ', d.declined.map(([n, why]) => h('span', { class: 'chip' }, peer(n), ' ', why))) : null,
      )) : h('p', { class: 'muted' }, explain ? 'No placement recorded.' : 'loading…'));
  }

  stream('job', id, (d) => {
    last = d;
    const j = d.job;
    replace(head,
      h('h1', {}, 'Job ', h('span', { class: 'mono', id: 'job-id' }, j.id), ' ', stateBadge(j.state),
        j.state === 'running' || j.state === 'pending'
          ? [' ', h('button', { type: 'button', class: 'danger', id: 'cancel', on: { click: async () => {
            if (!confirm('Cancel this job?')) return;
            try { await api('POST', `/v1/jobs/${id}/cancel`); } catch (e) { banner(e.message); }
          } } }, 'Cancel')] : null),
      j.error ? h('p', { class: 'err' }, j.error) : null,
      j.waiting ? h('p', { class: 'muted' }, 'waiting: ', j.waiting) : null,
      h('div', { class: 'cards' },
        card('Verified', `${j.counts.verified} / ${j.total}`),
        card('Running', num(j.counts.running)),
        card('Failed', num(j.counts.failed)),
        card('Wall time', ms(j.wall_ms)),
        card('Spent', credits(j.spent_micros)),
        card('Replicas', num(j.replicas)),
        card('Class', j.class || 'batch'),
        card('Energy', `${num(j.energy_j, 2)} J${j.energy_budget_j ? ` of ${num(j.energy_budget_j, 2)} J` : ''}`),
        card('Spot checks', `${Math.round(j.spot_check * 100)} %`)),
      progress(j.counts, j.total));
    if (!j.tasks.length && j.total) {
      replace(grid, h('span', { class: 'muted' }, `${num(j.total)} tasks: too many to list one by one here; the counts above are live (\`agora job status\` lists them).`));
      cells = [];
    } else if (cells.length !== j.tasks.length) {
      cells = j.tasks.map((t, i) => h('button', { type: 'button', class: 'cell', 'data-index': i, on: { click: () => select(i) } }));
      replace(grid, cells);
    }
    j.tasks.forEach((t, i) => {
      const c = cells[i];
      const cls = `cell ph-${t.phase}${i === selected ? ' sel' : ''}`;
      if (c.className !== cls) c.className = cls;
      c.dataset.phase = t.phase;
      c.title = `${t.name}: ${t.phase}${t.providers.length ? ` (${t.providers.map(short).join(', ')})` : ''}`;
      if (t.output && i < 4096) preview.tile(t.output);
    });
    grid.dataset.verified = String(j.counts.verified);
    if (j.reduced) preview.reduced(j.reduced);
    replace(providers, table([
      { label: 'provider', get: (p) => peer(p.peer_id) },
      { label: 'running', num: true, get: (p) => p.running },
      { label: 'verified', num: true, get: (p) => p.verified },
      { label: 'failed', num: true, get: (p) => p.failed },
      { label: 'paid', num: true, get: (p) => credits(p.paid_micros) },
    ], j.providers, { empty: 'No provider yet.' }));
    const copies = d.logs.copies.filter((c) => selected === null || c.task === selected);
    replace(logs, copies.length
      ? copies.map((c) => [h('div', { class: 'muted' }, `task ${c.task}, attempt ${c.attempt}, `, peer(c.provider), ` (bytes ${c.start}–${c.end})`), h('pre', {}, c.text)])
      : h('div', { class: 'empty' }, selected === null ? 'No task has written to stderr.' : 'This task has written nothing to stderr.'));
    drawTask();
  });
}

// ---- this machine -------------------------------------------------------------

function meter(label, used, limit, text) {
  const frac = limit > 0 ? Math.min(1, used / limit) : 0;
  return h('div', { class: 'meter' }, h('span', {}, label),
    h('div', { class: `bar${used > limit ? ' over' : ''}` }, h('span', { style: { width: `${(frac * 100).toFixed(1)}%` } })),
    h('span', { class: 'muted' }, text));
}

function earnedChart(entries) {
  const pts = entries.filter((e) => e.kind === 'received').sort((a, b) => a.at - b.at);
  if (!pts.length) return h('div', { class: 'empty' }, 'Nothing earned yet.');
  let sum = 0;
  const series = pts.map((e) => { sum += e.amount_micros; return [e.at, sum]; });
  const t0 = series[0][0], t1 = Math.max(series[series.length - 1][0], t0 + 1);
  const W = 1200, H = 220, L = 70, B = 22, T = 10;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - 10);
  const y = (v) => H - B - (v / sum) * (H - B - T);
  const line = [[t0, 0], ...series].map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, id: 'earned' },
    s('line', { class: 'axis', x1: L, y1: H - B, x2: W - 10, y2: H - B }),
    s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }),
    s('polygon', { class: 'area', points: `${x(t0)},${y(0)} ${line} ${x(t1)},${y(0)}` }),
    s('polyline', { class: 'line', points: line }),
    s('text', { x: 4, y: T + 10 }, credits(sum)),
    s('text', { x: 4, y: H - B }, '0'),
    s('text', { x: L, y: H - 6 }, datetime(t0)),
    s('text', { x: W - 10, y: H - 6, 'text-anchor': 'end' }, datetime(t1)));
}

function viewMachine(root) {
  const top = h('div');
  const usage = h('div');
  const running = h('div');
  const recent = h('div');
  const chart = h('div');
  const days = h('div');
  append(root, h('h1', {}, 'This machine'), top, h('h2', {}, 'Use against your limits'), usage,
    h('h2', {}, 'Running and waiting here'), running, h('h2', {}, 'Credits earned'), chart, days,
    h('h2', {}, 'Recent tasks'), recent);
  stream('machine', null, (d) => {
    const st = d.status, o = d.owner;
    const act = async (path) => { try { await api('POST', path); } catch (e) { banner(e.message); } };
    replace(top,
      h('div', { class: 'toolbar' },
        o.accepting ? h('span', { class: 'badge ok', id: 'providing' }, 'taking work') : h('span', { class: 'badge warn', id: 'providing' }, 'not taking work'),
        o.not_accepting ? h('span', { class: 'muted' }, o.not_accepting) : null,
        o.paused
          ? h('button', { type: 'button', id: 'resume', on: { click: () => act('/v1/owner/resume') } }, 'Resume providing')
          : h('button', { type: 'button', id: 'pause', class: 'danger', on: { click: () => act('/v1/owner/pause') } }, 'Pause providing')),
      h('div', { class: 'cards' },
        card('Running', num(o.running)),
        card('Queued', num(o.queued - o.running)),
        card('Suspended', num(o.suspended)),
        card('Slots', `${st.free_slots} free of ${st.slots}`),
        card('Balance', credits(st.balance_micros)),
        card('Load of other programs', `${(st.load / 10).toFixed(1)} %`),
        card('Node memory', bytes(st.rss_bytes))),
      o.limits_in_words.length ? h('p', {}, 'Limits: ', o.limits_in_words.map((w) => h('span', { class: 'chip' }, w))) : h('p', { class: 'muted' }, 'No limits set (`agora owner set` sets them).'),
      o.held_by ? h('p', { class: 'err' }, `held by ${o.held_by}`) : null,
      o.unavailable.length ? h('p', { class: 'muted' }, 'cannot read: ', o.unavailable.join('; ')) : null);
    const cores = navigator.hardwareConcurrency || 1;
    const maxCpu = o.limits && o.limits.max_cpu ? o.limits.max_cpu : st.slots * st.cpu_share;
    replace(usage,
      meter('CPU for tasks', o.running * st.cpu_share, maxCpu, `${(o.running * st.cpu_share).toFixed(2)} of ${Number(maxCpu).toFixed(2)} cores (machine: ${cores})`),
      meter('Memory for tasks', o.running * st.memory, st.slots * st.memory, `${bytes(o.running * st.memory)} of ${bytes(st.slots * st.memory)}`),
      meter('Slots', st.slots - st.free_slots, st.slots, `${st.slots - st.free_slots} of ${st.slots} busy`));
    replace(running, table([
      { label: 'task', get: (t) => h('span', { class: 'mono' }, t.task) },
      { label: 'stage', get: (t) => [t.stage, t.suspended ? h('span', { class: 'badge warn' }, ' suspended') : ''] },
      { label: 'requester', get: (t) => peer(t.requester) },
      { label: 'price', num: true, get: (t) => credits(t.price_micros) },
      { label: 'fuel limit', num: true, get: (t) => num(t.fuel) },
      { label: 'memory', num: true, get: (t) => bytes(t.memory) },
      { label: 'due', get: (t) => time(t.due) },
    ], o.tasks || [], { empty: 'Nothing runs here now.' }));
    replace(chart, earnedChart(d.ledger.entries));
    replace(days, table([
      { label: 'day (UTC)', get: (x) => x.date },
      { label: 'tasks', num: true, get: (x) => num(x.tasks_run) },
      { label: 'failed', num: true, get: (x) => num(x.tasks_failed) },
      { label: 'CU·s given', num: true, get: (x) => num(x.cu_s, 1) },
      { label: 'earned', num: true, get: (x) => credits(x.earned_micros) },
      { label: 'declined', get: (x) => Object.entries(x.declined || {}).map(([k, n]) => h('span', { class: 'chip' }, `${k}: ${n}`)) },
    ], d.history.days.filter((x) => x.tasks_run || x.earned_micros || Object.keys(x.declined || {}).length), { empty: 'No day with work yet.' }));
    replace(recent, table([
      { label: 'when', get: (t) => time(t.at) },
      { label: 'task', get: (t) => h('span', { class: 'mono' }, typeof t.task === 'string' ? t.task : JSON.stringify(t.task)) },
      { label: 'requester', get: (t) => peer(t.requester) },
      { label: 'fuel', num: true, get: (t) => num(t.fuel) },
      { label: 'run', num: true, get: (t) => ms(t.run_ms) },
      { label: 'exit', get: (t) => t.exit },
      { label: 'price', num: true, get: (t) => credits(t.price_micros !== undefined ? t.price_micros : t.price) },
    ], d.history.tasks, { empty: 'No task run here yet.' }));
  });
}

// ---- ledger -------------------------------------------------------------------

function viewLedger(root) {
  const top = h('div');
  const rows = h('div');
  append(root, h('h1', {}, 'Ledger'), top, h('h2', {}, 'Entries, newest first'), rows);
  stream('ledger', null, (d) => {
    const l = d.ledger;
    replace(top, h('div', { class: 'cards' },
      card('Balance', h('span', { id: 'balance' }, credits(l.balance_micros))),
      card('Granted', credits(l.granted_micros)),
      card('Received', credits(l.received_micros)),
      card('Paid', credits(l.paid_micros)),
      card('Chain length', num(l.seq)),
      card('Head', h('span', { class: 'mono', title: l.head }, short(l.head))),
      card('Awaiting countersignature', num(l.outbox))));
    replace(rows, table([
      { label: 'seq', num: true, get: (e) => e.seq },
      { label: 'when', get: (e) => datetime(e.at) },
      { label: 'kind', get: (e) => e.kind },
      { label: 'amount', num: true, get: (e) => `${e.kind === 'paid' ? '−' : '+'}${credits(e.amount_micros)}` },
      { label: 'counterparty', get: (e) => peer(e.counterparty) },
      { label: 'task', get: (e) => h('span', { class: 'mono' }, e.task || '') },
      { label: 'fuel', num: true, get: (e) => num(e.fuel) },
      { label: 'block', get: (e) => h('span', { class: 'mono', title: e.block }, short(e.block)) },
    ], l.entries, { class: 'ledger', empty: 'No entries yet.' }));
  });
}

// ---- routing --------------------------------------------------------------------

function route() {
  const root = document.getElementById('view');
  root.replaceChildren();
  const [view, arg] = (location.hash.replace(/^#/, '') || 'network').split('/');
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.view === view);
  document.body.dataset.view = view;
  if (view === 'jobs' && arg) viewJob(root, arg);
  else if (view === 'jobs') viewJobs(root);
  else if (view === 'machine') viewMachine(root);
  else if (view === 'ledger') viewLedger(root);
  else viewNetwork(root);
}

window.addEventListener('hashchange', route);
window.addEventListener('error', (e) => banner(`The dashboard failed: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => banner(`The dashboard failed: ${e.reason && e.reason.message || e.reason}`));
window.addEventListener('DOMContentLoaded', async () => {
  document.getElementById('logout').addEventListener('click', async () => {
    try { await api('POST', '/v1/dashboard/logout'); } catch (_) { /* gone anyway */ }
    if (source) source.close();
    loggedOut();
  });
  try {
    const st = await (await api('GET', '/v1/status')).json();
    replace(document.getElementById('me'), `${st.domain || '/'}  `, peer(st.peer_id), `  ${st.version}`);
    document.title = `Agora: ${short(st.peer_id)}`;
  } catch (_) { /* the banner says why */ }
  route();
});
