// The live dashboard: a client of the public API like any other. It keeps
// one change stream per kind open (snapshot first, then changes; resumed
// from the last entityVersion after a disconnect), holds a compact record
// of every entity, and renders the view in the URL at most once per frame.
'use strict';

const KINDS = {
  task: { plural: 'tasks', arn: 'taskARN' },
  instance: { plural: 'instances', arn: 'containerInstanceARN' },
  service: { plural: 'services', arn: 'serviceARN' },
};
// The streams the page follows: one per kind, and the tasks the API calls
// failed (its `failed` filter: the rule lives in the service, not here).
const FEEDS = {
  task: { kind: 'task' },
  instance: { kind: 'instance' },
  service: { kind: 'service' },
  failed: { kind: 'task', filter: 'failed=true' },
};
const PAGE = 100;

const state = {
  token: sessionStorage.getItem('css-token') || '',
  stores: { task: new Map(), instance: new Map(), service: new Map(), failed: new Map() },
  feeds: {},
  changed: new Set(),
  panel: null,
  started: false,
  // The values each task filter accepts, as the API's OpenAPI document
  // lists them (`x-values`): the lists live in the service, not here.
  values: {},
  // The tasks view "as of" a past moment (`at=`): pages read from the API,
  // which answers the list as it was then ({ key, page, items, tokens, … }).
  past: null,
  // The service page's timeline, read from the API ({ key, items, … }).
  timeline: null,
};

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const last = (arn) => String(arn || '').split('/').pop();
const clusterName = (arn) => last(arn);
// Where an entity is: the account and region of its (cluster's) ARN,
// `arn:PARTITION:ecs:REGION:ACCOUNT:…`.
const placeOf = (arn) => { const p = String(arn || '').split(':'); return { region: p[3] || '', account: p[4] || '' }; };
const inPlace = (arn, f) => { const p = placeOf(arn); return (!f.account || p.account === f.account) && (!f.region || p.region === f.region); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function headers() {
  const h = {};
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  return h;
}

class Unauthorized extends Error {}

async function api(path) {
  const res = await fetch(path, { headers: headers() });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) {
    const e = new Error(path + ': ' + res.status);
    e.response = res;
    throw e;
  }
  return res.json();
}

// ---- token ------------------------------------------------------------

function askToken(message) {
  for (const f of Object.values(state.feeds)) f.stop();
  state.feeds = {};
  for (const s of Object.values(state.stores)) s.clear();
  state.started = false;
  $('#view').hidden = true;
  $('#view').innerHTML = '';
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#token').focus();
}

$('#login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.token = $('#token').value.trim();
  sessionStorage.setItem('css-token', state.token);
  start();
});

// ---- streams ----------------------------------------------------------

function compact(kind, e) {
  if (kind !== 'task') return e;
  return {
    taskARN: e.taskARN, clusterARN: e.clusterARN, lastStatus: e.lastStatus, desiredStatus: e.desiredStatus,
    group: e.group, launchType: e.launchType, taskDefinitionARN: e.taskDefinitionARN,
    containerInstanceARN: e.containerInstanceARN, startedAt: e.startedAt, stoppedAt: e.stoppedAt,
    stopCode: e.stopCode,
  };
}

class Feed {
  constructor(name) {
    this.name = name;
    this.kind = FEEDS[name].kind;
    this.filter = FEEDS[name].filter ? '&' + FEEDS[name].filter : '';
    this.last = 0; // entityVersion seen last
    this.ready = false; // snapshot received
    this.state = 'connecting';
    this.abort = null;
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
    if (this.abort) this.abort.abort();
  }

  async run() {
    let backoff = 500;
    while (!this.stopped) {
      const plural = KINDS[this.kind].plural;
      const url = this.last
        ? `/v1/stream/${plural}?entityVersion=${this.last + 1}&heartbeat=10${this.filter}`
        : `/v1/stream/${plural}?snapshot=true&heartbeat=10${this.filter}`;
      this.abort = new AbortController();
      try {
        const res = await fetch(url, { headers: headers(), signal: this.abort.signal });
        if (res.status === 401) { askToken('The token was not accepted.'); return; }
        if (res.status === 410) { this.reset(); continue; } // history gone: load again
        if (!res.ok) throw new Error('stream ' + res.status);
        this.setState('connected');
        backoff = 500;
        await this.read(res.body.getReader());
      } catch (e) {
        if (this.stopped) return;
      }
      this.setState('reconnecting');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 4000);
    }
  }

  reset() {
    this.last = 0;
    this.ready = false;
    state.stores[this.name].clear();
    schedule();
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) this.handle(JSON.parse(line));
      }
    }
  }

  handle(item) {
    if (item.bookmark) {
      this.last = Math.max(this.last, Number(item.bookmark.entityVersion));
      this.ready = true;
    } else if (item.error) {
      // Cut (too slow, expired): resume where the server says.
      this.last = Math.max(0, Number(item.error.resumeFrom) - 1);
      if (item.error.code === 'Expired') this.reset();
      throw new Error(item.error.code);
    } else {
      const v = Number(item.metadata.entityVersion);
      this.last = Math.max(this.last, v);
      const arn = item.entity[KINDS[this.kind].arn];
      const store = state.stores[this.name];
      if (item.metadata.deleted) store.delete(arn);
      else store.set(arn, compact(this.kind, item.entity));
      state.changed.add(arn);
    }
    schedule();
  }

  setState(s) {
    this.state = s;
    schedule();
  }
}

// ---- rendering --------------------------------------------------------

let frame = 0;
function schedule() {
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
}

function route() {
  const hash = location.hash.replace(/^#\/?/, '') || 'overview';
  const [view, query] = hash.split('?');
  return { view: KNOWN_VIEWS.includes(view) ? view : 'overview', params: new URLSearchParams(query || '') };
}
const KNOWN_VIEWS = ['overview', 'services', 'service', 'tasks', 'instances'];

function setParams(view, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  location.hash = '#/' + view + (s ? '?' + s : '');
}

function renderConn() {
  const feeds = Object.values(state.feeds);
  const el = $('#conn');
  const down = feeds.some((f) => f.state !== 'connected');
  const s = !feeds.length ? 'connecting' : down ? (feeds.some((f) => f.state === 'reconnecting') ? 'reconnecting' : 'connecting') : 'connected';
  const version = Math.max(0, ...feeds.map((f) => f.last));
  el.dataset.state = s;
  el.dataset.version = String(version);
  const loading = feeds.some((f) => !f.ready);
  $('#conn-text').textContent = `${s}${loading && s === 'connected' ? ' (loading)' : ''} · entityVersion ${version}`;
}

function render() {
  renderConn();
  if (!state.started) return;
  const { view, params } = route();
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // Controls are replaced only when they change and hold no focus (a
  // half-typed filter is never lost); the content below them at each change.
  const [controls, content] = VIEWS[view](params);
  const main = $('#view');
  const key = view + '?' + params.toString();
  if (main.dataset.key !== key) {
    main.innerHTML = '<div id="controls"></div><div id="content"></div>';
    main.dataset.key = key;
  }
  const c = $('#controls'), body = $('#content');
  let rebound = false;
  if (c.dataset.html !== controls && !c.contains(document.activeElement)) {
    c.innerHTML = controls;
    c.dataset.html = controls;
    rebound = true;
  }
  if (body.dataset.html !== content) {
    body.innerHTML = content;
    body.dataset.html = content;
    for (const el of body.querySelectorAll('[data-arn]')) {
      if (state.changed.has(el.dataset.arn)) el.classList.add('changed');
    }
    rebound = true;
  }
  if (rebound) bind(view, params);
  state.changed.clear();
  renderPanel();
}

function statusTag(s) {
  return `<span class="status s-${esc(s)}">${esc(s || '—')}</span>`;
}

function bar(used, total, label) {
  const pct = total > 0 ? Math.max(0, Math.min(100, (100 * used) / total)) : 0;
  return `<div class="bar" role="img" aria-label="${esc(label)}: ${used} of ${total} used"><span style="width:${pct.toFixed(1)}%"></span></div><span class="bar-label">${esc(label)}: ${used} / ${total} used</span>`;
}

function resource(list, name) {
  const r = (list || []).find((x) => x.name === name);
  return r ? Number(r.value) || 0 : 0;
}

function countBy(items, key) {
  const out = {};
  for (const i of items) out[key(i)] = (out[key(i)] || 0) + 1;
  return out;
}

function serviceOf(t) {
  return t.group && t.group.startsWith('service:') ? t.group.slice(8) : '';
}

function primary(s) {
  return (s.deployments || []).find((d) => d.status === 'PRIMARY');
}

function clusters() {
  const set = new Set();
  for (const s of Object.values(state.stores)) for (const e of s.values()) set.add(e.clusterARN);
  return [...set].sort();
}

const VIEWS = {
  overview(p) {
    const f = { account: p.get('account') || '', region: p.get('region') || '' };
    const controls = `<div class="filters">${placeSelects(f)}</div>`;
    const byCluster = new Map(clusters().filter((c) => inPlace(c, f)).map((c) => [c, { tasks: [], instances: [], services: [] }]));
    const add = (e, list) => { const c = byCluster.get(e.clusterARN); if (c) c[list].push(e); };
    for (const t of state.stores.task.values()) add(t, 'tasks');
    for (const i of state.stores.instance.values()) add(i, 'instances');
    for (const s of state.stores.service.values()) add(s, 'services');
    if (!byCluster.size) return [controls, `<p class="empty">No clusters are known${f.account || f.region ? ' here' : ' yet'}.</p>`];
    const hourAgo = Date.now() - 3600e3;
    const cards = [...byCluster].map(([arn, c]) => {
      const name = clusterName(arn);
      const tasks = countBy(c.tasks, (t) => t.lastStatus);
      const inst = countBy(c.instances, (i) => `${i.status}, agent ${i.agentConnected ? 'connected' : 'disconnected'}`);
      const rollouts = countBy(c.services, (s) => (primary(s) || {}).rolloutState || 'none');
      const failed = c.tasks.filter((t) => state.stores.failed.has(t.taskARN) && t.stoppedAt && Date.parse(t.stoppedAt) >= hourAgo).length;
      let cpu = [0, 0], mem = [0, 0];
      for (const i of c.instances) {
        cpu = [cpu[0] + resource(i.registeredResources, 'CPU') - resource(i.remainingResources, 'CPU'), cpu[1] + resource(i.registeredResources, 'CPU')];
        mem = [mem[0] + resource(i.registeredResources, 'MEMORY') - resource(i.remainingResources, 'MEMORY'), mem[1] + resource(i.registeredResources, 'MEMORY')];
      }
      const dl = (o, link) => Object.keys(o).sort().map((k) => `<dt>${link ? `<a href="${link(k)}">${statusTag(k)}</a>` : esc(k)}</dt><dd data-count="${esc(k)}">${o[k]}</dd>`).join('');
      const enc = encodeURIComponent;
      const where = placeOf(arn);
      const here = `&account=${enc(where.account)}&region=${enc(where.region)}`;
      return [where, `<section class="card" data-cluster="${esc(name)}" data-cluster-arn="${esc(arn)}" aria-label="Cluster ${esc(name)}">
        <h4><a href="#/tasks?cluster=${enc(name)}${here}">${esc(name)}</a></h4>
        <dl class="tasks" aria-label="Tasks by status"><dt>tasks</dt><dd data-total="tasks">${c.tasks.length}</dd>${dl(tasks, (k) => `#/tasks?cluster=${enc(name)}${here}&status=${enc(k)}`)}</dl>
        <dl class="instances" aria-label="Container instances"><dt>instances</dt><dd data-total="instances">${c.instances.length}</dd>${dl(inst)}</dl>
        <dl class="services" aria-label="Services by rollout"><dt>services</dt><dd data-total="services">${c.services.length}</dd>${dl(rollouts)}</dl>
        <dl><dt>failed in the last hour</dt><dd data-total="failed">${failed}</dd></dl>
        ${bar(cpu[0], cpu[1], 'CPU')}${bar(mem[0], mem[1], 'Memory')}
      </section>`];
    });
    // Grouped by account, then region (the clusters are in ARN order,
    // which is region, then account: regroup).
    const groups = new Map();
    for (const [where, card] of cards) {
      if (!groups.has(where.account)) groups.set(where.account, new Map());
      const regions = groups.get(where.account);
      if (!regions.has(where.region)) regions.set(where.region, []);
      regions.get(where.region).push(card);
    }
    const html = [...groups].sort(([a], [b]) => a.localeCompare(b)).map(([account, regions]) =>
      `<section class="account" data-account="${esc(account)}" aria-label="Account ${esc(account)}"><h2>Account ${esc(account)}</h2>${
        [...regions].sort(([a], [b]) => a.localeCompare(b)).map(([region, list]) =>
          `<section class="region" data-region="${esc(region)}" aria-label="Region ${esc(region)}"><h3>${esc(region)}</h3><div class="cards">${list.join('')}</div></section>`).join('')
      }</section>`).join('');
    return [controls, html];
  },

  services(p) {
    const cluster = p.get('cluster') || '';
    const f = { account: p.get('account') || '', region: p.get('region') || '' };
    const all = [...state.stores.service.values()].filter((s) => (!cluster || clusterName(s.clusterARN) === cluster) && inPlace(s.clusterARN, f))
      .sort((a, b) => (a.clusterARN + a.serviceARN).localeCompare(b.clusterARN + b.serviceARN));
    const select = placeSelects(f) + clusterSelect(cluster);
    if (!all.length) return [`<div class="filters">${select}</div>`, `<p class="empty">No services are known${cluster ? ' in this cluster' : ''}.</p>`];
    const rows = all.map((s) => {
      const d = primary(s) || {};
      const progress = d.desiredCount ? bar(d.runningCount || 0, d.desiredCount, 'rollout') : '';
      const events = (s.events || []).slice(0, 3).map((e) => `<li>${esc(e.message)}</li>`).join('');
      return `<tr data-arn="${esc(s.serviceARN)}">
        <td data-label="cluster">${esc(clusterName(s.clusterARN))}</td>
        <td data-label="service"><a class="service-page" href="#/service?cluster=${encodeURIComponent(clusterName(s.clusterARN))}&name=${encodeURIComponent(s.serviceName)}">${esc(s.serviceName)}</a>
          · <a href="#/tasks?cluster=${encodeURIComponent(clusterName(s.clusterARN))}&service=${encodeURIComponent(s.serviceName)}">tasks</a></td>
        <td data-label="status">${statusTag(s.status)}</td>
        <td data-label="desired / running / pending">${s.desiredCount ?? '—'} / ${s.runningCount ?? '—'} / ${s.pendingCount ?? '—'}</td>
        <td data-label="rollout">${statusTag(d.rolloutState)} ${progress}</td>
        <td data-label="latest events"><ul>${events}</ul></td></tr>`;
    });
    return [`<div class="filters">${select}</div>`, `<table id="services"><thead><tr><th>cluster</th><th>service</th><th>status</th><th>desired / running / pending</th><th>rollout</th><th>latest events</th></tr></thead><tbody>${rows.join('')}</tbody></table>`];
  },

  tasks(p) {
    const f = Object.fromEntries(TASK_FILTERS.map((k) => [k, p.get(k) || '']));
    const page = Math.max(0, Number(p.get('page')) || 0);
    const at = p.get('at') || '';
    const match = (t) => (!f.cluster || clusterName(t.clusterARN) === f.cluster)
      && inPlace(t.clusterARN, f)
      && (!f.service || serviceOf(t) === f.service)
      && (!f.status || t.lastStatus === f.status)
      && (!f.desiredStatus || t.desiredStatus === f.desiredStatus)
      && (!f.launchType || t.launchType === f.launchType)
      && (!f.family || last(t.taskDefinitionARN).split(':')[0] === f.family)
      && (!f.containerInstance || last(t.containerInstanceARN) === last(f.containerInstance));
    const hits = [];
    if (!at) for (const t of state.stores.task.values()) if (match(t)) hits.push(t);
    hits.sort((a, b) => (a.clusterARN < b.clusterARN ? -1 : a.clusterARN > b.clusterARN ? 1 : a.taskARN < b.taskARN ? -1 : 1));
    const past = at ? pastTasks(f, at, page) : null;
    const shown = past ? past.items : hits.slice(page * PAGE, (page + 1) * PAGE);
    const opts = (name, values) => `<label>${name}<select id="f-${name}" data-filter="${name}"><option value="">any</option>${values.map((v) => `<option${v === f[name] ? ' selected' : ''}>${esc(v)}</option>`).join('')}</select></label>`;
    const services = [...new Set([...state.stores.service.values()].map((s) => s.serviceName).concat([...state.stores.task.values()].slice(0, 5000).map(serviceOf)).filter(Boolean))].sort();
    const controls = `<form class="filters" id="task-filters" role="search">
      ${placeSelects(f)}
      ${clusterSelect(f.cluster)}
      ${opts('service', services.includes(f.service) || !f.service ? services : services.concat(f.service))}
      ${opts('status', state.values.status || [])}
      ${opts('desiredStatus', state.values.desiredStatus || [])}
      ${opts('launchType', state.values.launchType || [])}
      <label>family<input id="f-family" data-filter="family" value="${esc(f.family)}" size="12"></label>
      <label>container instance<input id="f-containerInstance" data-filter="containerInstance" value="${esc(f.containerInstance)}" size="14"></label>
      <label>as of<input id="f-at" data-filter="at" value="${esc(at)}" size="24" placeholder="now (RFC 3339 time or revision)"></label>
    </form>`;
    const rows = shown.map((t) => `<tr tabindex="0" data-arn="${esc(t.taskARN)}" data-cluster="${esc(clusterName(t.clusterARN))}">
      <td data-label="task" class="mono">${esc(last(t.taskARN))}</td>
      <td data-label="cluster">${esc(clusterName(t.clusterARN))}</td>
      <td data-label="status">${statusTag(t.lastStatus)}</td>
      <td data-label="desired">${esc(t.desiredStatus)}</td>
      <td data-label="service">${esc(serviceOf(t) || '—')}</td>
      <td data-label="task definition">${esc(last(t.taskDefinitionARN))}</td>
      <td data-label="launch type">${esc(t.launchType || '—')}</td>
      <td data-label="started">${esc(t.startedAt || '—')}</td></tr>`);
    const pages = Math.max(1, Math.ceil(hits.length / PAGE));
    const pager = past
      ? `<div class="pager"><button type="button" id="prev"${page ? '' : ' disabled'}>‹ previous</button>
      <span id="count" data-count="${past.items.length}" data-as-of="${esc(past.revision)}">as of ${esc(at)} (entityVersion ${esc(past.revision || '…')}) · page ${page + 1}</span>
      <button type="button" id="next"${past.next ? '' : ' disabled'}>next ›</button></div>`
      : `<div class="pager"><button type="button" id="prev"${page ? '' : ' disabled'}>‹ previous</button>
      <span id="count" data-count="${hits.length}">${hits.length} tasks · page ${Math.min(page + 1, pages)} of ${pages}</span>
      <button type="button" id="next"${page + 1 < pages ? '' : ' disabled'}>next ›</button></div>`;
    const loading = past ? past.loading : state.feeds.task && !state.feeds.task.ready;
    const table = past && past.error
      ? `<p class="empty" role="alert">${esc(past.error)}</p>`
      : shown.length
        ? `<table id="tasks"><thead><tr><th>task</th><th>cluster</th><th>status</th><th>desired</th><th>service</th><th>task definition</th><th>launch type</th><th>started</th></tr></thead><tbody>${rows.join('')}</tbody></table>`
        : `<p class="empty">No task matches${loading ? ' yet (loading…)' : ''}.</p>`;
    return [controls, pager + table];
  },

  service(p) {
    const cluster = p.get('cluster') || '', name = p.get('name') || '';
    const s = [...state.stores.service.values()].find((x) => clusterName(x.clusterARN) === cluster && x.serviceName === name);
    const tl = timelineOf(cluster, name);
    const head = `<h2>${esc(name)} <small>in ${esc(cluster)}</small></h2>
      <p>${s ? `${statusTag(s.status)} desired ${s.desiredCount ?? '—'} · running ${s.runningCount ?? '—'} · pending ${s.pendingCount ?? '—'} · ` : ''}<a href="#/tasks?cluster=${encodeURIComponent(cluster)}&service=${encodeURIComponent(name)}">its tasks</a></p>`;
    if (tl.error) return [head, `<p class="empty" role="alert">${esc(tl.error)}</p>`];
    if (!tl.items) return [head, '<p class="empty">Loading its timeline…</p>'];
    const what = (i) => {
      switch (i.type) {
        case 'deployment': return `deployment <span class="mono">${esc(last(i.id))}</span> of ${esc(last(i.taskDefinitionARN))}: ${statusTag(i.status)} ${statusTag(i.rolloutState)} ${esc(i.rolloutStateReason || '')}`;
        case 'serviceEvent': return esc(i.message);
        case 'taskStarted': return `task <span class="mono">${esc(last(i.taskARN))}</span> (${esc(last(i.taskDefinitionARN))}) started`;
        case 'taskStopped': return `task <span class="mono">${esc(last(i.taskARN))}</span> (${esc(last(i.taskDefinitionARN))}) stopped${i.failed ? ' <strong class="failed">failed</strong>' : ''}: ${esc(i.stopCode || '')} ${esc(i.stoppedReason || '')}
          ${(i.containers || []).map((c) => `<span class="exit">${esc(c.name)} exit <span class="exit-code">${c.exitCode ?? '—'}</span>${c.reason ? ` (${esc(c.reason)})` : ''}</span>`).join(' ')}`;
        default: return esc(i.type);
      }
    };
    const rows = tl.items.map((i) => `<li data-type="${esc(i.type)}" data-version="${esc(i.entityVersion)}"><time>${esc(i.at)}</time> <span class="kind">${esc(i.type)}</span> ${what(i)}</li>`);
    return [head, rows.length ? `<ol id="timeline" reversed>${rows.join('')}</ol>` : '<p class="empty">Nothing has happened to it within the retained history.</p>'];
  },

  instances(p) {
    const cluster = p.get('cluster') || '';
    const f = { account: p.get('account') || '', region: p.get('region') || '' };
    const all = [...state.stores.instance.values()].filter((i) => (!cluster || clusterName(i.clusterARN) === cluster) && inPlace(i.clusterARN, f))
      .sort((a, b) => (a.clusterARN + a.containerInstanceARN).localeCompare(b.clusterARN + b.containerInstanceARN));
    const rows = all.slice(0, 2000).map((i) => {
      const reg = (n) => resource(i.registeredResources, n), rem = (n) => resource(i.remainingResources, n);
      return `<tr data-arn="${esc(i.containerInstanceARN)}">
        <td data-label="instance" class="mono">${esc(i.EC2InstanceID || last(i.containerInstanceARN))}</td>
        <td data-label="cluster">${esc(clusterName(i.clusterARN))}</td>
        <td data-label="status">${statusTag(i.status)}</td>
        <td data-label="agent">${statusTag(i.agentConnected ? 'connected' : 'disconnected')}</td>
        <td data-label="running / pending tasks"><a href="#/tasks?containerInstance=${encodeURIComponent(last(i.containerInstanceARN))}">${i.runningTasksCount ?? 0} / ${i.pendingTasksCount ?? 0}</a></td>
        <td data-label="CPU">${bar(reg('CPU') - rem('CPU'), reg('CPU'), 'CPU')}</td>
        <td data-label="memory">${bar(reg('MEMORY') - rem('MEMORY'), reg('MEMORY'), 'Memory')}</td></tr>`;
    });
    const more = all.length > 2000 ? `<p class="muted">The first 2,000 of ${all.length}: choose a cluster.</p>` : '';
    return [`<div class="filters">${placeSelects(f)}${clusterSelect(cluster)}</div>`, more + (rows.length
      ? `<table id="instances"><thead><tr><th>instance</th><th>cluster</th><th>status</th><th>agent</th><th>running / pending tasks</th><th>CPU</th><th>memory</th></tr></thead><tbody>${rows.join('')}</tbody></table>`
      : `<p class="empty">No container instances are known.</p>`)];
  },
};

const TASK_FILTERS = ['account', 'region', 'cluster', 'service', 'status', 'desiredStatus', 'launchType', 'family', 'containerInstance'];

// The account and region filters, offering the places of the known clusters.
function placeSelects(f) {
  const known = clusters().map(placeOf);
  const select = (name, values) => {
    const list = [...new Set(values)].sort();
    if (f[name] && !list.includes(f[name])) list.push(f[name]);
    return `<label>${name}<select id="f-${name}" data-filter="${name}"><option value="">any</option>${list.map((v) => `<option${v === f[name] ? ' selected' : ''}>${esc(v)}</option>`).join('')}</select></label>`;
  };
  return select('account', known.map((k) => k.account)) + select('region', known.map((k) => k.region));
}

function clusterSelect(current) {
  const names = [...new Set(clusters().map(clusterName))];
  if (current && !names.includes(current)) names.push(current);
  return `<label>cluster<select id="f-cluster" data-filter="cluster"><option value="">any</option>${names.map((n) => `<option${n === current ? ' selected' : ''}>${esc(n)}</option>`).join('')}</select></label>`;
}

function bind(view, params) {
  const main = $('#view');
  const current = Object.fromEntries(params.entries());
  for (const el of main.querySelectorAll('[data-filter]')) {
    el.addEventListener('change', () => {
      const next = { ...current, [el.dataset.filter]: el.value };
      delete next.page;
      setParams(view, next);
    });
  }
  const move = (d) => setParams(view, { ...current, page: String(Math.max(0, (Number(current.page) || 0) + d)) });
  if ($('#f-at')) $('#f-at').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); ev.target.dispatchEvent(new Event('change')); } });
  if ($('#prev')) $('#prev').addEventListener('click', () => move(-1));
  if ($('#next')) $('#next').addEventListener('click', () => move(1));
  if (view === 'tasks') {
    for (const tr of main.querySelectorAll('#tasks tbody tr')) {
      const open = () => openPanel(tr.dataset.cluster, tr.dataset.arn);
      tr.addEventListener('click', open);
      tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); open(); } });
    }
  }
}

// ---- the past ---------------------------------------------------------

// One page of the tasks as they were `at`, from the API (its filters are
// the view's); loaded once per page and kept while the view shows it. Pages
// go by the API's nextToken: the token of each page is kept for the next.
function pastTasks(f, at, page) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
  q.set('at', at);
  q.set('limit', String(PAGE));
  const base = q.toString();
  if (!state.past || state.past.base !== base) state.past = { base, tokens: [''], pages: {} };
  const entry = state.past.pages[page];
  if (entry) return entry;
  const token = state.past.tokens[page];
  const loading = { items: [], loading: true, next: false, revision: '', error: '' };
  state.past.pages[page] = loading;
  if (token === undefined) { loading.loading = false; loading.error = 'Open the pages in order.'; return loading; }
  const mine = state.past;
  api(`/v1/tasks?${base}${token ? '&nextToken=' + encodeURIComponent(token) : ''}`).then((v) => {
    if (state.past !== mine) return;
    mine.pages[page] = { items: v.items.map((i) => compact('task', i.entity)), loading: false, next: !!v.nextToken, revision: v.metadata.entityVersion, error: '' };
    if (v.nextToken) mine.tokens[page + 1] = v.nextToken;
    schedule();
  }).catch(async (e) => {
    if (state.past !== mine) return;
    let said = String(e.message || e);
    if (e.response) try { said = (await e.response.json()).message; } catch (_) { /* keep */ }
    mine.pages[page] = { items: [], loading: false, next: false, revision: '', error: said };
    schedule();
  });
  return loading;
}

// The timeline of a service, read again when it or one of its tasks
// changes (at most once a second).
function timelineOf(cluster, name) {
  const key = cluster + '/' + name;
  const tl = state.timeline && state.timeline.key === key ? state.timeline : (state.timeline = { key, items: null, error: '', fetched: 0, busy: false, stale: true });
  const arns = [...state.changed];
  const touched = arns.some((a) => {
    const t = state.stores.task.get(a), s = state.stores.service.get(a);
    return (t && clusterName(t.clusterARN) === cluster && serviceOf(t) === name) || (s && clusterName(s.clusterARN) === cluster && s.serviceName === name);
  });
  if (touched) tl.stale = true;
  if (tl.stale && !tl.busy) {
    const wait = Math.max(0, tl.fetched + 1000 - Date.now());
    tl.busy = true;
    tl.stale = false;
    sleep(wait).then(() => api(`/v1/services/${encodeURIComponent(cluster)}/${encodeURIComponent(name)}/timeline?limit=200`)).then((v) => {
      tl.items = v.items; tl.error = '';
    }).catch((e) => {
      tl.error = e instanceof Unauthorized ? 'The token was not accepted.' : `No timeline for this service (${e.message || e}).`;
    }).finally(() => { tl.busy = false; tl.fetched = Date.now(); schedule(); });
  }
  return tl;
}

// ---- task panel -------------------------------------------------------

async function openPanel(cluster, arn) {
  state.panel = { cluster, arn, entity: null, error: '', history: null };
  renderPanel();
  const path = `/v1/tasks/${encodeURIComponent(cluster)}/${encodeURIComponent(arn)}`;
  const [item, history] = await Promise.allSettled([api(path), api(path + '/history')]);
  for (const r of [item, history]) {
    if (r.status === 'rejected' && r.reason instanceof Unauthorized) return askToken('The token was not accepted.');
  }
  if (state.panel && state.panel.arn === arn) {
    // Gone from the view (as of a past moment, or deleted): its last version.
    const versions = history.status === 'fulfilled' ? history.value.items : [];
    const latest = [...versions].reverse().find((v) => v.entity);
    state.panel.entity = item.status === 'fulfilled' ? item.value.entity : latest ? latest.entity : null;
    state.panel.history = versions;
    if (!state.panel.entity) state.panel.error = 'This task is gone.';
  }
  renderPanel();
  $('#panel-close').focus();
}

function renderPanel() {
  const el = $('#panel');
  const p = state.panel;
  el.hidden = !p;
  if (!p) return;
  const t = p.entity;
  if (!t) { $('#panel-body').innerHTML = `<p>${esc(p.error || 'Loading…')}</p>`; return; }
  const times = ['createdAt', 'pullStartedAt', 'pullStoppedAt', 'startedAt', 'stoppingAt', 'stoppedAt'].filter((k) => t[k])
    .map((k) => `<dt>${k}</dt><dd>${esc(t[k])}</dd>`).join('');
  const containers = (t.containers || []).map((c) => `<tr><td data-label="name">${esc(c.name)}</td><td data-label="image" class="mono">${esc(c.image || '—')}</td>
    <td data-label="status">${statusTag(c.lastStatus)}</td><td data-label="exit code" class="exit-code">${c.exitCode ?? '—'}</td><td data-label="reason">${esc(c.reason || '')}</td></tr>`).join('');
  const html = `<h2 class="mono">${esc(last(t.taskARN))}</h2>
    <dl class="card"><dt>status</dt><dd>${statusTag(t.lastStatus)} (desired ${esc(t.desiredStatus)})</dd>
    <dt>task definition</dt><dd class="mono">${esc(t.taskDefinitionARN)}</dd>
    ${t.stoppedReason ? `<dt>stopped reason</dt><dd>${esc(t.stoppedReason)}</dd>` : ''}
    ${t.stopCode ? `<dt>stop code</dt><dd>${esc(t.stopCode)}</dd>` : ''}${times}</dl>
    <h3>Containers</h3><table id="containers"><thead><tr><th>name</th><th>image</th><th>status</th><th>exit code</th><th>reason</th></tr></thead><tbody>${containers}</tbody></table>
    <h3>History</h3>${p.history && p.history.length ? `<ol id="history">${p.history.map((v) => `<li data-version="${esc(v.metadata.entityVersion)}"><time>${esc(v.metadata.observedAt)}</time> ${v.deleted ? statusTag('deleted') : statusTag(v.entity.lastStatus)}</li>`).join('')}</ol>` : '<p class="muted">No retained history.</p>'}`;
  if ($('#panel-body').dataset.html !== html) {
    $('#panel-body').innerHTML = html;
    $('#panel-body').dataset.html = html;
  }
}

$('#panel-close').addEventListener('click', () => { state.panel = null; renderPanel(); });
document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && state.panel) { state.panel = null; renderPanel(); } });

// ---- start ------------------------------------------------------------

async function start() {
  try {
    await api('/v1/ping');
    const doc = await api('/v1/openapi.json');
    for (const p of doc.paths['/v1/tasks'].get.parameters) {
      if (p.schema && p.schema['x-values']) state.values[p.name] = p.schema['x-values'];
    }
  } catch (e) {
    if (e instanceof Unauthorized) return askToken(state.token ? 'The token was not accepted.' : '');
    $('#conn-text').textContent = 'the service does not answer; retrying…';
    await sleep(2000);
    return start();
  }
  $('#login').hidden = true;
  $('#login-error').textContent = '';
  $('#view').hidden = false;
  state.started = true;
  for (const name of Object.keys(FEEDS)) {
    const feed = new Feed(name);
    state.feeds[name] = feed;
    feed.run();
  }
  schedule();
}

window.addEventListener('hashchange', () => schedule());
start();
