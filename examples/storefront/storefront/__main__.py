"""``python -m storefront [--host H] [--port P]``: serve the demo storefront."""

from __future__ import annotations

import argparse

import uvicorn

from storefront.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="storefront", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, server_header=False)


if __name__ == "__main__":
    main()
