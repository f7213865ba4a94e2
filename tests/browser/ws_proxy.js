#!/usr/bin/env node
// A diagnostic stand-in for a broker's WebSocket listeners (TERN_BROWSER_WS_PROXY=1): ws:// and
// wss:// on 127.0.0.1, any path, subprotocols mqtt and mqttv3.1 piped to the broker's MQTT/TCP
// port and v10.stomp, v11.stomp and v12.stomp to its STOMP/TCP port, byte for byte, in binary
// WebSocket messages. With it the browser test checks the page and a broker's MQTT and STOMP
// engines apart from the broker's own WebSocket layer.
// Argument: JSON {mqttPort, stompPort, cert, key}. Prints one JSON line {ws, wss} (the ports).
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');
const { WebSocketServer } = require('ws'); // installed with mqtt

const cfg = JSON.parse(process.argv[2]);
const KINDS = { mqtt: 'mqtt', 'mqttv3.1': 'mqtt', 'v10.stomp': 'stomp', 'v11.stomp': 'stomp', 'v12.stomp': 'stomp' };

function attach(server) {
  const wss = new WebSocketServer({
    server,
    handleProtocols: offered => [...offered].find(p => KINDS[p]) || false,
  });
  wss.on('connection', ws => {
    const kind = KINDS[ws.protocol];
    if (!kind) { ws.close(1002, 'no known subprotocol'); return; }
    const sock = net.connect(kind === 'mqtt' ? cfg.mqttPort : cfg.stompPort, '127.0.0.1');
    sock.on('data', d => ws.send(d, { binary: true }));
    sock.on('close', () => ws.close());
    sock.on('error', () => ws.terminate());
    ws.on('message', data => sock.write(Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)));
    ws.on('close', () => sock.end());
    ws.on('error', () => sock.destroy());
  });
}

const plain = http.createServer();
const tls = https.createServer({ cert: fs.readFileSync(cfg.cert), key: fs.readFileSync(cfg.key) });
attach(plain);
attach(tls);
plain.listen(0, '127.0.0.1', () => tls.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ws: plain.address().port, wss: tls.address().port }) + '\n');
}));
process.stdin.on('end', () => process.exit(0)); // the test closes stdin to stop it
process.stdin.resume();
