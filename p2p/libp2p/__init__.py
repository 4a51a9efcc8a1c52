"""libp2p connection layer (being adopted): multistream-select 1.0, yamux, ping, identify.

Sans-IO state machines (`multistream`, `yamux`, `identify`) plus one thin trio
driver (`connection`) that upgrades a TCP stream exactly as libp2p does:
TCP -> [pnet] -> mss `/noise` -> Noise XX -> mss `/yamux/1.0.0` -> yamux,
then one yamux stream per protocol, each negotiated by multistream-select.

Not here (yet): Shoal's own protocols on streams; the node still uses
`shoal.p2p.net.connection` until the switch is made in one step.
"""
