// One libp2p Noise XX session over loopback TCP with the real
// @chainsafe/libp2p-noise, for test_noise_interop.py.
//
//   node noise_peer.mjs listen [options]          listen on 127.0.0.1:0, accept one connection
//   node noise_peer.mjs dial --port N [options]   connect to 127.0.0.1:N
//
// Options:
//   --expect PEERID   the PeerId the remote must prove (passed to libp2p-noise as remotePeer)
//   --send A,B,...    after the handshake send random payloads of these sizes, one send() each
//   --recv N          after the handshake read exactly N plaintext bytes
//   --timeout MS      give up (exit 2) after this long; default 20000
//
// Reports one JSON object per line on stdout:
//   {"event":"ready","peer":ID[,"port":N]}   before any I/O (port only when listening)
//   {"event":"done","remote":ID,"sent_len":..,"sent_sha256":..,"received_len":..,
//    "received_sha256":..,"frames_in":[sizes of every Noise frame received, handshake included]}
//   {"event":"error","name":..,"message":..}  then exit 1
// No muxer or multistream-select: the raw socket carries only Noise frames.
import './polyfill.mjs'
import { report, fail, watchdog } from './peer_io.mjs'
import { createHash, randomBytes } from 'node:crypto'
import net from 'node:net'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { AbstractMultiaddrConnection, ipPortToMultiaddr } from '@libp2p/utils'

const { positionals, values: opts } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: 'string' },
    expect: { type: 'string' },
    send: { type: 'string', default: '' },
    recv: { type: 'string', default: '0' },
    timeout: { type: 'string', default: '20000' }
  }
})
const mode = positionals[0]
if (mode !== 'listen' && mode !== 'dial') {
  console.error('usage: node noise_peer.mjs listen|dial [--port N] [--expect PEERID] [--send A,B] [--recv N]')
  process.exit(64)
}

watchdog(opts.timeout)

/** Records the size of every 2-byte-length-prefixed frame seen on the wire. */
class FrameCounter {
  sizes = []
  #pending = Buffer.alloc(0)

  feed (buf) {
    this.#pending = Buffer.concat([this.#pending, buf])
    while (this.#pending.length >= 2) {
      const size = this.#pending.readUInt16BE(0)
      if (this.#pending.length < 2 + size) break
      this.sizes.push(size)
      this.#pending = this.#pending.subarray(2 + size)
    }
  }
}

/**
 * A node:net socket as the MultiaddrConnection libp2p-noise secures: the same
 * shape as @libp2p/tcp's internal one, built only on @libp2p/utils' public API.
 */
class SocketConnection extends AbstractMultiaddrConnection {
  constructor (socket, direction, counter) {
    super({
      direction,
      remoteAddr: ipPortToMultiaddr(socket.remoteAddress, socket.remotePort),
      log: defaultLogger().forComponent(`noise-peer:${direction}`)
    })
    this.socket = socket
    socket.on('data', buf => { counter.feed(buf); this.onData(buf) })
    socket.on('error', err => { this.abort(err) })
    socket.once('close', hadError => {
      if (hadError) this.abort(new Error('TCP transmission error'))
      else this.onTransportClosed()
    })
    socket.on('drain', () => { this.safeDispatchEvent('drain') })
  }

  sendData (data) {
    let sentBytes = 0
    let canSendMore = true
    for (const buf of data) {
      sentBytes += buf.byteLength
      canSendMore = this.socket.write(buf)
      if (!canSendMore) break
    }
    return { sentBytes, canSendMore }
  }

  async sendClose () {
    if (this.socket.destroyed) return
    const closed = new Promise(resolve => this.socket.once('close', resolve))
    this.socket.destroySoon()
    await closed
  }

  sendReset () { this.socket.destroy() }
  sendPause () { this.socket.pause() }
  sendResume () { this.socket.resume() }
}

const privateKey = await generateKeyPair('Ed25519')
const peerId = peerIdFromPrivateKey(privateKey)
const encrypter = noise()({
  peerId,
  privateKey,
  logger: defaultLogger(),
  upgrader: { getStreamMuxers: () => new Map() }
})

async function session (socket, direction) {
  const counter = new FrameCounter()
  const conn = new SocketConnection(socket, direction, counter)
  const options = { skipStreamMuxerNegotiation: true }
  if (opts.expect) options.remotePeer = peerIdFromString(opts.expect)
  const secured = direction === 'outbound'
    ? await encrypter.secureOutbound(conn, options)
    : await encrypter.secureInbound(conn, options)
  const stream = secured.connection

  const want = Number(opts.recv)
  const received = createHash('sha256')
  let receivedLen = 0
  const allReceived = new Promise((resolve, reject) => {
    if (want === 0) resolve()
    stream.addEventListener('message', evt => {
      const buf = evt.data.subarray()
      received.update(buf)
      receivedLen += buf.byteLength
      if (receivedLen >= want) resolve()
    })
    stream.addEventListener('close', evt => {
      reject(evt.error ?? new Error(`stream closed after ${receivedLen} of ${want} bytes`))
    })
  })

  const sent = createHash('sha256')
  let sentLen = 0
  for (const size of opts.send.split(',').filter(Boolean).map(Number)) {
    const payload = randomBytes(size)
    sent.update(payload)
    sentLen += size
    if (!stream.send(payload)) await stream.onDrain()
  }
  await allReceived

  report({
    event: 'done',
    remote: secured.remotePeer.toString(),
    sent_len: sentLen,
    sent_sha256: sent.digest('hex'),
    received_len: receivedLen,
    received_sha256: received.digest('hex'),
    frames_in: counter.sizes
  })
  // Flush what we wrote, then let the remote close first (it may still be reading).
  await stream.close()
}

if (mode === 'listen') {
  const server = net.createServer(socket => {
    server.close()
    session(socket, 'inbound').then(() => process.exit(0), fail)
  })
  server.on('error', fail)
  server.listen(0, '127.0.0.1', () => {
    report({ event: 'ready', peer: peerId.toString(), port: server.address().port })
  })
} else {
  if (!opts.port) fail(new Error('dial needs --port'))
  report({ event: 'ready', peer: peerId.toString() })
  const socket = net.connect(Number(opts.port), '127.0.0.1')
  socket.once('error', fail)
  socket.once('connect', () => {
    socket.off('error', fail)
    session(socket, 'outbound').then(() => process.exit(0), fail)
  })
}
