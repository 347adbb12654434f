"""Pure planners: no I/O, no asyncio, no clock. The shells gather state, call these, apply tasks."""
