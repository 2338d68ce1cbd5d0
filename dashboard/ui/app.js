// inferd's dashboard: polls the node's status endpoints and draws them. Plain DOM and canvas,
// no library; every request goes to the origin the page came from.
'use strict';
(() => {
  const TOKEN_KEY = 'inferd-token';
  const STATUS_EVERY_MS = 1000;
  const HISTORY_EVERY_MS = 2000;
  const COLORS = ['#1565c0', '#c62828', '#2e7d32', '#6a1b9a', '#ef6c00', '#00838f', '#5d4037', '#ad1457'];
  const $ = (sel) => document.querySelector(sel);
  let token = sessionStorage.getItem(TOKEN_KEY) || '';

  // el builds an element; children are nodes or text (never parsed as HTML).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
    return e;
  }
  const badge = (text) => el('span', {class: 'badge ' + text}, text);
  const num = (x, digits = 1) => (x == null ? '–' : Number(x).toFixed(digits));
  const ms = (x) => (x == null ? '–' : (x < 10 ? x.toFixed(2) : x.toFixed(1)) + ' ms');
  const gib = (b) => (b / 1073741824).toFixed(1) + ' GiB';
  function ago(t) {
    const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
    if (s < 60) return Math.round(s) + 's ago';
    if (s < 3600) return Math.round(s / 60) + 'm ago';
    if (s < 172800) return Math.round(s / 3600) + 'h ago';
    return Math.round(s / 86400) + 'd ago';
  }
  function uptime(s) {
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 172800) return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd' + Math.floor((s % 86400) / 3600) + 'h';
  }
  function gauge(percent, title) {
    const m = el('meter', {min: 0, max: 100, low: 70, high: 90, optimum: 0, value: percent == null ? 0 : percent, title});
    return el('span', {}, m, ' ', percent == null ? '–' : Math.round(percent) + '%');
  }

  class AuthError extends Error {}

  async function get(path) {
    const headers = token ? {Authorization: 'Bearer ' + token} : {};
    const r = await fetch(path, {headers, cache: 'no-store'});
    if (r.status === 401 || r.status === 403) {
      const body = await r.json().catch(() => ({}));
      throw new AuthError(r.status + ': ' + (body.error || r.statusText));
    }
    if (!r.ok) throw new Error(path + ' answered ' + r.status);
    return r.json();
  }

  function showAuth(message) {
    $('#auth').hidden = false;
    $('#auth-message').textContent = message;
    $('#node-state').className = 'badge unavailable';
    $('#node-state').textContent = 'needs a token';
  }

  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('#token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#auth').hidden = true;
    pollStatus();
    pollHistory();
  });

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function renderNodes(cluster) {
    const rows = cluster.nodes.map((m) => {
      const row = el('tr', {'data-node': m.name});
      const name = m.local ? m.name + ' (this page)' : m.name;
      if (!m.reachable || !m.status) {
        row.append(el('td', {}, name), el('td', {}, badge('unreachable')), el('td', {colSpan: 5}, ''),
          el('td', {class: 'wrap'}, m.error || ''));
        return row;
      }
      const n = m.status.node, hw = m.status.hardware;
      const gpus = el('td', {});
      for (const g of hw.gpus || []) {
        const mem = g.memory_total_bytes ? 100 * g.memory_used_bytes / g.memory_total_bytes : 0;
        gpus.append(el('div', {'data-gpu': g.index}, 'GPU ' + g.index + ' ', gauge(g.utilization_percent, 'utilization'),
          ' mem ', gauge(mem, 'memory used'), g.problem ? ' LOST: ' + g.problem : ''));
      }
      if (!(hw.gpus || []).length) gpus.append(hw.gpu_note || 'none');
      row.append(el('td', {}, name), el('td', {}, badge(n.state)), el('td', {}, n.version), el('td', {}, uptime(n.uptime_seconds)),
        el('td', {}, gauge(hw.cpu.utilization_percent, hw.cpu.threads + ' threads')),
        el('td', {}, gib(hw.memory.available_bytes) + ' of ' + gib(hw.memory.total_bytes)), gpus,
        el('td', {class: 'wrap'}, n.reason || ''));
      return row;
    });
    replaceRows($('#nodes tbody'), rows);
  }

  function renderModels(cluster) {
    const rows = [];
    let rps = 0, eps = 0, ready = 0, total = 0;
    for (const m of cluster.nodes) {
      if (!m.status) continue;
      for (const r of m.status.models) {
        rps += r.requests_per_second;
        eps += r.errors_per_second;
        total++;
        if (r.state === 'ready') ready++;
        const load = r.last_load ? el('span', {}, badge(r.last_load.result), ' ' + ago(r.last_load.at) + (r.last_load.error ? ': ' + r.last_load.error : '')) : '–';
        rows.push(el('tr', {'data-model': r.model, 'data-version': r.version, 'data-node': m.name},
          el('td', {}, r.model), el('td', {}, r.version), el('td', {}, m.name), el('td', {}, badge(r.state)),
          el('td', {class: 'num'}, r.weight_percent == null ? '–' : r.weight_percent + '%'),
          el('td', {}, r.execution_provider || '–'), el('td', {class: 'num'}, r.instances),
          el('td', {class: 'num'}, r.queue_depth), el('td', {class: 'num'}, num(r.batch_size)),
          el('td', {class: 'num'}, num(r.requests_per_second)), el('td', {class: 'num'}, ms(r.p50_ms)),
          el('td', {class: 'num'}, ms(r.p99_ms)), el('td', {class: 'num'}, r.errors), el('td', {class: 'wrap'}, load)));
      }
    }
    replaceRows($('#models tbody'), rows);
    $('#throughput').textContent = rps.toFixed(1);
    $('#errors').textContent = eps.toFixed(2);
    $('#versions-ready').textContent = ready + ' / ' + total;
  }

  function renderRollouts(cluster) {
    const local = cluster.nodes.find((m) => m.local && m.status) || cluster.nodes.find((m) => m.status);
    const rs = (local && local.status.rollouts) || [];
    $('#rollouts-section').hidden = rs.length === 0;
    replaceRows($('#rollouts tbody'), rs.map((r) => el('tr', {'data-rollout': r.model},
      el('td', {}, r.model), el('td', {}, badge(r.phase)), el('td', {class: 'num'}, r.step),
      el('td', {}, r.stable + ' → ' + r.canary),
      el('td', {}, el('progress', {max: 100, value: r.canary_weight}), ' ' + r.canary_weight + '%'),
      el('td', {class: 'wrap'}, r.reason || ''))));
  }

  function renderEvents(cluster) {
    const all = [];
    for (const m of cluster.nodes) {
      for (const e of (m.status && m.status.events) || []) all.push([m.name, e]);
    }
    all.sort((a, b) => new Date(b[1].time) - new Date(a[1].time));
    $('#events').replaceChildren(...all.slice(0, 50).map(([node, e]) => {
      const about = [e.model, e.version, e.node && 'node ' + e.node].filter(Boolean).join(' ');
      return el('li', {'data-kind': e.kind}, el('time', {dateTime: e.time, title: e.time}, new Date(e.time).toLocaleTimeString()),
        badge(e.level), ' ', node + ': ', el('b', {}, e.kind), about ? ' ' + about + ' — ' : ' — ', e.message);
    }));
  }

  function render(cluster) {
    const local = cluster.nodes.find((m) => m.local) || cluster.nodes[0];
    const st = local && local.status;
    $('#node-name').textContent = cluster.node;
    const state = st ? st.node.state : 'unreachable';
    $('#node-state').className = 'badge ' + state;
    $('#node-state').textContent = state;
    $('#node-reason').textContent = (st && st.node.reason) || '';
    const readyNodes = cluster.nodes.filter((m) => m.status && m.status.node.ready).length;
    $('#nodes-ready').textContent = readyNodes + ' / ' + cluster.nodes.length;
    renderNodes(cluster);
    renderModels(cluster);
    renderRollouts(cluster);
    renderEvents(cluster);
    $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  // drawChart draws lines of [t, value] points on a canvas: time along the last span seconds,
  // values from 0 to the largest.
  function drawChart(canvas, lines, unit, spanSeconds) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * dpr;
    canvas.height = h * dpr;
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);
    const left = 48, right = 8, top = 8, bottom = 18;
    const now = Date.now(), t0 = now - spanSeconds * 1000;
    let vmax = 0;
    for (const l of lines) for (const [, v] of l.points) if (v != null) vmax = Math.max(vmax, v);
    vmax = vmax > 0 ? vmax * 1.1 : 1;
    const x = (t) => left + (w - left - right) * (t - t0) / (now - t0);
    const y = (v) => top + (h - top - bottom) * (1 - v / vmax);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#6b6f73';
    g.strokeStyle = '#e4e4df';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = vmax * i / 4, yy = y(v);
      g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
      g.fillText((v >= 100 ? v.toFixed(0) : v.toPrecision(2)) + (i === 4 ? ' ' + unit : ''), 2, yy + 4);
    }
    for (let m = 0; m <= spanSeconds / 60; m += 5) {
      const xx = x(now - m * 60000);
      g.fillText(m === 0 ? 'now' : '-' + m + 'm', xx - 12, h - 4);
    }
    g.lineWidth = 1.5;
    for (const l of lines) {
      g.strokeStyle = l.color;
      g.setLineDash(l.dashed ? [4, 3] : []);
      g.beginPath();
      let pen = false;
      for (const [t, v] of l.points) {
        if (v == null || t < t0) { pen = false; continue; }
        if (pen) g.lineTo(x(t), y(v)); else g.moveTo(x(t), y(v));
        pen = true;
      }
      g.stroke();
      if (l.points.length < 60) {
        // A young series is a few pixels wide at this scale: mark its points.
        g.fillStyle = l.color;
        for (const [t, v] of l.points) if (v != null && t >= t0) g.fillRect(x(t) - 1.5, y(v) - 1.5, 3, 3);
      }
    }
  }

  function chartBox(id, title, lines) {
    let box = document.getElementById(id);
    if (!box) {
      box = el('div', {class: 'chart', id}, el('h3', {}, title), el('canvas', {}), el('div', {class: 'legend'}));
      $('#charts').append(box);
    }
    box.querySelector('.legend').replaceChildren(...lines.map((l) => {
      const sw = el('span', {class: 'swatch'});
      sw.style.background = l.color;
      return el('span', {}, sw, l.label);
    }));
    return box.querySelector('canvas');
  }

  function renderHistory(h) {
    $('#charts-node').textContent = 'on ' + h.node;
    const byModel = new Map();
    for (const s of h.series) {
      if (!byModel.has(s.model)) byModel.set(s.model, []);
      byModel.get(s.model).push(s);
    }
    const span = 15 * 60;
    const pts = (s, key) => s.points.map((p) => [new Date(p.t).getTime(), p[key]]);
    for (const [model, series] of byModel) {
      const color = (i) => COLORS[i % COLORS.length];
      const tput = series.map((s, i) => ({label: 'v' + s.version, color: color(i), points: pts(s, 'rps')}));
      drawChart(chartBox('chart-rps-' + model, model + ': requests/s', tput), tput, 'req/s', span);
      const lat = [];
      series.forEach((s, i) => {
        lat.push({label: 'v' + s.version + ' p50', color: color(i), points: pts(s, 'p50_ms')});
        lat.push({label: 'v' + s.version + ' p99', color: color(i), dashed: true, points: pts(s, 'p99_ms')});
      });
      drawChart(chartBox('chart-latency-' + model, model + ': latency p50 / p99', lat), lat, 'ms', span);
      const qb = [];
      series.forEach((s, i) => {
        qb.push({label: 'v' + s.version + ' queue', color: color(i), points: pts(s, 'queue')});
        qb.push({label: 'v' + s.version + ' batch', color: color(i), dashed: true, points: pts(s, 'batch')});
      });
      drawChart(chartBox('chart-queue-' + model, model + ': queue depth / batch size', qb), qb, '', span);
    }
  }

  let statusTimer = 0, historyTimer = 0;
  async function pollStatus() {
    clearTimeout(statusTimer);
    try {
      render(await get('/v2/status?cluster=1'));
      $('#error').hidden = true;
    } catch (e) {
      if (e instanceof AuthError) { showAuth(e.message); return; }
      $('#error').hidden = false;
      $('#error').textContent = 'status: ' + e.message;
    }
    statusTimer = setTimeout(pollStatus, STATUS_EVERY_MS);
  }
  async function pollHistory() {
    clearTimeout(historyTimer);
    try {
      renderHistory(await get('/v2/status/history'));
    } catch (e) {
      if (e instanceof AuthError) return;
    }
    historyTimer = setTimeout(pollHistory, HISTORY_EVERY_MS);
  }
  pollStatus();
  pollHistory();
})();
