// A real js-libp2p node (TCP, @chainsafe/libp2p-noise, @chainsafe/libp2p-yamux,
// @libp2p/ping, @libp2p/identify) for test_libp2p_interop.py.
//
//   node libp2p_peer.mjs listen [--timeout MS]         listen on /ip4/127.0.0.1/tcp/0
//   node libp2p_peer.mjs dial --addr MA [--sink N]    dial MA, ping, identify, then send
//                                                     N random bytes on /shoal/test/sink/1.0.0
//   --streams K        (dial) K concurrent sink streams of N bytes each
//   --swarm-key FILE   a private network: @libp2p/pnet with this swarm.key (both modes)
//   --key-type T       this node's identity: Ed25519 (default), RSA (2048 bits),
//                      or secp256k1, from @libp2p/crypto generateKeyPair
//
// Both modes serve /shoal/test/sink/1.0.0: read to the end, answer "<len> <sha256 hex>".
// Reports one JSON object per line on stdout:
//   {"event":"ready","peer":ID,"addrs":[..]}           (listen) before any connection
//   {"event":"identified","peer":ID,"agentVersion":..,"protocolVersion":..,
//    "protocols":[..],"listenAddrs":[..],"observedAddr":..}   identify of the remote done
//   {"event":"pinged","rtt":MS}                         a ping to the remote answered
//   {"event":"sunk","answer":"<len> <sha>","sent_len":N,"sent_sha256":..}   (dial --sink)
//   {"event":"error","name":..,"message":..}            then exit 1
// listen mode identifies and pings the first peer that connects, then waits to be killed.
import './polyfill.mjs'
import { createHash, randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { ping } from '@libp2p/ping'
import { identify } from '@libp2p/identify'
import { preSharedKey } from '@libp2p/pnet'
import { readFileSync } from 'node:fs'
import { multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair } from '@libp2p/crypto/keys'

const SINK = '/shoal/test/sink/1.0.0'
const { positionals, values: opts } = parseArgs({
  allowPositionals: true,
  options: {
    addr: { type: 'string' },
    sink: { type: 'string', default: '0' },
    streams: { type: 'string', default: '1' },
    'swarm-key': { type: 'string' },
    'key-type': { type: 'string', default: 'Ed25519' },
    timeout: { type: 'string', default: '25000' }
  }
})
const mode = positionals[0]
if (mode !== 'listen' && mode !== 'dial') {
  console.error('usage: node libp2p_peer.mjs listen | dial --addr MA [--sink N]')
  process.exit(64)
}

function report (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function fail (err) {
  report({ event: 'error', name: err?.name ?? 'Error', message: String(err?.message ?? err) })
  process.exit(1)
}

setTimeout(() => {
  report({ event: 'error', name: 'Timeout', message: `no result after ${opts.timeout} ms` })
  process.exit(2)
}, Number(opts.timeout)).unref()

function flat (chunk) {
  return chunk instanceof Uint8Array ? chunk : chunk.subarray()
}

async function sinkOnce (conn, size) {
  const data = randomBytes(size)
  const stream = await conn.newStream(SINK)
  for (let pos = 0; pos < size; pos += 65536) {
    if (!stream.send(data.subarray(pos, pos + 65536))) {
      await stream.onDrain()
    }
  }
  await stream.close()
  let answer = ''
  for await (const chunk of stream) {
    answer += new TextDecoder().decode(flat(chunk))
  }
  report({
    event: 'sunk',
    answer,
    sent_len: size,
    sent_sha256: createHash('sha256').update(data).digest('hex')
  })
}

function identified (result) {
  report({
    event: 'identified',
    peer: result.peerId.toString(),
    agentVersion: result.agentVersion,
    protocolVersion: result.protocolVersion,
    protocols: result.protocols,
    listenAddrs: result.listenAddrs.map(a => a.toString()),
    observedAddr: result.observedAddr?.toString() ?? null
  })
}

try {
  const keyType = opts['key-type']
  const privateKey = await generateKeyPair(keyType, keyType === 'RSA' ? 2048 : undefined)
  const node = await createLibp2p({
    privateKey,
    addresses: { listen: mode === 'listen' ? ['/ip4/127.0.0.1/tcp/0'] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(opts['swarm-key'] ? { connectionProtector: preSharedKey({ psk: readFileSync(opts['swarm-key']) }) } : {}),
    services: {
      ping: ping(),
      identify: identify({ runOnConnectionOpen: mode === 'listen' })
    }
  })
  await node.handle(SINK, async (stream) => {
    const h = createHash('sha256')
    let n = 0
    for await (const chunk of stream) {
      const buf = flat(chunk)
      h.update(buf)
      n += buf.byteLength
    }
    stream.send(new TextEncoder().encode(`${n} ${h.digest('hex')}`))
    await stream.close()
  })

  if (mode === 'listen') {
    node.addEventListener('peer:identify', async (evt) => {
      identified(evt.detail)
      try {
        const rtt = await node.services.ping.ping(evt.detail.peerId)
        report({ event: 'pinged', rtt })
      } catch (err) {
        fail(err)
      }
    })
    report({
      event: 'ready',
      peer: node.peerId.toString(),
      addrs: node.getMultiaddrs().map(a => a.toString())
    })
  } else {
    const ma = multiaddr(opts.addr)
    const conn = await node.dial(ma)
    const rtt = await node.services.ping.ping(ma)
    report({ event: 'pinged', rtt })
    identified(await node.services.identify.identify(conn))
    const size = Number(opts.sink)
    if (size > 0) {
      // --streams K: K sink streams at once, their frames interleaved on one connection
      await Promise.all(Array.from({ length: Number(opts.streams) }, () => sinkOnce(conn, size)))
    }
    await node.stop()
    process.exit(0)
  }
} catch (err) {
  fail(err)
}
