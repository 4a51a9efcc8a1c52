// Ranged reads with the real ipfs-unixfs-exporter, for test_chunker_interop.py.
//
//   node range_tool.mjs CAR '[[offset, length], ...]'
// Loads every block of the CAR into a MemoryBlockstore, exports its first
// root and prints JSON {size, sha256, ranges: [sha256 of content({offset, length})]}.
import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { CarReader } from '@ipld/car'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { exporter } from 'ipfs-unixfs-exporter'

async function digest (chunks) {
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of chunks) { hash.update(chunk); size += chunk.length }
  return { size, sha256: hash.digest('hex') }
}

const [carPath, rangesJson] = process.argv.slice(2)
const reader = await CarReader.fromBytes(await fs.readFile(carPath))
const blockstore = new MemoryBlockstore()
for await (const { cid, bytes } of reader.blocks()) await blockstore.put(cid, bytes)
const [root] = await reader.getRoots()
const entry = await exporter(root, blockstore)
const whole = await digest(entry.content())
const ranges = []
for (const [offset, length] of JSON.parse(rangesJson ?? '[]')) {
  ranges.push((await digest(entry.content({ offset, length }))).sha256)
}
process.stdout.write(JSON.stringify({ size: whole.size, sha256: whole.sha256, ranges }) + '\n')
