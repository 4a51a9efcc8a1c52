// Baseline for bench/put.py: the real IPFS JS importer writing to a real
// on-disk blockstore, on the same file as `shoal put`.
//
//   node bench/importer_baseline.mjs FILE BLOCKSTORE_DIR
//
// The pinned ipfs-unixfs-importer 17.1.1 and blockstore-fs 4.0.1 are loaded
// from tests/interop/node_modules (npm ci there), whatever the cwd.
// The file is streamed (fs.createReadStream, 1 MiB reads), imported with
// profile 'unixfs-v1-2025' (1 MiB chunks, raw leaves, 1024 links, CIDv1),
// and every block goes to an FsBlockstore in BLOCKSTORE_DIR. Prints one JSON
// line: {"cid", "seconds", "bytes", "blocks"}; `seconds` covers the import
// only (not node's start-up), the Python side also times the whole process.
//
// blockstore-fs writes each block through `steno` (temp file + rename) and
// never fsyncs, so its blocks are in the page cache, not durable, when this
// exits; bench/put.py times a `sync -f` of the store separately for that.
import { createReadStream, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

// Load the packages from tests/interop/node_modules whatever the cwd (bare
// ESM specifiers resolve next to this file, which lives in bench/): read
// each package's own `exports` entry for `import`.
const modules = new URL('../tests/interop/node_modules/', import.meta.url)
async function load (name) {
  const dir = new URL(`${name}/`, modules)
  const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8'))
  const entry = pkg.exports?.['.']?.import ?? pkg.main ?? 'index.js'
  return import(new URL(entry, dir).href)
}

const [file, storeDir] = process.argv.slice(2)
if (file == null || storeDir == null) {
  console.error('usage: node importer_baseline.mjs FILE BLOCKSTORE_DIR')
  process.exit(2)
}

const { importer } = await load('ipfs-unixfs-importer')
const { FsBlockstore } = await load('blockstore-fs')

class CountingBlockstore {
  constructor (inner) { this.inner = inner; this.blocks = 0 }
  async put (cid, bytes, options) {
    this.blocks++
    return this.inner.put(cid, bytes, options)
  }
}

const fsStore = new FsBlockstore(storeDir)
await fsStore.open()
const store = new CountingBlockstore(fsStore)
const started = process.hrtime.bigint()
let last
const source = [{ content: createReadStream(file, { highWaterMark: 1 << 20 }) }]
for await (const entry of importer(source, store, { profile: 'unixfs-v1-2025' })) {
  last = entry
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9
await fsStore.close()
if (last == null) throw new Error('nothing imported')
console.log(JSON.stringify({
  cid: last.cid.toString(),
  seconds,
  bytes: statSync(file).size,
  blocks: store.blocks,
  store: join(storeDir)
}))
