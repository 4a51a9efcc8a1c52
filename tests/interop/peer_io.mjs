// What every interop peer script shares with the Python test driving it
// (tests/interop/js_process.py): one JSON event a line on stdout, an
// {event: 'error'} line and a non-zero exit on failure, and a watchdog so a
// script never outlives its test even if the parent forgets to kill it.

export function report (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

export function fail (err) {
  report({ event: 'error', name: err?.name ?? 'Error', message: String(err?.message ?? err) })
  process.exit(1)
}

/** Report a Timeout error and exit 2 after `ms` (does not keep the process alive). */
export function watchdog (ms, message = `no result after ${ms} ms`) {
  setTimeout(() => {
    report({ event: 'error', name: 'Timeout', message })
    process.exit(2)
  }, Number(ms)).unref()
}

/** `n` deterministic bytes (xorshift32 from `seed`), the same in every run. */
export function pseudoRandom (n, seed) {
  const out = new Uint8Array(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}
