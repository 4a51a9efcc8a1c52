"""Name records on the network: signing, the trust policy, spreading to peers.

`publish` turns a folder into a signed record (used by the node's API and by
the offline CLI alike); `trust` reads `[names] trust` from config.toml;
`service` is the node service that offers records to peers, verifies what
they send, and answers `resolver_of(node).resolve(...)` with trust applied.

Not here: the record format and the book (shoal.store.names), the HTTP
routes that serve names to Hugging Face clients (shoal.p2p.gateway).
"""
