"""`fleetctl dashboard`: a live web view of the cluster, served on 127.0.0.1 behind a random
token (docs/dashboard.md). Standard library only, like the rest of fleetctl.
"""
