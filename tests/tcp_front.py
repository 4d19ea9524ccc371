"""A TCP forwarder run as its own process: ``python tests/tcp_front.py LISTEN_PORT TARGET_PORT [DELAY_MS] [STALL_S]``.

The moto S3 server keeps its buckets in memory, so restarting it would lose them. Tests that
need "the S3 endpoint goes away and comes back" stop and restart this front process instead:
while it is down the endpoint port refuses connections (and open connections are reset), and
when it is back the same buckets and objects are there.

DELAY_MS (default 0) delivers what the server sends back that much later: a stand-in for
the network round trip to a remote S3 endpoint, used by benchmarks/storage.py.

STALL_S (default 0; ``inf`` for ever) makes a stalled endpoint: connections accepted during the
first STALL_S seconds after start are held open, their requests read and never answered nor
forwarded; later connections are forwarded as usual.
"""

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float = 0.0) -> None:
    if delay:
        return await _delay_line(reader, writer, delay)
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _delay_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Deliver each chunk ``delay`` seconds after it arrived (a fixed one-way latency: the
    chunks of one response arrive together, late once, not once per chunk)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def receive() -> None:
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + delay, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((loop.time() + delay, b""))

    receiver = asyncio.ensure_future(receive())
    try:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        receiver.cancel()
        writer.close()


async def _hold(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    """Read and drop whatever the client sends, answer nothing, until it hangs up."""
    try:
        while await client_r.read(1 << 16):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        client_w.close()


async def _handle(target_port: int, delay: float, stall_until: float, client_r: asyncio.StreamReader,
                  client_w: asyncio.StreamWriter) -> None:
    if asyncio.get_running_loop().time() < stall_until:
        return await _hold(client_r, client_w)
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w, delay))


async def _main(listen_port: int, target_port: int, delay: float, stall: float = 0.0) -> None:
    stall_until = asyncio.get_running_loop().time() + stall
    server = await asyncio.start_server(
        lambda r, w: _handle(target_port, delay, stall_until, r, w), "127.0.0.1", listen_port, reuse_address=True
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    delay_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    stall_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2]), delay_ms / 1000.0, stall_s))
