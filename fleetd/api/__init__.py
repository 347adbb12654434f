"""fleet's HTTP API v1: the aiohttp server (`fleetd.api.server`) and the light client fleetctl
uses (`fleetd.api.client`, standard library only).

Nothing is imported here on purpose: `import fleetd.api.client` must not pull in aiohttp.
"""
