"""Pure distributed core: membership (SWIM + Lifeguard), gossip, wire types. No I/O, no clocks."""
