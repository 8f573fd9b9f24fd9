"""tools: traffic for tests, benchmarks and demos (DESIGN.md section 6, ``flowscope replay``).

- ``encode``: FlowBatch columns → NetFlow v5, NetFlow v9 and IPFIX export datagrams;
- ``generate``: a seeded generator of realistic site traffic, and rate schedules with bursts;
- ``replay``: sends generated traffic or capture files to a collector over UDP at a chosen rate.
"""
