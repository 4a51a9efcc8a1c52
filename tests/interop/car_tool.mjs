// CAR interop helper for tests/interop/test_car_interop.py: the real JS
// packages (@ipld/car, ipfs-unixfs-importer/exporter) on the other side.
//
//   node car_tool.mjs read CAR
//     -> JSON {roots, blocks: [[cid, sha256hex, size, hashOk]], files: {path: {type, size, sha256}}}
//        `files` is what ipfs-unixfs-exporter reads back from the first root.
//   node car_tool.mjs write SRC OUT.car [2025|default]
//     -> imports the file or directory SRC with ipfs-unixfs-importer into a
//        blockstore-core MemoryBlockstore, writes every block (importer order)
//        with CarWriter; prints JSON {root}.
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream, promises as fs } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CarReader, CarWriter } from '@ipld/car'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { exporter } from 'ipfs-unixfs-exporter'
import { importer } from 'ipfs-unixfs-importer'

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

async function exportTree (cid, blockstore, prefix, out) {
  const entry = await exporter(cid, blockstore)
  if (entry.type === 'directory') {
    out[prefix] = { type: 'directory' }
    for await (const child of entry.entries()) {
      await exportTree(child.cid, blockstore, prefix + '/' + child.name, out)
    }
    return
  }
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of entry.content()) {
    hash.update(chunk)
    size += chunk.length
  }
  out[prefix] = { type: 'file', size, sha256: hash.digest('hex') }
}

async function read (carPath) {
  const reader = await CarReader.fromBytes(await fs.readFile(carPath))
  const roots = await reader.getRoots()
  const blockstore = new MemoryBlockstore()
  const blocks = []
  for await (const { cid, bytes } of reader.blocks()) {
    const hashOk = Buffer.from(cid.multihash.digest).equals(createHash('sha256').update(bytes).digest())
    blocks.push([cid.toString(), sha256(bytes), bytes.length, hashOk])
    await blockstore.put(cid, bytes)
  }
  const files = {}
  if (roots.length > 0) {
    await exportTree(roots[0], blockstore, '', files)
  }
  return { roots: roots.map(String), blocks, files }
}

async function * sources (src, rel) {
  const stat = await fs.stat(src)
  if (stat.isDirectory()) {
    const names = (await fs.readdir(src)).sort()
    // Only empty directories need an entry: an explicit one for a non-empty
    // directory makes the importer also store an unreachable empty-dir block.
    if (names.length === 0) yield { path: rel }
    for (const name of names) {
      yield * sources(path.join(src, name), rel + '/' + name)
    }
  } else {
    yield { path: rel, content: createReadStream(src) }
  }
}

async function write (src, outPath, profile) {
  const inner = new MemoryBlockstore()
  const order = []
  // Remember the importer's put order so the CAR keeps the real CIDs (getAll() reports raw CIDs).
  const blockstore = {
    put: async (cid, bytes) => { order.push([cid, bytes]); return inner.put(cid, bytes) },
    get: (cid, opts) => inner.get(cid, opts),
    has: (cid, opts) => inner.has(cid, opts)
  }
  const options = profile === '2025' ? { profile: 'unixfs-v1-2025' } : {}
  let root
  for await (const entry of importer(sources(src, path.basename(src)), blockstore, options)) {
    root = entry.cid
  }
  const { writer, out } = CarWriter.create([root])
  const done = pipeline(Readable.from(out), createWriteStream(outPath))
  const seen = new Set()
  for (const [cid, bytes] of order) {
    const key = cid.toString()
    if (seen.has(key)) continue
    seen.add(key)
    await writer.put({ cid, bytes })
  }
  await writer.close()
  await done
  return { root: root.toString(), blocks: seen.size }
}

const [cmd, ...args] = process.argv.slice(2)
const result = cmd === 'read' ? await read(args[0]) : await write(args[0], args[1], args[2] ?? '2025')
process.stdout.write(JSON.stringify(result) + '\n')
