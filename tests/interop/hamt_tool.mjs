// HAMT parity helper for tests/interop/test_hamt_parity.py, using the real npm packages.
//
// Reads JSON on stdin: {"murmur": ["hex", ...], "cases": [case, ...]} where a case is
//   {"path": "/abs/dir", "profile": "unixfs-v1-2025" | "unixfs-v0-2015",
//    "shardSplitThresholdBytes": N?, "shardFanoutBits": N?}
// Prints {"murmur": ["hex of murmur3128.encode", ...], "roots": ["cid", ...]}.
// Every directory is fed as an entry (so empty ones exist) before its
// contents, files with their bytes, paths relative to the directory's parent.
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { murmur3128 } from '@multiformats/murmur3'
import { importer } from 'ipfs-unixfs-importer'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'

function * entries (root) {
  const base = dirname(root)
  const walk = function * (dir) {
    yield { path: relative(base, dir) }
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name)
      if (statSync(full).isDirectory()) yield * walk(full)
      else yield { path: relative(base, full), content: readFileSync(full) }
    }
  }
  yield * walk(root)
}

async function root (c) {
  const options = { profile: c.profile }
  if (c.shardSplitThresholdBytes != null) options.shardSplitThresholdBytes = c.shardSplitThresholdBytes
  if (c.shardFanoutBits != null) options.shardFanoutBits = c.shardFanoutBits
  let last
  for await (const entry of importer(entries(c.path), new BlackHoleBlockstore(), options)) last = entry
  return last.cid.toString()
}

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const murmur = []
for (const hex of input.murmur ?? []) {
  murmur.push(Buffer.from(await murmur3128.encode(Buffer.from(hex, 'hex'))).toString('hex'))
}
const roots = []
for (const c of input.cases ?? []) roots.push(await root(c))
process.stdout.write(JSON.stringify({ murmur, roots }) + '\n')
