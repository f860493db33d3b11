"""Drives headless Chromium through the DevTools protocol over a pipe
(--remote-debugging-pipe: requests on fd 3, answers on fd 4, each message
NUL-terminated), because --dump-dom returns at the load event and a page
that holds a stream open never lets virtual time run out.

Usage: chromium_driver.py CHROMIUM URL OUT_DIR TEXT...
Opens URL, waits until the page says it is live, prints "ready", then
waits until the page's text contains every TEXT and it shows a heartbeat
(or 20 s), writes the text
to OUT_DIR/page.txt and a screenshot to OUT_DIR/page.png, and exits 0 when
every TEXT was seen, 1 otherwise. Needs only the standard library.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium, profile):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        fds = (to_child_r, from_child_w)

        def wire():
            # The child reads requests on fd 3 and writes answers on fd 4.
            a, b = os.dup(fds[0]), os.dup(fds[1])
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             "--user-data-dir=" + profile, "--window-size=1200,900", "about:blank"],
            # close_fds would close 3 and 4 again after wire() made them.
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        while True:
            answer = self.read()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def read(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.from_child, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def evaluate(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        return r.get("result", {}).get("value")

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    chromium, url, out_dir, texts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    with tempfile.TemporaryDirectory() as profile:
        b = Browser(chromium, profile)
        try:
            target = b.send("Target.createTarget", {"url": "about:blank"}, session=False)
            b.session = b.send("Target.attachToTarget",
                               {"targetId": target["targetId"], "flatten": True},
                               session=False)["sessionId"]
            b.send("Page.enable")
            b.send("Page.navigate", {"url": url})
            deadline = time.monotonic() + 20
            state = None
            while time.monotonic() < deadline:
                state = b.evaluate("document.getElementById('state') && "
                                   "document.getElementById('state').textContent")
                if state == "live":
                    break
                time.sleep(0.05)
            print("ready" if state == "live" else f"not live: {state}", flush=True)
            texts.append("HEARTBEAT_SEEN")
            text = ""
            while time.monotonic() < deadline:
                text = b.evaluate("document.body.innerText") or ""
                beat = b.evaluate("document.getElementById('heartbeat').textContent")
                if beat != "none yet":
                    text += "\nHEARTBEAT_SEEN\n"
                if all(t in text for t in texts):
                    break
                time.sleep(0.1)
            with open(os.path.join(out_dir, "page.txt"), "w", encoding="utf-8") as f:
                f.write(text)
            shot = b.send("Page.captureScreenshot", {"format": "png"})
            with open(os.path.join(out_dir, "page.png"), "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            missing = [t for t in texts if t not in text]
            if missing:
                print("missing: " + ", ".join(missing), flush=True)
            return 0 if not missing else 1
        finally:
            b.close()


if __name__ == "__main__":
    sys.exit(main())
