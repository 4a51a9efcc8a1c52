// Promise.withResolvers is used by @libp2p/utils but only exists from Node 22;
// import this module first so the interop tools also run on Node 20.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
