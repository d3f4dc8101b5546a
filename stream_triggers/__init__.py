"""stream-triggers: the Triggers framework on Kafka.

"Run this task once triggers A and B have fired for this session, whatever order and
whatever server they arrive on."  See README.md.
"""

__version__ = "0.1.0"
