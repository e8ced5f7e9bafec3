"""Prints the RESULT lines of scripts/bench.sh (JSON, one per scenario and target) as a table:
Crawbl, the Node peer and the floor side by side, and how many times better Crawbl is than the
peer (above 1: Crawbl is better; for latency, memory and CPU that means smaller)."""

import json
import sys

# scenario → (figure, unit, True if higher is better)
FIGURES = {
    "fan-out": [
        ("deliveredPerSecond", "deliveries/s", True),
        ("p50Ms", "ms p50", False),
        ("p99Ms", "ms p99", False),
        ("maxMs", "ms max", False),
        ("undelivered", "undelivered 3 s after the end", False),
        ("cpuMicrosPerDelivery", "server CPU µs/delivery", False),
    ],
    "idle": [
        ("kbPerSocket", "KB per idle socket", False),
        ("leftTimesBefore", "RSS after they left ÷ RSS before", False),
    ],
    "send-path": [
        ("sendsPerSecond", "sends/s", True),
        ("p50Ms", "ms p50 REST→message.new", False),
        ("p99Ms", "ms p99 REST→message.new", False),
        ("lost", "message.new lost", False),
    ],
    "storm": [
        ("allBackSeconds", "s until all back", False),
        ("outageP99Ms", "ms p99 outage", False),
        ("reconnected", "reconnected", True),
        ("messagesSent", "messages sent", True),
        ("durableLost", "durable lost", False),
    ],
}
TARGETS = ["crawbl", "node", "floor"]


def main(path):
    runs = {}
    for line in open(path):
        result = json.loads(line)
        key = (result["scenario"], result.get("sockets"), result.get("rate"))
        runs.setdefault(key, {})[result["target"]] = result
    rows = [("scenario", "figure", *TARGETS, "crawbl vs node")]
    for (scenario, sockets, rate), by_target in runs.items():
        name = scenario if sockets is None else f"{scenario} {sockets}"
        if rate is not None:
            name += f" @{rate:g}/s"
        for key, unit, higher_is_better in FIGURES.get(scenario, []):
            values = [by_target.get(target, {}).get(key) for target in TARGETS]
            crawbl, node = values[0], values[1]
            ratio = ""
            if isinstance(crawbl, (int, float)) and isinstance(node, (int, float)):
                better, worse = (crawbl, node) if higher_is_better else (node, crawbl)
                if worse:
                    ratio = f"{better / worse:.2f}×"
            cells = ["—" if value is None else f"{value:g}" for value in values]
            rows.append((name, unit, *cells, ratio))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main(sys.argv[1])
