"""Reads the relay's event stream the way the SSE cookbook does: httpx
streaming, skipping every line that is not `data:` and every payload that
is not JSON (the pings), and reacting to the event types it wants.

Usage: httpx_reader.py BASE_URL TOKEN COUNT
Prints one line per wanted event and exits 0 after COUNT of them.
Run with Debian's /usr/bin/python3 (python3-httpx).
"""
import json
import sys

import httpx

WANT = {"email.synced", "llm.success", "outbox.enqueued"}


def handle(evt):
    et, iid = evt["event_type"], evt.get("internal_id")
    if et == "email.synced":
        print(f"new mail synced: {iid} -> {evt['data']['notion_page_id']}", flush=True)
    elif et == "llm.success":
        print(f"AI done: {iid} ({evt['data']['model']})", flush=True)
    elif et == "outbox.enqueued":
        print(f"outbox intent: {evt['data']['op_type']} -> {evt['data']['target']}", flush=True)


def main():
    base_url, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    headers = {"X-Webhook-Token": token, "Accept": "text/event-stream"}
    seen = 0
    with httpx.stream("GET", f"{base_url}/api/events/stream", headers=headers,
                      timeout=None) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line or not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            try:
                evt = json.loads(payload)
            except json.JSONDecodeError:
                continue
            if evt.get("event_type") in WANT:
                handle(evt)
                seen += 1
                if seen >= count:
                    return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
