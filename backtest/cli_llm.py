"""``backtest llm``: run a real language model on this machine.

``backtest llm serve`` starts llama.cpp's OpenAI-compatible server (llama-cpp-python) on a
loopback port with the bundled SmolLM2-135M-Instruct or any GGUF file, prints the base URL
to put in a routing file (``profile = "local"``, ``base_url = ...``) and serves until
interrupted. A run whose routing has ``profile = "local"`` and no ``base_url`` does not
need it: it starts its own server at its first cassette miss.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["llm_app"]

llm_app = typer.Typer(
    help="Run a local language model (llama.cpp).", no_args_is_help=True, rich_markup_mode=None
)
console = Console()


@llm_app.command("serve")
def _serve(
    model: Annotated[
        Path | None,
        typer.Option(help="A GGUF model file (default: the bundled SmolLM2-135M-Instruct)."),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="The model id the server answers to.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: a free one).")
    ] = None,
    n_ctx: Annotated[int, typer.Option(min=256, help="Context window in tokens.")] = 4096,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: all).")] = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the server's command line and exit.")
    ] = False,
) -> None:
    """Serve a GGUF model on 127.0.0.1 through llama.cpp's OpenAI-compatible server."""
    from backtest.llm.local import DEFAULT_MODEL_ALIAS, LocalServer

    server = LocalServer(
        model_path=model,
        alias=alias or DEFAULT_MODEL_ALIAS,
        port=port,
        n_ctx=n_ctx,
        n_threads=threads,
    )
    if print_only:
        if server.port is None:
            server.port = 8000
        console.print(" ".join(server.command()), soft_wrap=True)
        return
    started = time.perf_counter()
    with server:
        console.print(
            f"Serving {escape(server.alias)} at {server.base_url} (ready in "
            f'{time.perf_counter() - started:.1f} s). In a routing file: profile = "local", '
            f'base_url = "{server.base_url}". Ctrl-C stops it.',
            soft_wrap=True,
        )
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("Stopping.")
