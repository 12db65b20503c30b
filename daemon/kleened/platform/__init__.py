"""Host drivers. Only code under here runs host commands or touches host state.

`base` declares the small interfaces core programs against; `linux/` and `freebsd/` implement
them. The daemon wires a concrete set in at start (`kleened.wiring`); core never imports them.
"""
