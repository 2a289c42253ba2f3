"""Prometheus metrics: one registry per service instance and its HTTP exporter.

Names follow the Prometheus conventions (prefix ``flowaudit_``, counters end ``_total``,
base units in names).  Labels stay bounded: topic, partition (of the configured topics),
format, reason, data_class, dataset, kernel.  Never an address, offset, party id or value.
Known label combinations are initialised to 0 so dashboards and alerts see them from start.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from . import __version__
from .decode import FORMAT_NAMES, REASONS

DATASETS = ("hits", "messages", "quarantine", "flows", "transfers")


class Metrics:
    def __init__(self, topics: dict[str, str] | None = None, data_classes: list[str] | None = None):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.info = Info("flowaudit_build", "flowaudit version", registry=r)
        self.info.info({"version": __version__})
        self.consumed_messages = Counter("flowaudit_consumed_messages_total",
                                         "Kafka messages consumed", ["topic"], registry=r)
        self.consumed_bytes = Counter("flowaudit_consumed_bytes_total",
                                      "Bytes of Kafka message values consumed", ["topic"], registry=r)
        self.hits = Counter("flowaudit_hits_total", "Sensitive values found",
                            ["format", "data_class"], registry=r)
        self.quarantined = Counter("flowaudit_quarantined_messages_total",
                                   "Messages sent to quarantine, by reason", ["format", "reason"], registry=r)
        self.batch_seconds = Histogram(
            "flowaudit_batch_duration_seconds", "Wall time to process one polled batch (decode to sink)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r)
        self.batch_messages = Histogram(
            "flowaudit_batch_messages", "Messages per polled batch",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000), registry=r)
        self.kernel_seconds = Counter("flowaudit_kernel_seconds_total",
                                      "Seconds spent inside numba kernels", ["kernel"], registry=r)
        self.files_committed = Counter("flowaudit_files_committed_total",
                                       "Parquet files published (fsynced, linked, directory fsynced)",
                                       ["dataset"], registry=r)
        self.rows_written = Counter("flowaudit_rows_written_total", "Rows in published Parquet files",
                                    ["dataset"], registry=r)
        self.offsets_committed = Counter("flowaudit_offset_commits_total",
                                         "Kafka offset commits after a durable publish", registry=r)
        self.consumer_lag = Gauge("flowaudit_consumer_lag_messages",
                                  "Messages between the consumer position and the high watermark",
                                  ["topic", "partition"], registry=r)
        self.transfers = Counter("flowaudit_transfers_total",
                                 "Flows and messages that reached a watchlisted platform or broke zone policy",
                                 ["platform", "zone", "rule"], registry=r)
        self.transfer_bytes = Counter("flowaudit_transfer_bytes_total",
                                      "Bytes of those flows, scaled by the sampling interval",
                                      ["platform", "zone", "rule"], registry=r)
        self._egress_seen: dict = {}
        self.flows = Counter("flowaudit_flows_total", "Flow records decoded (NetFlow v5/v9/IPFIX, goflow2, Zeek conn)",
                             registry=r)
        self.flows_late_dropped = Counter("flowaudit_flows_late_dropped_total",
                                          "Held flow records whose partition was no longer in the batch",
                                          registry=r)
        self.netflow_events = Counter("flowaudit_netflow_events_total",
                                      "NetFlow decoder events: records, templates, and each rejected-input reason",
                                      ["reason"], registry=r)
        self.dns_sync_timeouts = Counter("flowaudit_dns_sync_timeouts_total",
                                         "Flow-topic messages sent on after kafka.dns_wait_s before the DNS "
                                         "partitions caught up by record time (their flows may lack DNS "
                                         "attribution)", registry=r)
        self.dns_partitions_missing = Gauge("flowaudit_dns_partitions_missing",
                                            "DNS partitions another member holds while this one holds flow "
                                            "partitions (their flows miss those answers' attribution)", registry=r)
        self.netflow_templates = Gauge("flowaudit_netflow_templates", "Templates in the NetFlow registry",
                                       registry=r)
        self.storage_paused = Gauge("flowaudit_storage_paused",
                                    "1 while consumption is paused waiting out a storage fault", registry=r)
        self.storage_unreadable = Gauge("flowaudit_storage_unreadable_files",
                                        "Stored files the findings windows found not to read back (damaged): "
                                        "left out of the findings", registry=r)
        self.storage_errors = Counter("flowaudit_storage_errors_total",
                                      "Failed publishes by errno (ENOSPC, EROFS, EIO, ...), each retried",
                                      ["errno"], registry=r)
        self.log_resets = Counter("flowaudit_log_resets_total",
                                  "Broker logs found not to match the stored files (storage_ahead, log_rewritten, "
                                  "offset_regressed, offset_out_of_range)", ["topic", "kind"], registry=r)
        self.log_gap_messages = Counter("flowaudit_log_gap_messages_total",
                                        "Messages that expired from the broker's log before they were read",
                                        ["topic"], registry=r)
        self.findings = Counter("flowaudit_findings_total",
                                "Exposure findings of closed event-time windows", ["platform", "severity"], registry=r)
        self.exposed_values = Counter("flowaudit_exposed_values_total",
                                      "Distinct sensitive values exposed in findings, by platform and data class",
                                      ["platform", "data_class"], registry=r)
        self.findings_late = Counter("flowaudit_findings_late_total",
                                     "Messages whose record time fell in a window already closed (beyond the "
                                     "allowed lateness): left out of the findings", registry=r)
        self.budget_flushes = Counter("flowaudit_buffer_budget_flushes_total",
                                      "Times the buffered rows of all partitions reached sink.buffer_budget_mb "
                                      "and every partition published what it had", registry=r)
        self.findings_windows = Counter("flowaudit_findings_windows_closed_total",
                                        "Event-time windows closed and written to the findings dataset", registry=r)
        for errname in ("ENOSPC", "EROFS", "EIO", "EDQUOT"):
            self.storage_errors.labels(errname)
        for d in DATASETS:
            self.files_committed.labels(d)
            self.rows_written.labels(d)
        for t in topics or {}:
            self.consumed_messages.labels(t)
            self.consumed_bytes.labels(t)
            self.log_gap_messages.labels(t)
        for f in FORMAT_NAMES.values():
            for reason in REASONS.values():
                if reason != "ok":
                    self.quarantined.labels(f, reason)
            for c in data_classes or []:
                self.hits.labels(f, c)
        self._server = None

    def init_egress(self, labels: dict[str, list[str]]) -> None:
        """Start the platform series at 0 (zone and rule combinations appear when they happen)."""
        for platform in labels.get("platform", []):
            self.transfers.labels(platform, "none", "watchlist")

    def update_egress(self, cumulative: dict) -> None:
        """Feed :meth:`flowaudit.detect.egress.EgressDetector.metrics` (cumulative counts) as increments."""
        for name, metric in (("transfers_total", self.transfers), ("transfer_bytes_total", self.transfer_bytes)):
            seen = self._egress_seen.setdefault(name, {})
            for key, value in cumulative.get(name, {}).items():
                delta = value - seen.get(key, 0)
                if delta > 0:
                    metric.labels(*key).inc(delta)
                    seen[key] = value

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint on a daemon thread; returns the bound port."""
        if port == 0 and host == "":
            return 0
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
