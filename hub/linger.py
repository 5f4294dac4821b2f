"""How long a connection the node refused or closed is still read from.

A connection closed while the peer's bytes wait unread in the kernel is reset, not closed,
and the reset makes the peer's kernel throw away what it had not read yet: the answer
that says why included (a 431, a 1009 close). So the node reads on after its answer, and
discards, until the peer closes or one of these bounds is reached (RFC 6455 7.1.1, RFC 9112
9.6). A peer that sends past them does not read anyway, and is dropped.
"""

LINGER_SECONDS = 2.0
"""How long a refused HTTP request is read from after its answer."""
LINGER_BYTES = 1 << 20
"""What a peer may send after the node's answer or close before it is dropped."""
LINGER_PARSED_BYTES = 65536
"""How much of that a closing WebSocket parses, looking for the peer's close: parsing
costs, discarding does not."""
