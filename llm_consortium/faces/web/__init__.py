"""``llm consortium serve``: a local web viewer of the runs the plugin
records, live and past, where a saved consortium can also be asked.

Its packages (the ``web`` extra: starlette, uvicorn, markdown-it-py) are
imported only by ``app``, which only ``serve`` imports: nothing here costs
a plain ``llm`` command anything.
"""

# The extra's top-level modules (``extras.install_command("web")`` says how to get them).
PACKAGES = ("starlette", "uvicorn", "markdown_it")
