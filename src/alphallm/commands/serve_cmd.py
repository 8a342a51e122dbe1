"""``alphallm serve``: a local model behind an OpenAI-compatible completions API (``lm/server.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from alphallm.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over the OpenAI-compatible /v1/completions API, for --model http://HOST:PORT/v1",
    )
    p.add_argument("--model", required=True, help="model directory, shipped model name or hub id")
    p.add_argument("--name", help="the model id clients name (default: --model as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: a free one)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto (default auto)")
    p.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default auto: fp32 on CPU)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alphallm.lm.hf import TransformersLM
    from alphallm.lm.server import make_server

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a port (0 to 65535)")
    lm = TransformersLM.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    try:
        server = make_server(lm, args.name or args.model, args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving {args.name or args.model} at http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
