"""flowaudit: line-rate audit of a seaport's logistics data flows."""
__version__ = "0.1.0"
