"""Information-element tables used to name and type NetFlow v9 / IPFIX fields.

Data only: ``iana.csv`` (the IANA "IPFIX Information Elements" registry) and
``enterprise.csv`` (enterprise-specific elements of a few vendors).  They are read
lazily by :mod:`flowscope.decode.fields`; ``SOURCES.md`` says where they come from.
"""
