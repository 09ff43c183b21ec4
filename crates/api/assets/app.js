// unseen console: a single-page client of the query API (/api/v1/…).
// Plain JavaScript, no framework, no build step. Everything the API returns is written into
// the page with textContent / setAttribute, never as HTML.
'use strict';

(function () {
  const PAGE_SIZE = 50;
  const MEMBERS_PAGE = 100;
  const SCOPES = ['node', 'cluster', 'fleet'];
  const KINDS = ['image', 'new_node', 'digest', 'risk_threshold', 'capacity'];
  const STATES = ['open', 'closed'];
  const STATUSES = ['new', 'acknowledged', 'resolved'];
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    session: null, // {name, role, csrf}
    pagers: {}, // view -> {key, stack: [cursor...], cursor}
  };
  let renderSeq = 0;

  // ---------------------------------------------------------------- DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value' && 'value' in el && !(el instanceof SVGElement)) el.value = String(v);
      else if (k === 'checked') el.checked = !!v;
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
  }

  // Like Element.append, but skips null/undefined/false (the native one writes "null").
  function add(el, ...children) {
    append(el, children);
    return el;
  }

  const $ = (sel, root) => (root || document).querySelector(sel);
  const mainEl = () => document.getElementById('main');

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function showError(msg) {
    const el = document.getElementById('alert');
    el.textContent = msg ? String(msg) : '';
  }

  function showStatus(...parts) {
    const el = document.getElementById('status');
    clear(el);
    append(el, parts);
  }

  function clearMessages() {
    showError('');
    showStatus();
  }

  // ---------------------------------------------------------------- formatting

  function fmtTime(v) {
    if (v === null || v === undefined || v === '') return null;
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.exec(String(v));
    return m ? `${m[1]} ${m[2]}${m[4] === 'Z' ? 'Z' : ' ' + m[4]}` : String(v);
  }

  function timeEl(v) {
    if (v === null || v === undefined || v === '') return dash();
    return h('time', { datetime: String(v) }, fmtTime(v));
  }

  function dash() {
    return h('span', { class: 'muted', 'aria-label': 'none' }, '—');
  }

  function orDash(v) {
    return v === null || v === undefined || v === '' ? dash() : String(v);
  }

  function shortId(id) {
    const t = String(id || '');
    return t.length > 12 ? t.slice(0, 8) + '…' : t;
  }

  function badge(kind, value, testid) {
    if (value === null || value === undefined) return dash();
    return h('span', { class: `badge ${kind}-${value}`, 'data-testid': testid }, String(value));
  }

  function chipList(items, max, testid) {
    const list = Array.isArray(items) ? items : [];
    if (list.length === 0) return dash();
    const limit = max || 40;
    const box = h('div', { class: 'chips', 'data-testid': testid });
    list.slice(0, limit).forEach((x) => box.append(h('span', { class: 'chip' }, String(x))));
    if (list.length > limit) {
      const more = h('details', null, h('summary', null, `and ${list.length - limit} more`));
      const rest = h('div', { class: 'chips' });
      list.slice(limit).forEach((x) => rest.append(h('span', { class: 'chip' }, String(x))));
      more.append(rest);
      return h('div', null, box, more);
    }
    return box;
  }

  function joinList(items) {
    return Array.isArray(items) && items.length ? items.join(', ') : null;
  }

  function workloadText(w) {
    if (!w || typeof w !== 'object') return w ? String(w) : null;
    return w.kind ? `${w.kind}/${w.name}` : w.name || null;
  }

  function incidentHref(id) {
    return '#/incidents/' + encodeURIComponent(id);
  }
  function findingHref(id) {
    return '#/findings/' + encodeURIComponent(id);
  }
  function imageHref(ref) {
    return '#/images/' + encodeURIComponent(ref);
  }
  function imageApiPath(ref) {
    // Each segment percent-encoded, but ':' and '@' (valid in a path segment) left as they are,
    // so that 'nginx:1.25' or 'repo@sha256:…' reach the server as written.
    const seg = (x) => encodeURIComponent(x).replace(/%3A/gi, ':').replace(/%40/g, '@');
    return '/api/v1/images/' + String(ref).split('/').map(seg).join('/');
  }

  function canRespond() {
    return !!state.session && (state.session.role === 'responder' || state.session.role === 'admin');
  }
  function isAdmin() {
    return !!state.session && state.session.role === 'admin';
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD' && state.session && state.session.csrf) {
      opts.headers['X-CSRF-Token'] = state.session.csrf;
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, `The server did not answer (${e.message || e}).`, null);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status} ${res.statusText}`;
      const err = new ApiError(res.status, msg, data);
      if (res.status === 401 && path !== '/api/v1/session') {
        // The session is gone (expired, logged out elsewhere): back to the login page.
        state.session = null;
        renderLogin('Your session has ended: log in again.');
      }
      throw err;
    }
    return data;
  }

  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') p.set(k, v);
    }
    return p.toString();
  }

  // ---------------------------------------------------------------- routing

  function parseHash() {
    let raw = location.hash.replace(/^#/, '');
    if (!raw.startsWith('/')) raw = '/incidents';
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
    const segs = path.split('/').filter((x) => x !== '');
    const dec = (x) => {
      try {
        return decodeURIComponent(x);
      } catch (e) {
        return x;
      }
    };
    return { view: segs[0] || 'incidents', rest: segs.slice(1).map(dec), params, path };
  }

  function setNav(view) {
    document.querySelectorAll('[data-nav]').forEach((a) => {
      if (a.getAttribute('data-nav') === view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
  }

  function beginView(view, title) {
    const seq = ++renderSeq;
    const main = mainEl();
    clear(main);
    main.setAttribute('data-view', view);
    setLoading(true);
    setNav(view);
    document.title = `${title} · unseen`;
    return { seq, alive: () => seq === renderSeq };
  }

  function setLoading(on) {
    const main = mainEl();
    main.setAttribute('data-state', on ? 'loading' : 'ready');
    main.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  function failView(ctx, err) {
    if (!ctx.alive()) return;
    if (err && err.status === 401) return; // the login page is shown
    showError(err && err.message ? err.message : String(err));
    mainEl().setAttribute('data-state', 'error');
    mainEl().setAttribute('aria-busy', 'false');
  }

  function focusHeading() {
    const h1 = $('main h1');
    if (h1) {
      h1.setAttribute('tabindex', '-1');
      h1.focus({ preventScroll: true });
    }
  }

  let lastHash = null;
  function route(force) {
    if (!state.session) {
      renderLogin();
      return;
    }
    if (!force && location.hash === lastHash) return;
    lastHash = location.hash;
    closeDialogs();
    clearMessages();
    const r = parseHash();
    const views = {
      incidents: () => (r.rest.length ? renderIncident(r.rest[0]) : renderIncidents(r.params)),
      findings: () => (r.rest.length ? renderFinding(r.rest[0]) : renderFindings(r.params)),
      images: () => (r.rest.length ? renderImage(r.rest.join('/')) : renderImages(r.params)),
      timeline: () => renderTimeline(r.params),
      suppressions: () => renderSuppressions(r.params),
    };
    const fn = views[r.view];
    if (fn) fn();
    else {
      const ctx = beginView('notfound', 'Not found');
      add(mainEl(), h('h1', null, 'Page not found'), h('p', null, h('a', { href: '#/incidents' }, 'Go to the incidents')));
      if (ctx.alive()) setLoading(false);
    }
    window.scrollTo(0, 0);
    focusHeading();
  }

  function go(hash) {
    if (location.hash === hash) route(true);
    else location.hash = hash;
  }

  // ---------------------------------------------------------------- session

  function renderSessionBox() {
    const nav = $('[data-testid="mainnav"]');
    const box = $('[data-testid="userbox"]');
    if (state.session) {
      nav.hidden = false;
      box.hidden = false;
      $('[data-testid="session-user"]').textContent = `${state.session.name} (${state.session.role})`;
    } else {
      nav.hidden = true;
      box.hidden = true;
      $('[data-testid="session-user"]').textContent = '';
    }
  }

  function renderLogin(message) {
    lastHash = null;
    renderSeq++;
    closeDialogs();
    renderSessionBox();
    const main = mainEl();
    clear(main);
    main.setAttribute('data-view', 'login');
    setNav(null);
    document.title = 'Log in · unseen';
    showStatus();
    showError(message || '');
    const input = h('input', {
      id: 'login-token',
      type: 'password',
      name: 'token',
      autocomplete: 'off',
      required: true,
      spellcheck: 'false',
      'data-testid': 'login-token',
    });
    const form = h(
      'form',
      { 'data-testid': 'login-form', novalidate: true },
      h('div', { class: 'field' }, h('label', { for: 'login-token' }, 'API token'), input),
      h('p', { class: 'hint' }, 'The bearer token an administrator gave you. It is sent once; the session lives in a cookie.'),
      h('div', null, h('button', { type: 'submit', class: 'btn', 'data-testid': 'login-submit' }, 'Log in'))
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) {
        showError('Enter your API token.');
        input.focus();
        return;
      }
      const btn = $('[data-testid="login-submit"]', form);
      btn.disabled = true;
      try {
        const sess = await api('POST', '/api/v1/session', { token });
        input.value = '';
        state.session = sess;
        renderSessionBox();
        showError('');
        if (!location.hash.startsWith('#/')) location.hash = '#/incidents';
        route(true);
      } catch (e) {
        showError(e.message);
        btn.disabled = false;
        input.select();
      }
    });
    add(main,
      h('section', { class: 'login', 'aria-labelledby': 'login-h' }, h('h1', { id: 'login-h' }, 'unseen console'), h('p', { class: 'muted' }, 'Previously unseen container images in your Kubernetes fleet. Log in to see the incidents.'), form)
    );
    setLoading(false);
    input.focus();
  }

  async function logout() {
    try {
      await api('DELETE', '/api/v1/session');
    } catch (e) {
      if (e.status !== 401) {
        showError(e.message);
        return;
      }
    }
    state.session = null;
    state.pagers = {};
    renderLogin();
    showStatus('You are logged out.');
  }

  // ---------------------------------------------------------------- generic filtered, paginated list

  function filterForm(view, fields, params) {
    const form = h('form', { class: 'filters', 'data-testid': `${view}-filters`, role: 'search', 'aria-label': `Filter ${view}` });
    for (const f of fields) {
      const id = `f-${view}-${f.name}`;
      let control;
      if (f.options) {
        control = h('select', { id, name: f.name, 'data-testid': `filter-${f.name}` }, h('option', { value: '' }, 'any'), f.options.map((o) => h('option', { value: o }, o)));
        control.value = params.get(f.name) || '';
      } else {
        control = h('input', {
          id,
          name: f.name,
          type: f.type || 'text',
          class: f.wide ? 'wide' : null,
          placeholder: f.placeholder || null,
          autocomplete: 'off',
          spellcheck: 'false',
          'data-testid': f.testid || `filter-${f.name}`,
        });
        control.value = params.get(f.name) || '';
      }
      form.append(h('div', { class: 'field' }, h('label', { for: id }, f.label), control));
    }
    form.append(
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'btn', 'data-testid': `filter-apply` }, fields.applyLabel || 'Apply'),
        h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'filter-clear', onclick: () => go(`#/${view}`) }, 'Clear')
      )
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = {};
      for (const f of fields) {
        const v = form.elements[f.name].value.trim();
        if (v) p[f.name] = v;
      }
      const q = qs(p);
      go(`#/${view}` + (q ? '?' + q : ''));
    });
    return form;
  }

  // A list view: filters in the URL (after '?'), pages through the API's cursors with a stack
  // kept in memory for "Previous"; only one page is ever rendered.
  function listView(ctx, cfg, params) {
    const view = cfg.view;
    const key = `${view}?${params.toString()}`;
    let pager = state.pagers[view];
    if (!pager || pager.key !== key) {
      pager = { key, stack: [], cursor: null };
      state.pagers[view] = pager;
    }
    const results = h('div', { 'data-testid': `${view}-results` });
    const prev = h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'page-prev' }, '← Previous');
    const next = h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'page-next' }, 'Next page →');
    const pageNo = h('span', { class: 'muted', 'data-testid': 'page-number', 'aria-live': 'polite' });
    const nav = h('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, pageNo, next);
    let nextCursor = null;
    let loadSeq = 0;

    async function load(focusAfter) {
      const my = ++loadSeq;
      prev.disabled = true;
      next.disabled = true;
      setLoading(true);
      const p = {};
      for (const [k, v] of params.entries()) p[k] = v;
      if (cfg.sendLimit !== false) p.limit = String(PAGE_SIZE);
      if (pager.cursor) p.cursor = pager.cursor;
      try {
        const data = await api('GET', `${cfg.endpoint}?${qs(p)}`);
        if (!ctx.alive() || my !== loadSeq) return;
        const items = Array.isArray(data && data.items) ? data.items.slice(0, PAGE_SIZE) : [];
        nextCursor = data && data.next ? data.next : null;
        clear(results);
        results.append(table(cfg, items));
        prev.disabled = pager.stack.length === 0;
        next.disabled = !nextCursor;
        pageNo.textContent = `Page ${pager.stack.length + 1} · ${items.length} ${items.length === 1 ? cfg.noun : cfg.nouns}`;
        setLoading(false);
        if (focusAfter) {
          const target = !focusAfter.disabled ? focusAfter : focusAfter === next ? prev : next;
          if (!target.disabled) target.focus();
        }
      } catch (e) {
        failView(ctx, e);
      }
    }

    prev.addEventListener('click', () => {
      if (!pager.stack.length) return;
      pager.cursor = pager.stack.pop();
      load(prev);
    });
    next.addEventListener('click', () => {
      if (!nextCursor) return;
      pager.stack.push(pager.cursor);
      pager.cursor = nextCursor;
      load(next);
    });
    load(null);
    return h('div', null, results, nav);
  }

  function table(cfg, items) {
    if (!items.length) return h('p', { class: 'empty', 'data-testid': `${cfg.view}-empty` }, cfg.empty);
    const thead = h('thead', null, h('tr', null, cfg.columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label))));
    const tbody = h('tbody');
    for (const item of items) {
      const tr = h('tr', Object.assign({ 'data-testid': cfg.rowTestid }, cfg.rowAttrs ? cfg.rowAttrs(item) : {}));
      for (const c of cfg.columns) {
        const v = c.cell(item);
        tr.append(h('td', { class: [c.num ? 'num' : '', c.cls || ''].join(' ').trim() || null, 'data-testid': c.testid || null }, v === null || v === undefined || v === '' ? dash() : v));
      }
      tbody.append(tr);
    }
    return h('div', { class: 'table-wrap' }, h('table', { 'data-testid': `${cfg.view}-table` }, h('caption', null, cfg.caption), thead, tbody));
  }

  // ---------------------------------------------------------------- incidents

  const INCIDENT_FILTERS = [
    { name: 'cluster', label: 'Cluster' },
    { name: 'namespace', label: 'Namespace' },
    { name: 'workload', label: 'Workload', placeholder: 'Kind/name' },
    { name: 'image', label: 'Image contains', wide: true },
    { name: 'scope', label: 'Scope', options: SCOPES },
    { name: 'kind', label: 'Kind', options: KINDS },
    { name: 'state', label: 'State', options: STATES },
    { name: 'status', label: 'Status', options: STATUSES },
    { name: 'since', label: 'Opened since', placeholder: 'RFC 3339' },
    { name: 'until', label: 'Opened until', placeholder: 'RFC 3339' },
  ];

  function renderIncidents(params) {
    const ctx = beginView('incidents', 'Incidents');
    const cfg = {
      view: 'incidents',
      endpoint: '/api/v1/incidents',
      noun: 'incident',
      nouns: 'incidents',
      caption: 'Incidents, newest first',
      empty: 'No incident matches these filters.',
      rowTestid: 'incident-row',
      rowAttrs: (i) => ({ 'data-id': i.incident_id, 'data-kind': i.kind, 'data-findings': Array.isArray(i.findings) ? i.findings.length : i.finding_count || 0, 'data-status': i.workflow ? i.workflow.status : null }),
      columns: [
        { label: 'ID', cls: 'nowrap mono', cell: (i) => h('a', { href: incidentHref(i.incident_id), 'data-testid': 'incident-link', title: i.incident_id, 'aria-label': `Incident ${i.incident_id}` }, shortId(i.incident_id)) },
        { label: 'Opened', cls: 'nowrap', cell: (i) => timeEl(i.opened_at) },
        { label: 'Title', cls: 'title-cell', testid: 'incident-title-cell', cell: (i) => i.title },
        { label: 'Kind', cls: 'nowrap', testid: 'incident-kind', cell: (i) => i.kind },
        { label: 'Scope', testid: 'incident-scope', cell: (i) => (i.scope ? badge('scope', i.scope) : null) },
        { label: 'Severity', cell: (i) => (i.severity ? badge('sev', i.severity) : null) },
        { label: 'Cluster', cls: 'nowrap', cell: (i) => i.cluster },
        { label: 'Nodes', num: true, cell: (i) => String(i.node_count ?? (Array.isArray(i.nodes) ? i.nodes.length : 0)) },
        { label: 'Findings', num: true, cell: (i) => String(i.finding_count ?? (Array.isArray(i.findings) ? i.findings.length : 0)) },
        { label: 'Risk', num: true, cell: (i) => (i.risk_score === null || i.risk_score === undefined ? null : String(i.risk_score)) },
        { label: 'State', testid: 'incident-state', cell: (i) => i.state },
        { label: 'Status', testid: 'incident-status', cell: (i) => (i.workflow ? badge('status', i.workflow.status) : null) },
      ],
    };
    add(mainEl(), h('h1', null, 'Incidents'), filterForm('incidents', INCIDENT_FILTERS, params), listView(ctx, cfg, params));
  }

  async function renderIncident(id) {
    const ctx = beginView('incident', 'Incident');
    const main = mainEl();
    add(main, h('p', { class: 'crumbs' }, h('a', { href: '#/incidents' }, '← Incidents')), h('h1', { class: 'muted' }, 'Incident ', h('span', { class: 'mono' }, id)));
    let data;
    try {
      data = await api('GET', '/api/v1/incidents/' + encodeURIComponent(id));
    } catch (e) {
      return failView(ctx, e);
    }
    if (!ctx.alive()) return;
    const inc = data.incident || {};
    const members = Array.isArray(data.members) ? data.members : [];
    const audit = Array.isArray(data.audit) ? data.audit : [];
    const wf = inc.workflow || { status: null, by: null, at: null, note: null };
    clear(main);
    document.title = `${inc.title || 'Incident'} · unseen`;

    const actions = h('div', { class: 'toolbar' });
    if (canRespond()) {
      add(actions,
        h('button', { type: 'button', class: 'btn', 'data-testid': 'incident-ack', onclick: () => workflowDialog(inc, 'ack') }, 'Acknowledge'),
        h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'incident-resolve', onclick: () => workflowDialog(inc, 'resolve') }, 'Resolve')
      );
    }
    add(actions, h('a', { class: 'btn btn-secondary', href: '#/findings?' + qs({ incident: inc.incident_id }) }, 'Findings of this incident'));

    const details = h(
      'dl',
      { class: 'props', 'data-testid': 'incident-details' },
      prop('Incident ID', h('span', { class: 'mono' }, orDash(inc.incident_id))),
      prop('Kind', orDash(inc.kind)),
      prop('State', orDash(inc.state), 'incident-state'),
      prop('Scope', inc.scope ? badge('scope', inc.scope) : dash()),
      prop('Severity', inc.severity ? badge('sev', inc.severity) : dash()),
      prop('Cluster', orDash(inc.cluster)),
      prop('Image', inc.image ? h('a', { href: imageHref(inc.image) }, inc.image) : dash()),
      inc.node ? prop('Node', inc.node) : null,
      inc.risk_object ? prop('Risk object', inc.risk_object) : null,
      prop('Risk score', orDash(inc.risk_score)),
      prop('Opened', timeEl(inc.opened_at)),
      prop('Closes', timeEl(inc.closes_at)),
      prop('Closed', timeEl(inc.closed_at)),
      prop('Detected', timeEl(inc.detected_at)),
      prop('Findings', orDash(inc.finding_count)),
      prop('Rule', h('span', { class: 'mono' }, orDash(inc.rule_id)))
    );
    const workflow = h(
      'dl',
      { class: 'props', 'data-testid': 'incident-workflow' },
      prop('Status', wf.status ? badge('status', wf.status, 'workflow-status') : h('span', { 'data-testid': 'workflow-status' }, '—')),
      prop('By', orDash(wf.by), 'workflow-by'),
      prop('At', timeEl(wf.at), 'workflow-at'),
      prop('Note', wf.note ? h('span', { class: 'note' }, wf.note) : dash(), 'workflow-note-text')
    );
    const spread = h(
      'dl',
      { class: 'props' },
      prop(`Nodes (${(inc.nodes || []).length})`, chipList(inc.nodes, 60, 'incident-nodes')),
      prop(`Namespaces (${(inc.namespaces || []).length})`, chipList(inc.namespaces, 40, 'incident-namespaces')),
      prop(`Workloads (${(inc.workloads || []).length})`, chipList(inc.workloads, 40, 'incident-workloads')),
      prop(`Images (${(inc.images || []).length})`, chipList(inc.images, 40, 'incident-images'))
    );

    add(main,
      h('p', { class: 'crumbs' }, h('a', { href: '#/incidents' }, '← Incidents')),
      h('h1', { 'data-testid': 'incident-title' }, inc.title || `Incident ${id}`),
      h('div', { class: 'badges' }, badge('kind', inc.kind), inc.scope ? badge('scope', inc.scope) : null, inc.severity ? badge('sev', inc.severity) : null, badge('state', inc.state), wf.status ? badge('status', wf.status) : null),
      inc.look_alike
        ? h('div', { class: 'lookalike', 'data-testid': 'look-alike', role: 'note' }, '⚠ Look-alike: this image is one edit away from ', h('span', { class: 'mono' }, String(inc.look_alike)), ', which the fleet has run for a long time. Check for typosquatting.')
        : null,
      actions,
      h(
        'div',
        { class: 'detail-grid' },
        h('section', { class: 'panel', 'aria-labelledby': 'inc-d' }, h('h2', { id: 'inc-d' }, 'Details'), details),
        h('div', null, h('section', { class: 'panel', 'aria-labelledby': 'inc-w' }, h('h2', { id: 'inc-w' }, 'Workflow'), workflow), h('section', { class: 'panel', 'aria-labelledby': 'inc-s' }, h('h2', { id: 'inc-s' }, 'Where'), spread))
      ),
      h('h2', { id: 'inc-m' }, `Members (${members.length})`),
      membersTable(members),
      h('h2', { id: 'inc-a' }, `Audit (${audit.length})`),
      auditTable(audit)
    );
    setLoading(false);
    focusHeading();
  }

  function prop(label, value, testid) {
    const dd = h('dd', { 'data-testid': testid || null });
    append(dd, [value === null || value === undefined ? dash() : value]);
    return [h('dt', null, label), dd];
  }

  function membersTable(members) {
    if (!members.length) return h('p', { class: 'empty' }, 'This incident has no members.');
    const wrap = h('div', { 'data-testid': 'members' });
    let page = 0;
    const pages = Math.ceil(members.length / MEMBERS_PAGE);
    function draw() {
      clear(wrap);
      const rows = members.slice(page * MEMBERS_PAGE, (page + 1) * MEMBERS_PAGE);
      const tbody = h('tbody');
      for (const f of rows) {
        tbody.append(
          h(
            'tr',
            { 'data-testid': 'member-row', 'data-id': f.finding_id },
            h('td', { class: 'nowrap mono' }, h('a', { href: findingHref(f.finding_id), title: f.finding_id, 'aria-label': `Finding ${f.finding_id}`, 'data-testid': 'member-link' }, shortId(f.finding_id))),
            h('td', { class: 'wrap-any' }, orDash(f['k8s.node.name'])),
            h('td', { class: 'wrap-any' }, orDash(f['k8s.namespace.name'])),
            h('td', { class: 'wrap-any' }, orDash(f['k8s.pod.name'])),
            h('td', { class: 'wrap-any' }, orDash(workloadText(f.workload))),
            h('td', { class: 'wrap-any' }, orDash(f['container.image.tag'])),
            h('td', { class: 'nowrap' }, timeEl(f.first_seen)),
            h('td', null, f.scope ? badge('scope', f.scope) : dash(), f.suppressed ? h('span', { class: 'badge', title: f.suppressed.reason || '' }, 'suppressed') : null),
            h('td', null, canRespond() ? h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'data-testid': 'member-suppress', 'aria-label': `Suppress like finding ${f.finding_id}`, onclick: () => suppressDialog(f.finding_id) }, 'Suppress like this') : null)
          )
        );
      }
      const cols = ['Finding', 'Node', 'Namespace', 'Pod', 'Workload', 'Image tag', 'First seen', 'Scope', ''];
      wrap.append(
        h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'members-table' }, h('caption', null, 'Findings of this incident, in the order they joined'), h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'visually-hidden' }, 'Actions'))))), tbody))
      );
      if (pages > 1) {
        wrap.append(
          h(
            'nav',
            { class: 'pager', 'aria-label': 'Member pages' },
            h('button', { type: 'button', class: 'btn btn-secondary', disabled: page === 0, onclick: () => { page--; draw(); } }, '← Previous'),
            h('span', { class: 'muted' }, `Members ${page * MEMBERS_PAGE + 1}–${Math.min(members.length, (page + 1) * MEMBERS_PAGE)} of ${members.length}`),
            h('button', { type: 'button', class: 'btn btn-secondary', disabled: page >= pages - 1, onclick: () => { page++; draw(); } }, 'Next →')
          )
        );
      }
    }
    draw();
    return wrap;
  }

  function auditTable(audit) {
    if (!audit.length) return h('p', { class: 'empty', 'data-testid': 'audit-empty' }, 'No action on this incident yet.');
    return h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { 'data-testid': 'audit-table' },
        h('thead', null, h('tr', null, ['#', 'At', 'Actor', 'Action', 'Target', 'Note'].map((c) => h('th', { scope: 'col' }, c)))),
        h(
          'tbody',
          null,
          audit.map((a) => h('tr', { 'data-testid': 'audit-row' }, h('td', { class: 'num' }, orDash(a.seq)), h('td', { class: 'nowrap' }, timeEl(a.at)), h('td', null, orDash(a.actor)), h('td', { class: 'mono' }, orDash(a.action)), h('td', { class: 'mono wrap-any' }, orDash(a.target)), h('td', null, a.note === null || a.note === undefined ? dash() : typeof a.note === 'string' ? a.note : JSON.stringify(a.note))))
        )
      )
    );
  }

  // ---------------------------------------------------------------- dialogs

  function closeDialogs() {
    document.querySelectorAll('dialog').forEach((d) => {
      if (d.open) d.close();
      d.remove();
    });
  }

  function openDialog(testid, labelId, ...content) {
    closeDialogs();
    const dlg = h('dialog', { 'data-testid': testid, 'aria-labelledby': labelId }, content);
    dlg.addEventListener('close', () => {
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    return dlg;
  }

  function workflowDialog(inc, action) {
    const verb = action === 'ack' ? 'Acknowledge' : 'Resolve';
    const note = h('textarea', { id: 'wf-note', rows: '4', maxlength: '4096', 'data-testid': 'workflow-note' });
    const alertBox = h('div', { class: 'dialog-alert', role: 'alert', 'data-testid': 'dialog-alert' });
    const submit = h('button', { type: 'submit', class: 'btn', 'data-testid': 'workflow-submit' }, verb);
    const form = h(
      'form',
      null,
      h('p', { class: 'muted' }, inc.title || inc.incident_id),
      alertBox,
      h('div', { class: 'field' }, h('label', { for: 'wf-note' }, 'Note (optional, at most 4096 characters)'), note),
      h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'dialog-cancel', onclick: () => dlg.close() }, 'Cancel'), submit)
    );
    const dlg = openDialog('workflow-dialog', 'wf-h', h('h2', { id: 'wf-h' }, `${verb} incident`), form);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      alertBox.textContent = '';
      const body = {};
      if (note.value.trim()) body.note = note.value;
      try {
        const res = await api('POST', `/api/v1/incidents/${encodeURIComponent(inc.incident_id)}/${action}`, body);
        dlg.close();
        const st = res && res.workflow ? res.workflow.status : action === 'ack' ? 'acknowledged' : 'resolved';
        await renderIncident(inc.incident_id);
        showStatus(`Incident marked ${st}.`);
      } catch (e) {
        if (e.status === 401) return;
        alertBox.textContent = e.message;
        submit.disabled = false;
      }
    });
    note.focus();
  }

  async function suppressDialog(findingId) {
    let draft;
    try {
      draft = await api('GET', `/api/v1/findings/${encodeURIComponent(findingId)}/suppression`);
    } catch (e) {
      if (e.status !== 401) showError(e.message);
      return;
    }
    const matchers = draft && draft.matchers && typeof draft.matchers === 'object' ? draft.matchers : {};
    const name = h('input', { id: 'sup-name', type: 'text', autocomplete: 'off', spellcheck: 'false', 'data-testid': 'suppress-name', placeholder: 'derived from the matchers when empty' });
    name.value = draft && draft.name ? draft.name : '';
    const reason = h('input', { id: 'sup-reason', type: 'text', required: true, autocomplete: 'off', 'data-testid': 'suppress-reason', 'aria-describedby': 'sup-reason-hint' });
    reason.value = draft && draft.reason ? draft.reason : '';
    const expires = h('input', { id: 'sup-expires', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. 2026-12-31T00:00:00Z', 'data-testid': 'suppress-expires' });
    expires.value = draft && draft.expires ? draft.expires : '';
    const rows = [];
    const fs = h('fieldset', { class: 'matchers', 'data-testid': 'suppress-matchers' }, h('legend', null, 'Matchers'), h('p', { class: 'hint' }, 'A finding is suppressed when every ticked matcher matches it.'));
    Object.keys(matchers).forEach((field, idx) => {
      const m = matchers[field];
      const isRegex = m && typeof m === 'object' && typeof m.regex === 'string';
      const inc = h('input', { type: 'checkbox', id: `sup-inc-${idx}`, checked: true, 'data-testid': 'suppress-include', 'data-field': field });
      const val = h('input', { type: 'text', id: `sup-val-${idx}`, spellcheck: 'false', autocomplete: 'off', 'data-testid': 'suppress-matcher', 'data-field': field });
      val.value = isRegex ? m.regex : m === null || m === undefined ? '' : String(m);
      const rx = h('input', { type: 'checkbox', id: `sup-rx-${idx}`, checked: isRegex, 'data-testid': 'suppress-regex', 'data-field': field });
      inc.addEventListener('change', () => {
        val.disabled = !inc.checked;
        rx.disabled = !inc.checked;
      });
      rows.push({ field, inc, val, rx });
      fs.append(
        h(
          'div',
          { class: 'matcher' },
          h('label', { class: 'include', for: `sup-inc-${idx}` }, inc, field),
          h('label', { class: 'visually-hidden', for: `sup-val-${idx}` }, `Pattern for ${field}`),
          val,
          h('label', { class: 'regex', for: `sup-rx-${idx}` }, rx, 'regex')
        )
      );
    });
    if (!rows.length) fs.append(h('p', { class: 'muted' }, 'The server proposed no matcher for this finding.'));
    const alertBox = h('div', { class: 'dialog-alert', role: 'alert', 'data-testid': 'dialog-alert' });
    const submit = h('button', { type: 'submit', class: 'btn', 'data-testid': 'suppress-submit' }, 'Create suppression rule');
    const form = h(
      'form',
      { 'data-testid': 'suppress-form', novalidate: true },
      h('p', { class: 'hint' }, 'Finding ', h('span', { class: 'mono' }, findingId), '. The rule applies to findings from the next commit on; findings already recorded keep their incidents.'),
      alertBox,
      h('div', { class: 'row2' }, h('div', { class: 'field' }, h('label', { for: 'sup-name' }, 'Name (optional)'), name), h('div', { class: 'field' }, h('label', { for: 'sup-expires' }, 'Expires (optional, RFC 3339)'), expires)),
      h('div', { class: 'field' }, h('label', { for: 'sup-reason' }, 'Reason (required)'), reason, h('p', { class: 'hint', id: 'sup-reason-hint' }, 'Why these findings need no one’s attention; kept with the rule and in the audit log.')),
      fs,
      h('p', { class: 'hint' }, 'Patterns: exact, or a glob with * and ?; with “regex”, a regular expression that must match the whole value.'),
      h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'dialog-cancel', onclick: () => dlg.close() }, 'Cancel'), submit)
    );
    const dlg = openDialog('suppress-dialog', 'sup-h', h('h2', { id: 'sup-h' }, 'Suppress findings like this one'), form);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      alertBox.textContent = '';
      if (!reason.value.trim()) {
        alertBox.textContent = 'reason: a reason is required.';
        reason.focus();
        return;
      }
      const body = { reason: reason.value.trim(), matchers: {} };
      if (name.value.trim()) body.name = name.value.trim();
      if (expires.value.trim()) body.expires = expires.value.trim();
      for (const r of rows) {
        if (!r.inc.checked) continue;
        const v = r.val.value;
        if (!v.trim()) {
          alertBox.textContent = `matchers.${r.field}: empty pattern (untick it to leave it out).`;
          r.val.focus();
          return;
        }
        body.matchers[r.field] = r.rx.checked ? { regex: v } : v;
      }
      if (!Object.keys(body.matchers).length) {
        alertBox.textContent = 'matchers: include at least one matcher.';
        return;
      }
      submit.disabled = true;
      try {
        const rule = await api('POST', '/api/v1/suppressions', body);
        dlg.close();
        showStatus('Suppression rule ', h('strong', { 'data-testid': 'created-rule' }, rule && rule.name ? rule.name : body.name || ''), ' created; it applies to findings from the next commit on. ', h('a', { href: '#/suppressions' }, 'See the suppressions'));
      } catch (e) {
        if (e.status === 401) return;
        alertBox.textContent = e.message;
        submit.disabled = false;
      }
    });
    reason.focus();
  }

  function confirmDialog(testid, title, text, okLabel, onOk) {
    const alertBox = h('div', { class: 'dialog-alert', role: 'alert', 'data-testid': 'dialog-alert' });
    const ok = h('button', { type: 'submit', class: 'btn btn-danger', 'data-testid': 'confirm-ok' }, okLabel);
    const form = h('form', null, h('p', null, text), alertBox, h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'dialog-cancel', onclick: () => dlg.close() }, 'Cancel'), ok));
    const dlg = openDialog(testid, 'cf-h', h('h2', { id: 'cf-h' }, title), form);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      ok.disabled = true;
      try {
        await onOk();
        dlg.close();
      } catch (e) {
        if (e.status === 401) return;
        alertBox.textContent = e.message;
        ok.disabled = false;
      }
    });
    ok.focus();
  }

  // ---------------------------------------------------------------- findings

  const FINDING_FILTERS = [
    { name: 'cluster', label: 'Cluster' },
    { name: 'node', label: 'Node' },
    { name: 'namespace', label: 'Namespace' },
    { name: 'workload', label: 'Workload', placeholder: 'Kind/name' },
    { name: 'image', label: 'Image contains', wide: true },
    { name: 'scope', label: 'Scope', options: SCOPES },
    { name: 'suppressed', label: 'Suppressed', options: ['true', 'false'] },
    { name: 'incident', label: 'Incident ID', wide: true },
    { name: 'since', label: 'First seen since', placeholder: 'RFC 3339' },
    { name: 'until', label: 'First seen until', placeholder: 'RFC 3339' },
  ];

  function renderFindings(params) {
    const ctx = beginView('findings', 'Findings');
    const cfg = {
      view: 'findings',
      endpoint: '/api/v1/findings',
      noun: 'finding',
      nouns: 'findings',
      caption: 'Findings, newest first',
      empty: 'No finding matches these filters.',
      rowTestid: 'finding-row',
      rowAttrs: (f) => ({ 'data-id': f.finding_id }),
      columns: [
        { label: 'ID', cls: 'nowrap mono', cell: (f) => h('a', { href: findingHref(f.finding_id), title: f.finding_id, 'aria-label': `Finding ${f.finding_id}`, 'data-testid': 'finding-link' }, shortId(f.finding_id)) },
        { label: 'First seen', cls: 'nowrap', cell: (f) => timeEl(f.first_seen) },
        { label: 'Cluster', cls: 'wrap-any', cell: (f) => f['k8s.cluster.name'] },
        { label: 'Node', cls: 'wrap-any', cell: (f) => f['k8s.node.name'] },
        { label: 'Namespace', cls: 'wrap-any', cell: (f) => f['k8s.namespace.name'] },
        { label: 'Workload', cls: 'wrap-any', cell: (f) => workloadText(f.workload) },
        { label: 'Image', cls: 'wrap-any', testid: 'finding-image', cell: (f) => f['container.image.name'] },
        { label: 'Tag', cls: 'wrap-any', cell: (f) => f['container.image.tag'] },
        { label: 'Scope', testid: 'finding-scope', cell: (f) => (f.scope ? badge('scope', f.scope) : null) },
        { label: 'Risk', num: true, cell: (f) => (f.risk_score === null || f.risk_score === undefined ? null : String(f.risk_score)) },
        { label: 'Incident', cls: 'nowrap mono', cell: (f) => (f.incident_id ? h('a', { href: incidentHref(f.incident_id), title: f.incident_id, 'aria-label': `Incident ${f.incident_id}` }, shortId(f.incident_id)) : null) },
        { label: 'Suppressed', testid: 'finding-suppressed', cell: (f) => (f.suppressed ? h('span', { title: f.suppressed.reason || '' }, f.suppressed.rule || 'yes') : null) },
      ],
    };
    add(mainEl(), h('h1', null, 'Findings'), filterForm('findings', FINDING_FILTERS, params), listView(ctx, cfg, params));
  }

  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
      else out.push([key, v]);
    }
    return out;
  }

  async function renderFinding(id) {
    const ctx = beginView('finding', 'Finding');
    const main = mainEl();
    add(main, h('p', { class: 'crumbs' }, h('a', { href: '#/findings' }, '← Findings')), h('h1', { class: 'muted' }, 'Finding ', h('span', { class: 'mono' }, id)));
    let f;
    try {
      f = await api('GET', '/api/v1/findings/' + encodeURIComponent(id));
    } catch (e) {
      return failView(ctx, e);
    }
    if (!ctx.alive()) return;
    clear(main);
    const dl = h('dl', { class: 'props', 'data-testid': 'finding-fields' });
    for (const [k, v] of flatten(f || {}, '', [])) {
      let val;
      if (v === null || v === undefined) val = dash();
      else if (Array.isArray(v)) val = v.length ? v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(', ') : dash();
      else if (/(_at|_seen)$/.test(k) && typeof v === 'string') val = timeEl(v);
      else if (k === 'incident_id') val = h('a', { href: incidentHref(v), class: 'mono' }, String(v));
      else if (k === 'container.image.name') val = h('a', { href: imageHref(v) }, String(v));
      else val = String(v);
      dl.append(h('dt', { class: 'mono' }, k), h('dd', null, val));
    }
    const tools = h('div', { class: 'toolbar' });
    if (canRespond()) add(tools, h('button', { type: 'button', class: 'btn', 'data-testid': 'finding-suppress', onclick: () => suppressDialog(f.finding_id) }, 'Suppress like this'));
    if (f.incident_id) add(tools, h('a', { class: 'btn btn-secondary', href: incidentHref(f.incident_id) }, 'Its incident'));
    add(main,
      h('p', { class: 'crumbs' }, h('a', { href: '#/findings' }, '← Findings')),
      h('h1', { 'data-testid': 'finding-title' }, `${f['container.image.name'] || 'Finding'} on ${f['k8s.node.name'] || f.host || '?'}`),
      h('div', { class: 'badges' }, f.scope ? badge('scope', f.scope) : null, f.suppressed ? h('span', { class: 'badge', 'data-testid': 'finding-suppressed-badge' }, `suppressed by ${f.suppressed.rule}`) : null, f.late ? h('span', { class: 'badge' }, 'late') : null),
      f.look_alike ? h('div', { class: 'lookalike', 'data-testid': 'look-alike', role: 'note' }, '⚠ Look-alike of ', h('span', { class: 'mono' }, String(f.look_alike))) : null,
      tools,
      h('div', { class: 'detail-grid' }, h('section', { class: 'panel', 'aria-labelledby': 'f-d' }, h('h2', { id: 'f-d' }, 'Fields'), dl), h('section', { 'aria-labelledby': 'f-r' }, h('h2', { id: 'f-r' }, 'Raw JSON'), h('pre', { class: 'raw', 'data-testid': 'finding-raw', tabindex: '0' }, JSON.stringify(f, null, 2))))
    );
    setLoading(false);
    focusHeading();
  }

  // ---------------------------------------------------------------- images

  function renderImages(params) {
    const ctx = beginView('images', 'Images');
    const cfg = {
      view: 'images',
      endpoint: '/api/v1/images',
      noun: 'image',
      nouns: 'images',
      caption: 'Images the fleet has run',
      empty: 'No image matches.',
      rowTestid: 'image-row',
      rowAttrs: (i) => ({ 'data-image': i.image }),
      columns: [
        { label: 'Image', cls: 'wrap-any', testid: 'image-name', cell: (i) => h('a', { href: imageHref(i.image), 'data-testid': 'image-link' }, String(i.image)) },
        { label: 'First seen', cls: 'nowrap', cell: (i) => timeEl(i.first_seen) },
        { label: 'Last seen', cls: 'nowrap', cell: (i) => timeEl(i.last_seen) },
        { label: 'Clusters', cls: 'wrap-any', cell: (i) => joinList(i.clusters) },
        { label: 'Nodes', num: true, cell: (i) => orDash(i.node_count) },
        { label: 'Namespaces', cls: 'wrap-any', cell: (i) => joinList(i.namespaces) },
        { label: 'Workloads', cls: 'wrap-any', cell: (i) => joinList(i.workloads) },
        { label: 'Findings', num: true, cell: (i) => (i.findings ? h('a', { href: '#/findings?' + qs({ image: i.image }), 'aria-label': `${i.findings} findings of ${i.image}` }, String(i.findings)) : orDash(i.findings)) },
      ],
    };
    const fields = [
      { name: 'q', label: 'Search images', wide: true, type: 'search', testid: 'images-q', placeholder: 'part of the name' },
      { name: 'cluster', label: 'Cluster' },
    ];
    fields.applyLabel = 'Search';
    add(mainEl(), h('h1', null, 'Image inventory'), filterForm('images', fields, params), listView(ctx, cfg, params));
  }

  async function renderImage(ref) {
    const ctx = beginView('image', 'Image');
    const main = mainEl();
    add(main, h('p', { class: 'crumbs' }, h('a', { href: '#/images' }, '← Images')), h('h1', { class: 'muted' }, ref));
    let data;
    try {
      data = await api('GET', imageApiPath(ref));
    } catch (e) {
      if (e.status === 404 && e.body && e.body.known === false) {
        if (!ctx.alive()) return;
        clear(main);
        const canonical = typeof e.body.image === 'string' ? e.body.image : ref;
        add(main,
          h('p', { class: 'crumbs' }, h('a', { href: '#/images' }, '← Images')),
          h('h1', { 'data-testid': 'image-title' }, canonical),
          h('p', { 'data-testid': 'image-summary', class: 'lookalike' }, `${canonical} is not known: no node of the fleet has run it.`),
          e.body.error ? h('p', { class: 'muted' }, e.body.error) : null
        );
        setLoading(false);
        focusHeading();
        return;
      }
      return failView(ctx, e);
    }
    if (!ctx.alive()) return;
    const img = (data && data.image) || {};
    const incidents = Array.isArray(data && data.incidents) ? data.incidents : [];
    const clusters = Array.isArray(img.clusters) ? img.clusters : [];
    clear(main);
    document.title = `${img.image} · unseen`;
    add(main,
      h('p', { class: 'crumbs' }, h('a', { href: '#/images' }, '← Images')),
      h('h1', { 'data-testid': 'image-title' }, String(img.image || ref)),
      h(
        'p',
        { 'data-testid': 'image-summary', class: 'summary' },
        'Known since ',
        timeEl(img.first_seen),
        ` (last seen `,
        timeEl(img.last_seen),
        `), on ${img.node_count ?? 0} ${img.node_count === 1 ? 'node' : 'nodes'} in ${clusters.length === 1 ? 'cluster' : 'clusters'} ${clusters.join(', ') || '—'}.`
      ),
      h('div', { class: 'toolbar' }, h('a', { class: 'btn', href: '#/findings?' + qs({ image: img.image || ref }), 'data-testid': 'image-findings-link' }, `Its findings (${img.findings ?? 0})`)),
      h(
        'div',
        { class: 'detail-grid' },
        h(
          'section',
          { class: 'panel', 'aria-labelledby': 'img-w' },
          h('h2', { id: 'img-w' }, 'Where it runs'),
          h('dl', { class: 'props' }, prop(`Clusters (${clusters.length})`, chipList(clusters, 40)), prop(`Namespaces (${(img.namespaces || []).length})`, chipList(img.namespaces, 40)), prop(`Workloads (${(img.workloads || []).length})`, chipList(img.workloads, 40)), prop(`Nodes (${(img.nodes || []).length})`, chipList(img.nodes, 40, 'image-nodes')))
        ),
        h(
          'section',
          { class: 'panel', 'aria-labelledby': 'img-i' },
          h('h2', { id: 'img-i' }, `Incidents (${incidents.length})`),
          incidents.length ? h('ul', { 'data-testid': 'image-incidents' }, incidents.slice(0, 200).map((id) => h('li', null, h('a', { href: incidentHref(id), class: 'mono' }, String(id))))) : h('p', { class: 'muted' }, 'None.'),
          incidents.length > 200 ? h('p', { class: 'muted' }, `and ${incidents.length - 200} more`) : null
        )
      )
    );
    setLoading(false);
    focusHeading();
  }

  // ---------------------------------------------------------------- timeline

  function renderTimeline(params) {
    const ctx = beginView('timeline', 'Timeline');
    const main = mainEl();
    const fields = [
      { name: 'since', label: 'Since (RFC 3339)', wide: true, placeholder: '2026-01-06T00:00:00Z' },
      { name: 'until', label: 'Until (RFC 3339)', wide: true, placeholder: 'default: newest finding' },
      { name: 'cluster', label: 'Cluster' },
    ];
    fields.applyLabel = 'Show';
    const out = h('div', { 'data-testid': 'timeline' });
    add(main, h('h1', null, 'Timeline'), filterForm('timeline', fields, params), out);
    (async () => {
      let data;
      try {
        data = await api('GET', '/api/v1/timeline' + (params.toString() ? '?' + qs(Object.fromEntries(params.entries())) : ''));
      } catch (e) {
        return failView(ctx, e);
      }
      if (!ctx.alive()) return;
      const points = Array.isArray(data.points) ? data.points : [];
      const incidents = Array.isArray(data.incidents) ? data.incidents : [];
      add(out,
        h('div', { class: 'tl-head' }, h('p', { class: 'muted', 'data-testid': 'timeline-summary' }, `From `, timeEl(data.since), ` to `, timeEl(data.until), ` · ${points.length} first sightings · ${incidents.length} incidents.`),
        h(
          'div',
          { class: 'legend', 'aria-hidden': 'true' },
          h('span', null, h('span', { class: 'sw fleet' }), 'fleet'),
          h('span', null, h('span', { class: 'sw cluster' }), 'cluster'),
          h('span', null, h('span', { class: 'sw node' }), 'node'),
          h('span', null, h('span', { class: 'sw band' }), 'members of one incident'),
          h('span', null, h('span', { class: 'sw marker' }), 'incident opened (hover for its title)')
        ))
      );
      const wrap = h('div', { class: 'timeline-wrap' });
      add(out, wrap);
      const width = Math.max(900, Math.floor(wrap.clientWidth - 8));
      const budgetH = Math.max(420, window.innerHeight - wrap.getBoundingClientRect().top - 16);
      wrap.append(drawTimeline(data, width, budgetH));
      setLoading(false);
    })();
  }

  function naturalCmp(a, b) {
    return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: 'base' });
  }

  function niceStep(spanMs, maxTicks) {
    const H = 3600e3;
    const steps = [15 * 60e3, 30 * 60e3, H, 2 * H, 3 * H, 6 * H, 12 * H, 24 * H, 2 * 24 * H, 7 * 24 * H, 14 * 24 * H, 28 * 24 * H];
    for (const st of steps) if (spanMs / st <= maxTicks) return st;
    return steps[steps.length - 1];
  }

  function drawTimeline(data, W, budgetH) {
    const points = (Array.isArray(data.points) ? data.points : []).filter((p) => p && p.t && !isNaN(Date.parse(p.t)));
    const incidents = Array.isArray(data.incidents) ? data.incidents : [];
    const series = Array.isArray(data.series) ? data.series : [];
    const bucketMs = (Number(data.bucket_seconds) || 3600) * 1000;
    let t0 = Date.parse(data.since);
    let t1 = Date.parse(data.until);
    if (isNaN(t0) || isNaN(t1) || t1 <= t0) {
      const ts = points.map((p) => Date.parse(p.t));
      t0 = ts.length ? Math.min(...ts) : Date.now() - 86400e3;
      t1 = ts.length ? Math.max(...ts) + 60e3 : Date.now();
    }

    // Rows: one per node, grouped by cluster.
    const byCluster = new Map();
    for (const p of points) {
      const c = p.cluster === null || p.cluster === undefined ? '(no cluster)' : String(p.cluster);
      if (!byCluster.has(c)) byCluster.set(c, new Set());
      byCluster.get(c).add(p.node === null || p.node === undefined ? '(no node)' : String(p.node));
    }
    const clusterNames = [...byCluster.keys()].sort(naturalCmp);
    const rows = new Map(); // "cluster\u0000node" -> row index
    const groups = [];
    let nRows = 0;
    for (const c of clusterNames) {
      const nodes = [...byCluster.get(c)].sort(naturalCmp);
      groups.push({ cluster: c, first: nRows, count: nodes.length });
      nodes.forEach((n) => rows.set(c + '\u0000' + n, nRows++));
    }
    // Fit the drawing to the height left on the screen: the scatter gets what the bars,
    // the axis and the cluster headers leave, a row per node between 3 and 16 px.
    const seriesSorted = series.slice().sort((a, b) => naturalCmp(a.cluster, b.cluster));
    const barH = 26;
    const barGap = 4;
    const barsH = seriesSorted.length * (barH + barGap);
    const groupHead = 14;
    const L = 170;
    const R = 14;
    const top = 16;
    const fixed = top + groups.length * groupHead + 22 + barsH + 6;
    const budget = Math.max(160, Math.min(900, (budgetH || 700) - fixed));
    const rowH = Math.max(3, Math.min(16, Math.floor(budget / Math.max(1, nRows))));
    const plotW = W - L - R;
    const scatterH = nRows * rowH + groups.length * groupHead;
    const x = (ms) => L + ((ms - t0) / (t1 - t0)) * plotW;
    const rowY = (ri, gi) => top + (gi + 1) * groupHead + ri * rowH + rowH / 2;
    const groupOf = new Map();
    groups.forEach((g, gi) => {
      for (let i = 0; i < g.count; i++) groupOf.set(g.first + i, gi);
    });

    // Under the scatter: the time axis' labels, then the bars of findings per bucket per cluster.
    const axisY = top + scatterH + 14;
    const barsTop = axisY + 8;
    const H = barsTop + barsH + 4;
    let maxF = 1;
    for (const sr of seriesSorted) for (const b of sr.buckets || []) maxF = Math.max(maxF, Number(b.findings) || 0);

    const svg = s('svg', {
      class: 'timeline',
      width: W,
      height: H,
      viewBox: `0 0 ${W} ${H}`,
      role: 'img',
      'aria-labelledby': 'tl-title tl-desc',
      'data-testid': 'timeline-svg',
      'data-points': points.length,
    });
    svg.append(
      s('title', { id: 'tl-title' }, 'Timeline of first sightings'),
      s('desc', { id: 'tl-desc' }, `${points.length} first sightings on ${nRows} nodes in ${clusterNames.length} clusters, ${incidents.length} incidents; below, findings per ${Math.round(bucketMs / 60000)} minutes per cluster.`)
    );

    // Grid and time axis.
    const step = niceStep(t1 - t0, Math.max(2, Math.floor(plotW / 95)));
    const grid = s('g', { class: 'axis' });
    const firstTick = Math.ceil(t0 / step) * step;
    let lastDay = null;
    for (let t = firstTick; t <= t1; t += step) {
      const xx = x(t);
      grid.append(s('line', { class: 'grid', x1: xx, x2: xx, y1: top - 4, y2: barsTop + barsH }));
      const d = new Date(t).toISOString();
      const day = d.slice(5, 10);
      const label = step >= 24 * 3600e3 ? day : day !== lastDay ? `${day} ${d.slice(11, 16)}` : d.slice(11, 16);
      lastDay = day;
      grid.append(s('text', { x: xx, y: axisY, 'text-anchor': xx - L < 36 ? 'start' : xx > W - R - 36 ? 'end' : 'middle' }, label));
    }
    grid.append(s('text', { x: W - R, y: top - 6, 'text-anchor': 'end' }, 'UTC'));
    svg.append(grid);

    // Cluster groups and node labels.
    const labels = s('g', { class: 'labels' });
    groups.forEach((g, gi) => {
      const y0 = top + gi * groupHead + g.first * rowH; // the group's header line
      if (gi > 0) labels.append(s('line', { class: 'sep', x1: 4, x2: W - R, y1: y0 + 1, y2: y0 + 1 }));
      labels.append(s('text', { class: 'cluster-label', x: 6, y: y0 + 12 }, `${g.cluster} · ${g.count} ${g.count === 1 ? 'node' : 'nodes'}`));
      if (rowH >= 9) {
        const fs = Math.min(10, rowH);
        const nodes = [...byCluster.get(g.cluster)].sort(naturalCmp);
        nodes.forEach((n, i) => {
          labels.append(s('text', { x: L - 6, y: y0 + groupHead + i * rowH + rowH / 2 + fs * 0.35, 'text-anchor': 'end', 'font-size': fs }, n));
        });
      }
    });
    svg.append(labels);

    // Bands: the points of one incident (not the day-long digests) as one translucent rectangle.
    const kindOf = new Map(incidents.map((i) => [i.incident_id, i]));
    const byIncident = new Map();
    for (const p of points) {
      if (!p.incident_id) continue;
      if (!byIncident.has(p.incident_id)) byIncident.set(p.incident_id, []);
      byIncident.get(p.incident_id).push(p);
    }
    const r = Math.max(1.5, Math.min(4, rowH / 2 - 0.5));
    const bands = s('g', { class: 'bands' });
    for (const [id, pts] of byIncident) {
      const inc = kindOf.get(id);
      if (pts.length < 2 || (inc && inc.kind === 'digest')) continue;
      let xmin = Infinity;
      let xmax = -Infinity;
      let ymin = Infinity;
      let ymax = -Infinity;
      for (const p of pts) {
        const ri = rows.get(String(p.cluster ?? '(no cluster)') + '\u0000' + String(p.node ?? '(no node)'));
        const xx = x(Date.parse(p.t));
        const yy = rowY(ri, groupOf.get(ri));
        xmin = Math.min(xmin, xx);
        xmax = Math.max(xmax, xx);
        ymin = Math.min(ymin, yy);
        ymax = Math.max(ymax, yy);
      }
      const scope = (inc && inc.scope) || pts[0].scope || 'none';
      bands.append(
        s(
          'rect',
          { class: `band ${SCOPES.includes(scope) ? scope : 'none'}`, x: xmin - r - 2, y: ymin - rowH / 2, width: Math.max(2 * r + 4, xmax - xmin + 2 * r + 4), height: ymax - ymin + rowH, rx: 3, 'data-testid': 'timeline-band', 'data-incident': id },
          s('title', null, `${inc ? inc.title : id}: ${pts.length} findings`)
        )
      );
    }
    svg.append(bands);

    // Points.
    const dots = s('g', { class: 'points' });
    for (const p of points) {
      const ri = rows.get(String(p.cluster ?? '(no cluster)') + '\u0000' + String(p.node ?? '(no node)'));
      const scope = SCOPES.includes(p.scope) ? p.scope : 'none';
      dots.append(
        s(
          'circle',
          { class: `pt ${scope}`, cx: x(Date.parse(p.t)).toFixed(1), cy: rowY(ri, groupOf.get(ri)).toFixed(1), r, 'data-testid': 'timeline-point', 'data-finding': p.finding_id || null },
          s('title', null, `${fmtTime(p.t)} · ${p.cluster ?? ''}/${p.node ?? ''} · ${p.image ?? ''} · ${p.scope ?? ''}`)
        )
      );
    }
    dots.addEventListener('click', (ev) => {
      const id = ev.target && ev.target.getAttribute && ev.target.getAttribute('data-finding');
      if (id) location.hash = findingHref(id);
    });
    svg.append(dots);

    // Incident markers: a vertical line at opened_at, a link to the incident.
    const markers = s('g', { class: 'markers' });
    for (const inc of incidents) {
      const t = Date.parse(inc.opened_at);
      if (isNaN(t) || t < t0 || t > t1) continue;
      const xx = x(t);
      markers.append(
        s(
          'a',
          { href: incidentHref(inc.incident_id), 'data-testid': 'timeline-marker', 'aria-label': `Incident: ${inc.title || inc.incident_id}` },
          s('title', null, `${inc.title || inc.incident_id} (${inc.kind || ''}, ${inc.scope || ''}, opened ${fmtTime(inc.opened_at)})`),
          s('line', { class: 'marker', x1: xx, x2: xx, y1: top - 6, y2: top + scatterH }),
          s('path', { class: 'marker-head', d: `M${xx - 4},${top - 10} L${xx + 4},${top - 10} L${xx},${top - 4} Z` }),
          s('line', { class: 'hit', x1: xx, x2: xx, y1: top - 10, y2: top + scatterH })
        )
      );
    }
    svg.append(markers);

    // Bars of findings per bucket, one strip per cluster.
    const bars = s('g', { class: 'bars' });
    bars.append(s('text', { x: 6, y: axisY, class: 'cluster-label' }, `Findings per ${bucketMs >= 3600e3 ? Math.round(bucketMs / 3600e3) + ' h' : Math.round(bucketMs / 60e3) + ' min'} (max ${maxF})`));
    seriesSorted.forEach((sr, i) => {
      const y0 = barsTop + i * (barH + barGap);
      bars.append(s('line', { class: 'sep', x1: L, x2: W - R, y1: y0 + barH, y2: y0 + barH }));
      bars.append(s('text', { x: L - 6, y: y0 + barH - 4, 'text-anchor': 'end' }, String(sr.cluster ?? '(no cluster)')));
      for (const b of sr.buckets || []) {
        const t = Date.parse(b.t);
        const n = Number(b.findings) || 0;
        if (isNaN(t) || n <= 0) continue;
        const xa = Math.max(L, x(t));
        const xb = Math.min(W - R, x(t + bucketMs));
        if (xb <= xa) continue;
        const hh = Math.max(1, (n / maxF) * barH);
        bars.append(s('rect', { class: 'bar', x: xa + 0.5, y: y0 + barH - hh, width: Math.max(1, xb - xa - 1), height: hh, 'data-testid': 'timeline-bar' }, s('title', null, `${sr.cluster ?? ''} · ${fmtTime(b.t)}: ${n} findings`)));
      }
    });
    svg.append(bars);
    if (!points.length) svg.append(s('text', { x: L + plotW / 2, y: top + 20, 'text-anchor': 'middle' }, 'No first sighting in this range.'));
    return svg;
  }

  // ---------------------------------------------------------------- suppressions

  function matcherText(field, m) {
    if (m && typeof m === 'object' && typeof m.regex === 'string') return `${field} ~ /${m.regex}/`;
    return `${field} = ${m}`;
  }

  function renderSuppressions(params) {
    const ctx = beginView('suppressions', 'Suppressions');
    const cfg = {
      view: 'suppressions',
      endpoint: '/api/v1/suppressions',
      sendLimit: false, // the rules are few: one page, no `limit` sent
      noun: 'rule',
      nouns: 'rules',
      caption: 'Suppression rules in force or expired',
      empty: 'No suppression rule.',
      rowTestid: 'suppression-row',
      rowAttrs: (r) => ({ 'data-name': r.name, 'data-active': String(!!r.active) }),
      columns: [
        { label: 'Name', cls: 'mono wrap-any', testid: 'suppression-name', cell: (r) => r.name },
        { label: 'Reason', cell: (r) => r.reason },
        { label: 'Author', cell: (r) => r.author },
        {
          label: 'Matchers',
          cls: 'wrap-any',
          cell: (r) => {
            const m = r.matchers && typeof r.matchers === 'object' ? Object.entries(r.matchers) : [];
            return m.length ? h('ul', { class: 'plain' }, m.map(([k, v]) => h('li', null, h('code', null, matcherText(k, v))))) : null;
          },
        },
        { label: 'Source', cell: (r) => r.source },
        { label: 'Expires', cls: 'nowrap', cell: (r) => timeEl(r.expires) },
        { label: 'Active', testid: 'suppression-active', cell: (r) => h('span', { class: `badge active-${r.active ? 'yes' : 'no'}` }, r.active ? 'active' : 'inactive') },
        {
          label: 'Actions',
          cell: (r) =>
            isAdmin() && r.active
              ? h(
                  'button',
                  {
                    type: 'button',
                    class: 'btn btn-danger btn-small',
                    'data-testid': 'suppression-expire',
                    'aria-label': `Expire rule ${r.name}`,
                    onclick: () =>
                      confirmDialog('expire-dialog', 'Expire suppression rule', `Expire “${r.name}” now? Findings that it would catch alert again from the next commit on.`, 'Expire', async () => {
                        await api('POST', `/api/v1/suppressions/${encodeURIComponent(r.name)}/expire`);
                        route(true);
                        showStatus(`Rule ${r.name} expired.`);
                      }),
                  },
                  'Expire'
                )
              : null,
        },
      ],
    };
    add(mainEl(), h('h1', null, 'Suppressions'), listView(ctx, cfg, params));
  }

  // ---------------------------------------------------------------- start

  async function start() {
    document.querySelector('[data-testid="logout"]').addEventListener('click', logout);
    const skip = document.querySelector('[data-skip]');
    if (skip)
      skip.addEventListener('click', (ev) => {
        ev.preventDefault();
        mainEl().focus();
      });
    window.addEventListener('hashchange', () => route(false));
    try {
      state.session = await api('GET', '/api/v1/session');
    } catch (e) {
      state.session = null;
      if (e.status !== 401) showError(e.message);
    }
    renderSessionBox();
    if (state.session) route(true);
    else renderLogin(document.getElementById('alert').textContent);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
