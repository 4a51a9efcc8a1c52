"""The `shoal` command: a thin front over `store/` (offline) and the node API.

Data goes to stdout, progress and errors to stderr. Errors from `store/` and
`p2p/` become one-line messages with a hint and a non-zero exit.
"""
