#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays everything the client sends by a fixed time.

    proxy.py UPSTREAM_PORT DELAY_MS

Listens on a free loopback port and prints it on the first line of stdout once it accepts
connections (the benchmark reads that line: no sleeping). Each chunk from the client is passed
on DELAY_MS after it arrived, in order; the answers come back at once. For HTTP/1.1 without
pipelining, where a client sends its next request only after the previous answer, this adds
DELAY_MS to every request, like a link with that one-way latency on the way out.
"""

import asyncio
import signal
import sys


async def delayed(reader, writer, delay):
    """Copies reader to writer, each chunk `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(1 << 16)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time(), b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        reading.cancel()


async def plain(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def main():
    upstream_port = int(sys.argv[1])
    delay = int(sys.argv[2]) / 1000

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            delayed(client_reader, up_writer, delay),
            plain(up_reader, client_writer),
        )
        for w in (up_writer, client_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: proxy.py UPSTREAM_PORT DELAY_MS")
    asyncio.run(main())
