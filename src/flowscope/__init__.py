"""flowscope: real-time network traffic statistics from NetFlow v5/v9 and IPFIX exports."""

__version__ = "0.1.0"
