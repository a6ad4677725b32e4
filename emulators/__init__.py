"""Stand-ins for the services the connector talks to, speaking their real wire contracts on 127.0.0.1."""

import time


def serve_until_interrupted() -> None:
    """Keep the process (and the emulator's server thread) alive until Ctrl-C or SIGTERM's KeyboardInterrupt."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
