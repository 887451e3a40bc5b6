"""The ``streamrnn`` command line: thin Click commands over the public API.

Errors raised on purpose (``StreamRNNError``) become one line on stderr and
exit status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from streamrnn import __version__
from streamrnn.errors import StreamRNNError


class _Group(click.Group):
    """Turns streamrnn's typed errors into one clear line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StreamRNNError as e:
            click.echo(f"streamrnn: error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamrnn")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int):
    """streamrnn: real-time recurrent networks over audio and ZeroMQ streams."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


# --- info -------------------------------------------------------------------------------
@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(model: str, as_json: bool):
    """Describe MODEL (a .safetensors path or a bundled name): cell, sizes, parameters,
    labels, front end and file size."""
    from streamrnn.nn.modelfile import model_metadata, resolve_model_path
    from streamrnn import load_model

    path = resolve_model_path(model)
    m = load_model(path)
    d = model_metadata(m)
    d.update(path=str(path), file_bytes=path.stat().st_size, n_params=m.n_params,
             output_size=m.output_size)
    if as_json:
        click.echo(json.dumps(d))
        return
    head = d["head"]
    click.echo(f"model       {d.get('name', path.stem)}  ({path}, {d['file_bytes']} bytes)")
    click.echo(f"cell        {m.cell}, {m.num_layers} layer(s), input {m.input_size}, hidden {m.hidden_size}")
    click.echo(f"parameters  {m.n_params}")
    if head:
        click.echo(f"head        {m.output_size} output(s), {head['activation']}, labels {head['labels']}")
    else:
        click.echo(f"head        none (outputs the top hidden state, {m.hidden_size} values)")
    click.echo(f"norm        {'yes' if m.arch.has_norm else 'no'}")
    fe = d["frontend"]
    click.echo(f"front end   {json.dumps(fe) if fe else 'none (the model takes feature frames)'}")


def main():
    cli(prog_name="streamrnn")


if __name__ == "__main__":
    main()
