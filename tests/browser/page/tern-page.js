// Tern browser test page: mqtt.js and STOMP.js clients driven by test_browser.py through
// drive.js (Playwright's page.evaluate). Every call returns a promise that settles within a
// timeout; the page waits on the libraries' events (CONNACK, CONNECTED, RECEIPT, messages,
// PINGRESP, heart-beats), never on sleeps. Loaded BEFORE the library bundles so that the
// WebSocket wrapper below sees every socket they open (url, offered and chosen subprotocol,
// close code).
'use strict';
(function () {
  const NativeWebSocket = window.WebSocket;
  const T = {
    clients: {},
    sockets: [],
    pendingName: null, // the client whose WebSocket is being opened (connects are serialized)
    failures: [],
    ready: false,
  };
  window.T = T;

  // -- display --------------------------------------------------------------------------------

  function esc(s) {
    return String(s).replace(/[&<>]/g, ch => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' }[ch]));
  }

  T.log = function (text, cls) {
    const div = document.createElement('div');
    div.className = cls || 'info';
    div.textContent = new Date().toISOString().slice(11, 23) + ' ' + text;
    const log = document.getElementById('log');
    if (log) log.appendChild(div);
  };

  T.phase = function (text) {
    T.log('== ' + text, 'phase');
    return true;
  };

  T.result = function (ok, text) {
    // ok: true (passed), false (failed) or a string (skipped, why)
    const skipped = typeof ok === 'string';
    T.log((skipped ? 'SKIP ' : ok ? 'PASS ' : 'FAIL ') + text + (skipped ? ': ' + ok : ''),
      skipped ? 'info' : ok ? 'ok' : 'bad');
    if (!ok) T.failures.push(text);
    render();
    return true;
  };

  function render() {
    const tbody = document.querySelector('#clients tbody');
    if (!tbody) return;
    tbody.innerHTML = Object.values(T.clients).map(c => {
      const ka = c.kind === 'mqtt' ? `PINGREQ ${c.pingreqs} / PINGRESP ${c.pingresps}`
        : `PING out ${c.pings} / heart-beat in ${c.pongs}`;
      const state = c.connected ? '<span class="ok">connected</span>'
        : `<span class="${c.everConnected ? 'bad' : 'info'}">${c.everConnected ? 'closed' : 'new'}</span>`;
      return `<tr><td>${esc(c.name)}</td><td>${esc(c.url)}</td><td>${esc(c.subprotocol || '')}</td>`
        + `<td>${state}</td><td>${c.rx}</td><td>${c.tx}</td><td>${ka}</td></tr>`;
    }).join('');
    const n = Object.keys(T.clients).length;
    document.getElementById('summary').innerHTML = `${n} clients, ${T.sockets.length} WebSockets; `
      + (T.failures.length ? `<span class="bad">${T.failures.length} failed checks</span>`
        : '<span class="ok">no failed checks</span>');
  }
  T.render = render;

  // -- WebSocket wrapper ----------------------------------------------------------------------

  class TrackedWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const owner = T.pendingName;
      const rec = {
        owner, url: String(url), offered: protocols === undefined ? [] : [].concat(protocols),
        protocol: null, opened: false, close: null, error: false, ws: this,
      };
      T.sockets.push(rec);
      const c = owner ? T.clients[owner] : null;
      if (c) c.sockets.push(rec);
      this.addEventListener('open', () => {
        rec.opened = true;
        rec.protocol = this.protocol;
        if (c) c.subprotocol = this.protocol;
        render();
      });
      this.addEventListener('close', e => {
        rec.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
        if (c) note(c, 'ws-close', `code ${e.code} ${e.reason}`);
        render();
      });
      this.addEventListener('error', () => {
        rec.error = true;
        if (c) note(c, 'ws-error', rec.url);
      });
    }
  }
  window.WebSocket = TrackedWebSocket;

  // -- clients, messages, waits ---------------------------------------------------------------

  function newClient(name, kind, url) {
    if (T.clients[name]) throw new Error('client ' + name + ' already exists');
    const c = {
      name, kind, url, lib: null, subprotocol: null, connected: false, everConnected: false,
      closing: false, msgs: [], waiters: [], watchers: [], events: [], chain: Promise.resolve(),
      rx: 0, tx: 0, pings: 0, pongs: 0, pingreqs: 0, pingresps: 0, chunks: 0, sockets: [],
      connectInfo: null,
    };
    T.clients[name] = c;
    render();
    return c;
  }

  // A failed or timed-out connect leaves no client behind retrying in the background.
  function settleConnect(c, promise) {
    return promise.then(v => { T.pendingName = null; return v; }, e => {
      T.pendingName = null;
      c.closing = true;
      try {
        if (c.lib && c.kind === 'mqtt') c.lib.end(true);
        else if (c.lib) c.lib.deactivate();
      } catch (ignored) { /* already closed */ }
      render();
      throw e;
    });
  }

  function client(name) {
    const c = T.clients[name];
    if (!c) throw new Error('no client ' + name);
    return c;
  }

  function note(c, type, detail) {
    c.events.push({ type, detail: detail === undefined ? '' : String(detail), t: Date.now() });
    const bad = !c.closing && /close|error|offline|reconnect|lost/.test(type);
    T.log(`${c.name}: ${type} ${detail === undefined ? '' : detail}`, bad ? 'bad' : 'info');
    wake(c);
    render();
  }

  function wake(c) {
    for (const w of c.watchers.slice()) w();
  }

  // Settles with fn's value or rejects after ms; `cleanup` runs either way.
  function withTimeout(ms, what, start) {
    return new Promise((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        reject(new Error(`timed out after ${ms} ms: ${typeof what === 'function' ? what() : what}`));
      }, ms);
      start(v => { if (!done) { done = true; clearTimeout(timer); resolve(v); } },
            e => { if (!done) { done = true; clearTimeout(timer); reject(e); } });
    });
  }

  function toBytes(x) {
    if (x instanceof Uint8Array) return x;
    if (typeof x === 'string') return new TextEncoder().encode(x);
    return new Uint8Array(x);
  }

  async function sha256(bytes) {
    const d = await crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, '0')).join('');
  }

  // Deterministic printable text of n bytes, the same as test_browser.py's pattern().
  T.pattern = function (n, seed) {
    const parts = [];
    let len = 0;
    for (let i = 0; len < n; i++) {
      const s = `${seed}:${i};`;
      parts.push(s);
      len += s.length;
    }
    return parts.join('').slice(0, n);
  };

  function bodyFrom(spec) {
    // A payload is a string, or {pattern: N, seed: S} for a large generated one.
    if (spec && typeof spec === 'object' && 'pattern' in spec) return T.pattern(spec.pattern, spec.seed);
    return spec;
  }

  // Messages are queued in arrival order (hashing is async, so it is chained per client).
  function deliver(c, m, bytes) {
    c.chain = c.chain.then(async () => {
      m.length = bytes.length;
      m.sha256 = await sha256(bytes);
      m.body = bytes.length <= 4096 ? new TextDecoder().decode(bytes) : null;
      m.at = Date.now();
      c.rx++;
      c.msgs.push(m);
      T.log(`${c.name} <- ${m.topic || m.destination}: `
        + (m.body === null ? `(${m.length} bytes)` : JSON.stringify(m.body).slice(0, 70)), 'info');
      wake(c);
      render();
    });
  }

  function logSent(c, where, body, bytes) {
    T.log(`${c.name} -> ${where}: `
      + (bytes.length > 4096 ? `(${bytes.length} bytes)` : JSON.stringify(body).slice(0, 70)), 'info');
    render();
  }

  // The next message that client `name` received (in order), waiting up to ms for it.
  T.next = function (name, ms) {
    const c = client(name);
    let check = null;
    return withTimeout(ms || 8000, () => `a message on ${name} (events: ${JSON.stringify(c.events)})`,
      (resolve) => {
        check = () => {
          if (c.msgs.length) {
            unwatch(c, check);
            resolve(c.msgs.shift());
          }
        };
        c.watchers.push(check);
        check();
      }).finally(() => unwatch(c, check));
  };

  function unwatch(c, w) {
    const i = c.watchers.indexOf(w);
    if (i >= 0) c.watchers.splice(i, 1);
  }

  T.pending = function (name) {
    return client(name).msgs.map(m => ({ topic: m.topic, destination: m.destination, body: m.body }));
  };

  T.status = function (name) {
    const c = client(name);
    const last = c.sockets[c.sockets.length - 1];
    return {
      name: c.name, kind: c.kind, url: c.url, connected: c.connected, subprotocol: c.subprotocol,
      events: c.events, rx: c.rx, tx: c.tx, pings: c.pings, pongs: c.pongs, pingreqs: c.pingreqs,
      pingresps: c.pingresps, chunks: c.chunks, queued: c.msgs.length, sockets: c.sockets.length,
      offered: last ? last.offered : null,
      socketState: last ? last.ws.readyState : null, connectInfo: c.connectInfo,
    };
  };

  // Waits until every listed client's counters have grown by the given amounts, e.g.
  // {"s-ws": {pings: 2, pongs: 2}, "k-ws": {pingresps: 3}}. Fails at once if one of them
  // closes, errs or reconnects meanwhile.
  T.waitCounters = function (spec, ms) {
    const t0 = Date.now();
    const names = Object.keys(spec);
    const base = {};
    for (const n of names) {
      const c = client(n);
      base[n] = { events: c.events.length };
      for (const k of Object.keys(spec[n])) base[n][k] = c[k];
    }
    const counts = () => Object.fromEntries(names.map(n => [n, Object.fromEntries(
      Object.keys(spec[n]).map(k => [k, client(n)[k] - base[n][k]]))]));
    let cleanup = () => {};
    return withTimeout(ms, () => 'counters ' + JSON.stringify(spec) + ', have ' + JSON.stringify(counts()),
      (resolve, reject) => {
        const check = () => {
          for (const n of names) {
            const c = client(n);
            const bad = c.events.slice(base[n].events).filter(e => /close|error|offline|reconnect|lost/.test(e.type));
            if (bad.length || !c.connected) {
              reject(new Error(`${n} dropped while idle: ${JSON.stringify(bad)}`));
              return;
            }
          }
          for (const n of names) {
            for (const k of Object.keys(spec[n])) {
              if (client(n)[k] - base[n][k] < spec[n][k]) return;
            }
          }
          resolve({ elapsedMs: Date.now() - t0, counts: counts() });
        };
        for (const n of names) client(n).watchers.push(check);
        cleanup = () => { for (const n of names) unwatch(client(n), check); };
        check();
      }).finally(() => cleanup());
  };

  // -- mqtt.js ---------------------------------------------------------------------------------

  T.mqttConnect = function (name, url, opts, ms) {
    const c = newClient(name, 'mqtt', url);
    return settleConnect(c, withTimeout(ms || 8000, `CONNACK for ${name} at ${url}`, (resolve, reject) => {
      T.pendingName = name;
      const options = Object.assign({ clientId: 'tb-' + name }, opts || {});
      const m = mqtt.connect(url, options);
      c.lib = m;
      m.on('connect', connack => {
        T.pendingName = null;
        c.connected = true;
        c.everConnected = true;
        c.connectInfo = {
          sessionPresent: !!connack.sessionPresent,
          returnCode: connack.returnCode === undefined ? connack.reasonCode : connack.returnCode,
          protocolVersion: options.protocolVersion || 4,
          subprotocol: c.subprotocol,
        };
        note(c, 'connect', `v${c.connectInfo.protocolVersion} subprotocol ${c.subprotocol}`);
        resolve(c.connectInfo);
      });
      m.on('error', e => {
        note(c, 'error', e && e.message);
        if (!c.everConnected) {
          T.pendingName = null;
          c.closing = true;
          m.end(true);
          reject(new Error(`${name}: ${e && e.message} (code ${e && e.code})`));
        }
      });
      m.on('close', () => {
        c.connected = false;
        note(c, 'close');
        if (!c.everConnected) {
          T.pendingName = null;
          c.closing = true;
          m.end(true);
          reject(new Error(`${name}: connection closed before CONNACK`));
        }
      });
      m.on('offline', () => note(c, 'offline'));
      m.on('reconnect', () => note(c, 'reconnect'));
      m.on('message', (topic, payload, packet) => {
        deliver(c, { topic, qos: packet.qos, retain: !!packet.retain }, toBytes(payload));
      });
      m.on('packetreceive', p => { if (p.cmd === 'pingresp') { c.pingresps++; wake(c); render(); } });
      m.on('packetsend', p => { if (p.cmd === 'pingreq') { c.pingreqs++; wake(c); render(); } });
    }));
  };

  T.mqttSubscribe = function (name, topic, qos, ms) {
    const c = client(name);
    return withTimeout(ms || 8000, `SUBACK for ${name} ${topic}`, (resolve, reject) => {
      c.lib.subscribe(topic, { qos: qos || 0 }, (err, granted) => {
        if (err) reject(new Error(`${name}: subscribe ${topic}: ${err.message}`));
        else resolve(granted.map(g => g.qos));
      });
    });
  };

  T.mqttPublish = function (name, topic, payload, qos, ms) {
    const c = client(name);
    const body = bodyFrom(payload);
    const bytes = toBytes(body);
    return withTimeout(ms || 8000, `publish ${topic} by ${name}`, (resolve, reject) => {
      c.lib.publish(topic, body, { qos: qos || 0 }, async err => {
        if (err) { reject(new Error(`${name}: publish ${topic}: ${err.message}`)); return; }
        c.tx++;
        logSent(c, topic, body, bytes);
        resolve({ length: bytes.length, sha256: await sha256(bytes) });
      });
    });
  };

  // -- STOMP.js ---------------------------------------------------------------------------------

  let receipts = 0;

  T.stompConnect = function (name, url, opts, ms) {
    const c = newClient(name, 'stomp', url);
    opts = Object.assign({}, opts || {});
    return settleConnect(c, withTimeout(ms || 8000, `CONNECTED for ${name} at ${url}`, (resolve, reject) => {
      const cfg = {
        brokerURL: url,
        debug: s => {
          if (s === '>>> PING') { c.pings++; wake(c); render(); }
          else if (s.startsWith('chunk sent')) c.chunks++;
          else if (s.startsWith('did not receive server activity')) note(c, 'heartbeat-lost', s);
        },
        onConnect: frame => {
          T.pendingName = null;
          c.connected = true;
          c.everConnected = true;
          c.connectInfo = {
            version: frame.headers.version, heartBeat: frame.headers['heart-beat'],
            server: frame.headers.server, session: frame.headers.session, subprotocol: c.subprotocol,
          };
          note(c, 'connect', `STOMP ${frame.headers.version} subprotocol ${c.subprotocol} heart-beat ${frame.headers['heart-beat']}`);
          resolve(c.connectInfo);
        },
        onStompError: frame => {
          note(c, 'stomp-error', frame.headers.message + ' ' + frame.body);
          if (!c.everConnected) { T.pendingName = null; c.closing = true; c.lib.deactivate(); reject(new Error(`${name}: ERROR ${frame.headers.message}`)); }
        },
        onWebSocketClose: e => {
          c.connected = false;
          note(c, 'close', `code ${e.code}`);
          if (!c.everConnected) reject(new Error(`${name}: connection closed before CONNECTED (code ${e.code})`));
        },
        onHeartbeatReceived: () => { c.pongs++; wake(c); render(); },
        onUnhandledMessage: m => note(c, 'unhandled-message', m.headers.destination),
        onUnhandledReceipt: f => note(c, 'unhandled-receipt', f.headers['receipt-id']),
      };
      if (opts.versions) { cfg.stompVersions = new StompJs.Versions(opts.versions); delete opts.versions; }
      Object.assign(cfg, opts);
      const s = new StompJs.Client(cfg);
      c.lib = s;
      T.pendingName = name;
      s.activate();
    }));
  };

  function withReceipt(c, what, ms, send) {
    const receipt = `r-${c.name}-${++receipts}`;
    return withTimeout(ms || 8000, `RECEIPT ${receipt} for ${what}`, (resolve) => {
      c.lib.watchForReceipt(receipt, () => resolve(receipt));
      send(receipt);
    });
  }

  T.stompSubscribe = function (name, destination, headers, ms) {
    const c = client(name);
    return withReceipt(c, `SUBSCRIBE ${destination}`, ms, receipt => {
      c.lib.subscribe(destination, frame => {
        deliver(c, { destination: frame.headers.destination, headers: frame.headers }, frame.binaryBody);
      }, Object.assign({ receipt }, headers || {}));
    });
  };

  T.stompSend = function (name, destination, payload, headers, ms) {
    const c = client(name);
    const body = bodyFrom(payload);
    const chunksBefore = c.chunks;
    return withReceipt(c, `SEND ${destination}`, ms, receipt => {
      c.lib.publish({ destination, body, headers: Object.assign({ receipt }, headers || {}) });
    }).then(async () => {
      c.tx++;
      const bytes = toBytes(body);
      logSent(c, destination, body, bytes);
      return { length: bytes.length, sha256: await sha256(bytes), chunks: c.chunks - chunksBefore };
    });
  };

  // -- shutdown ---------------------------------------------------------------------------------

  // Closes the named clients (all of them without names): DISCONNECT, then the socket.
  T.close = function (names, ms) {
    const all = Object.values(T.clients).filter(c => c.lib && c.connected
      && (!names || names.includes(c.name)));
    return withTimeout(ms || 5000, 'clients closed', (resolve) => {
      let left = all.length;
      if (!left) resolve(0);
      for (const c of all) {
        c.closing = true;
        const done = () => { if (--left === 0) resolve(all.length); };
        if (c.kind === 'mqtt') c.lib.end(false, {}, done);
        else c.lib.deactivate().then(done, done);
      }
    });
  };

  T.closeAll = ms => T.close(null, ms);

  // Waits until the named clients' WebSockets have closed; returns their close events
  // ({code, reason, wasClean}) by name.
  T.waitClosed = function (names, ms) {
    const cs = names.map(client);
    const last = c => c.sockets[c.sockets.length - 1];
    let check = null;
    return withTimeout(ms || 8000, () => 'close of ' + names.join(', '), resolve => {
      check = () => {
        if (cs.every(c => last(c) && last(c).close)) {
          resolve(Object.fromEntries(cs.map(c => [c.name, last(c).close])));
        }
      };
      for (const c of cs) c.watchers.push(check);
      check();
    }).finally(() => { for (const c of cs) unwatch(c, check); });
  };

  T.libs = function () {
    return { mqtt: typeof mqtt !== 'undefined', stomp: typeof StompJs !== 'undefined', secure: window.isSecureContext };
  };

  window.addEventListener('load', () => {
    T.ready = typeof mqtt !== 'undefined' && typeof StompJs !== 'undefined';
    T.log(T.ready ? 'mqtt.js and STOMP.js loaded' : 'library bundles missing', T.ready ? 'ok' : 'bad');
    render();
  });
})();
