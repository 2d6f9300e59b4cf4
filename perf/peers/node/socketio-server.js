'use strict';
// Benchmark peer for roomcast: a Socket.IO server, WebSocket transport only.
//   node socketio-server.js [PORT]      (0 or none = any free port)
// Connect to ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket&room=<name>
// (or pass the room in the CONNECT packet's auth: 40{"room":"<name>"}).
//   event "msg"  (one payload)  -> socket.to(room).emit("msg", payload): every
//                                  OTHER member of the room
//   event "echo" (one payload)  -> socket.emit("echo", payload): back to the sender
// The exact Engine.IO/Socket.IO framing is in ../README.md.
// Prints `listening on 127.0.0.1:PORT` once ready; exits 0 on SIGTERM/SIGINT.

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write('usage: node socketio-server.js [PORT]\n');
  process.exit(2);
}

const ROOM_NAME = /^[A-Za-z0-9._:-]+$/;

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  // Same limit as ws's default maxPayload (Socket.IO's own default is 1 MB).
  maxHttpBufferSize: 100 * 1024 * 1024,
  // Engine.IO heartbeat: the server sends `2` every pingInterval ms and closes
  // a client that has not answered `3` within pingTimeout ms (Socket.IO's
  // defaults; the env overrides are for tests).
  pingInterval: Number(process.env.PEER_PING_INTERVAL_MS) || 25000,
  pingTimeout: Number(process.env.PEER_PING_TIMEOUT_MS) || 20000,
});

function roomOf(socket) {
  const { auth, query } = socket.handshake;
  const room = (auth && auth.room) || query.room;
  return typeof room === 'string' && ROOM_NAME.test(room) ? room : null;
}

// A connection without a valid room is refused: 44{"message":"room required"}.
io.use((socket, next) => (roomOf(socket) ? next() : next(new Error('room required'))));

io.on('connection', (socket) => {
  const room = roomOf(socket);
  socket.join(room);
  socket.on('msg', (payload) => {
    socket.to(room).emit('msg', payload);
  });
  socket.on('echo', (payload) => {
    socket.emit('echo', payload);
  });
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
