"""The node: connections, peers and reputation, admission, the control API and the services it runs."""
