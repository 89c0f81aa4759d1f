"""HTML reports: jinja2 templates and matplotlib figures. ``render_*`` is pure, ``write_*`` does I/O."""
