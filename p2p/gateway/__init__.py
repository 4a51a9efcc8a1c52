"""The HTTP gateway: serve the node's content to HTTP clients (issue 14).

- `params`: sans-IO parsing and validation of a gateway request (path, query
  parameters, Accept negotiation, response headers); no sockets, no trio.
- `car_stream`: which blocks a response carries (dag-scope, entity-bytes,
  car-dups), in CAR order, over any synchronous block getter; and the CARv1
  framing as a stream of chunks.
- `app`: the ASGI application (routes) over a running node, served by
  hypercorn from `shoal.p2p.net.service` next to the control API.

Read-only by design: no route writes anything but the node's own block cache
(blocks fetched from peers, unpinned unless `--gateway-cache-pin`).
"""
