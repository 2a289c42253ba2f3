"""flowaudit benchmarks: every stage side by side with the peer a user would pick instead.

``python -m benchmarks`` (or ``flowaudit bench``) runs the suite; ``python -m benchmarks.e2e`` the
end-to-end stream against a bare confluent-kafka consume loop.
"""
