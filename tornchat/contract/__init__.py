"""What goes over the wire and into Kafka: frame schemas, value objects, the
event schema, ids and timestamps.

Pure: no I/O, no Tornado, no database. Every other stage may import it, and it
imports nothing of tornchat but :mod:`tornchat.errors`.
"""
