#!/usr/bin/env python3
"""The registry floor: N keep-alive clients GET a list of paths and throw the bodies away.

    floor.py PORT PATHS_FILE [CLIENTS=8]

Each of CLIENTS threads reuses one http.client.HTTPConnection to 127.0.0.1:PORT and takes the
next path from the shared list until none is left. Prints `requests bytes`; exits non-zero on
any answer other than 200.
"""

import http.client
import sys
import threading

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def main():
    port = int(sys.argv[1])
    with open(sys.argv[2]) as f:
        paths = [line.strip() for line in f if line.strip()]
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    lock = threading.Lock()
    state = {"next": 0, "bytes": 0, "requests": 0, "errors": []}

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if state["next"] >= len(paths) or state["errors"]:
                    break
                path = paths[state["next"]]
                state["next"] += 1
            conn.request("GET", path, headers={"Accept": ACCEPT})
            resp = conn.getresponse()
            n = 0
            while chunk := resp.read(1 << 20):
                n += len(chunk)
            with lock:
                state["requests"] += 1
                state["bytes"] += n
                if resp.status != 200:
                    state["errors"].append(f"{resp.status} for {path}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if state["errors"]:
        sys.exit("floor: " + "; ".join(state["errors"][:5]))
    print(state["requests"], state["bytes"])


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: floor.py PORT PATHS_FILE [CLIENTS=8]")
    main()
