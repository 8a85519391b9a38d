"""One collection of one Room and what it becomes: metric families for `/metrics`, a verdict for `check`."""
