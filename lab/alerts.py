"""Print the lab's Prometheus URL and the alerts firing, once every target has been scraped.

    python lab/alerts.py [http://198.18.10.40:9090]
"""

import json
import sys
import time
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://198.18.10.40:9090"
    deadline = time.time() + 120
    while True:
        targets = get(base + "/api/v1/targets")["activeTargets"]
        if all(t["health"] != "unknown" for t in targets) or time.time() > deadline:
            break
        time.sleep(2)
    down = sorted(f"{t['labels']['job']}/{t['labels']['instance']}" for t in targets if t["health"] != "up")
    firing = [a for a in get(base + "/api/v1/alerts")["alerts"] if a["state"] == "firing"]
    print(f"\nPrometheus: {base}/ ({len(targets)} targets, {len(targets) - len(down)} up{', down: ' + ', '.join(down) if down else ''})")
    print(f"Alerts firing: {len(firing) or 'none'}")
    for alert in firing:
        print(f"  {alert['labels']['alertname']} on {alert['labels'].get('instance', '-')}: {alert['annotations'].get('summary', '')}")


if __name__ == "__main__":
    main()
