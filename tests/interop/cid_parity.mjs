// Compute root CIDs with the real ipfs-unixfs-importer, for Shoal's parity tests.
//
// Run with cwd tests/interop. Reads a JSON array of cases on stdin:
//   {"path": "/abs/file-or-dir", "profile": "unixfs-v1-2025" | "unixfs-v0-2015",
//    "chunkSize": 1024?, "maxChildrenPerNode": 4?, "rawLeaves": bool?, "cidVersion": 0|1?,
//    "shardSplitThresholdBytes": 1000?, "dumpBlocks": "/abs/dir"?}
// With dumpBlocks, every block is also written there as a file named by its CID.
// and prints a JSON array of root CID strings (same order) on stdout.
// Directories are fed as the importer's documented candidates: one entry
// per directory (so empty ones exist) and per file, paths relative to the
// directory's parent, so the directory itself is the single root.
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, relative } from 'node:path'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'

class DumpBlockstore {
  constructor (dir) { this.dir = dir }
  async put (cid, bytes) {
    writeFileSync(join(this.dir, cid.toString()), bytes)
    return cid
  }
}

function * candidates (root) {
  const base = dirname(root)
  const walk = function * (dir) {
    yield { path: relative(base, dir) }
    const names = readdirSync(dir).sort()
    for (const name of names) {
      const full = join(dir, name)
      if (statSync(full).isDirectory()) {
        yield * walk(full)
      } else {
        yield { path: relative(base, full), content: readFileSync(full) }
      }
    }
  }
  yield * walk(root)
}

async function rootCid (c) {
  const options = { profile: c.profile }
  if (c.rawLeaves != null) options.rawLeaves = c.rawLeaves
  if (c.cidVersion != null) options.cidVersion = c.cidVersion
  if (c.shardSplitThresholdBytes != null) options.shardSplitThresholdBytes = c.shardSplitThresholdBytes
  if (c.chunkSize != null) options.chunker = fixedSize({ chunkSize: c.chunkSize })
  if (c.maxChildrenPerNode != null) options.layout = balanced({ maxChildrenPerNode: c.maxChildrenPerNode })
  const source = statSync(c.path).isDirectory()
    ? candidates(c.path)
    : [{ content: readFileSync(c.path) }]
  let last
  for await (const entry of importer(source, c.dumpBlocks != null ? new DumpBlockstore(c.dumpBlocks) : new BlackHoleBlockstore(), options)) {
    last = entry
  }
  if (last == null) throw new Error(`nothing imported for ${basename(c.path)}`)
  return last.cid.toString()
}

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const out = []
for (const c of cases) out.push(await rootCid(c))
process.stdout.write(JSON.stringify(out) + '\n')
