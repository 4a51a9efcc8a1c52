// A js-libp2p node with @libp2p/kad-dht in server mode, for test_dht_interop.py.
//
//   node dht_peer.mjs [--timeout MS]
//
// Listens on /ip4/127.0.0.1/tcp/0 with TCP, noise, yamux, identify, ping and
// kadDHT({ clientMode: false, peerInfoMapper: passthroughMapper }): a LAN/loopback
// DHT (kad-dht drops private and loopback addresses by default, which would
// leave nothing to dial on 127.0.0.1). No public bootstrap list.
//
// Commands, one JSON object per line on stdin; one JSON answer per line on stdout:
//   {"cmd":"dial","addr":MA}       -> {"event":"dialed","peer":ID}
//   {"cmd":"provide","cid":CID}    -> {"event":"provided"}
//   {"cmd":"findprovs","cid":CID}  -> {"event":"providers","providers":[{"peer":ID,"addrs":[..]}]}
//   {"cmd":"table"}                -> {"event":"table","peers":[ID, ..]}
// At start: {"event":"ready","peer":ID,"addrs":[..]}. On any error:
// {"event":"error","name":..,"message":..} (the node keeps running).
import './polyfill.mjs'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { ping } from '@libp2p/ping'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'

const { values: opts } = parseArgs({
  options: { timeout: { type: 'string', default: '110000' } }
})

function report (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

setTimeout(() => {
  report({ event: 'error', name: 'Timeout', message: `still running after ${opts.timeout} ms` })
  process.exit(2)
}, Number(opts.timeout)).unref()

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    ping: ping(),
    identify: identify(),
    dht: kadDHT({ clientMode: false, peerInfoMapper: passthroughMapper })
  }
})

async function run (msg) {
  if (msg.cmd === 'dial') {
    const conn = await node.dial(multiaddr(msg.addr))
    return { event: 'dialed', peer: conn.remotePeer.toString() }
  }
  if (msg.cmd === 'provide') {
    await node.contentRouting.provide(CID.parse(msg.cid), { signal: AbortSignal.timeout(30000) })
    return { event: 'provided' }
  }
  if (msg.cmd === 'findprovs') {
    const providers = []
    for await (const info of node.contentRouting.findProviders(CID.parse(msg.cid), { signal: AbortSignal.timeout(30000) })) {
      providers.push({ peer: info.id.toString(), addrs: info.multiaddrs.map(a => a.toString()) })
      break
    }
    return { event: 'providers', providers }
  }
  if (msg.cmd === 'table') {
    const peers = []
    for (const peer of node.services.dht.routingTable.kb.toIterable()) {
      peers.push(peer.peerId.toString())
    }
    return { event: 'table', peers }
  }
  throw new Error(`unknown command ${msg.cmd}`)
}

report({ event: 'ready', peer: node.peerId.toString(), addrs: node.getMultiaddrs().map(a => a.toString()) })
// Commands run one after another, in the order they arrive.
let chain = Promise.resolve()
createInterface({ input: process.stdin }).on('line', (line) => {
  chain = chain.then(async () => {
    try {
      report(await run(JSON.parse(line)))
    } catch (err) {
      report({ event: 'error', name: err?.name ?? 'Error', message: String(err?.message ?? err) })
    }
  })
}).on('close', async () => {
  await chain
  await node.stop()
  process.exit(0)
})
