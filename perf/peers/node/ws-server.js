'use strict';
// Benchmark peer for roomcast on Node.js with the `ws` library. Same semantics
// as every peer under perf/peers/ (see ../README.md):
//   node ws-server.js [PORT]      (0 or none = any free port)
//   /echo         echo every text/binary message back, same opcode
//   /room/<name>  broadcast every text/binary message to the room's other members
// Prints `listening on 127.0.0.1:PORT` once ready; exits 0 on SIGTERM/SIGINT.

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write('usage: node ws-server.js [PORT]\n');
  process.exit(2);
}

const ROOM_NAME = /^[A-Za-z0-9._:-]+$/;
// PEER_WS_PLAIN_SEND=1: broadcast with `ws.send()` per member instead of one
// pre-computed frame.
const PLAIN_SEND = process.env.PEER_WS_PLAIN_SEND === '1';
const FRAME_OPTS = [1, 2].map((opcode) => ({
  fin: true,
  rsv1: false,
  opcode,
  mask: false,
  readOnly: true,
}));
/** @type {Map<string, Set<WebSocket>>} */
const rooms = new Map();

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

const wss = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  perMessageDeflate: false,
});

function reject(socket, status) {
  socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
}

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  let room = null;
  if (path !== '/echo') {
    if (!path.startsWith('/room/')) return reject(socket, '404 Not Found');
    room = path.slice('/room/'.length);
    if (!ROOM_NAME.test(room)) return reject(socket, '404 Not Found');
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    if (room === null) {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      return;
    }
    let members = rooms.get(room);
    if (!members) rooms.set(room, (members = new Set()));
    members.add(ws);
    ws.on('message', PLAIN_SEND ? (data, isBinary) => {
      const opts = { binary: isBinary };
      for (const other of members) {
        if (other !== ws && other.readyState === WebSocket.OPEN) other.send(data, opts);
      }
    } : (data, isBinary) => {
      // Frame once (header + the received Buffer, not copied: server frames
      // are unmasked), then write the same frame to every other member, as
      // Socket.IO's adapter does when it broadcasts over ws.
      const frame = WebSocket.Sender.frame(data, FRAME_OPTS[isBinary ? 1 : 0]);
      for (const other of members) {
        if (other !== ws && other.readyState === WebSocket.OPEN) other._sender.sendFrame(frame);
      }
    });
    ws.on('close', () => {
      members.delete(ws);
      if (members.size === 0 && rooms.get(room) === members) rooms.delete(room);
    });
  });
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
