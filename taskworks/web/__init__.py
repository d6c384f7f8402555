"""The dashboard: Jinja2 pages (autoescaped) and local static files, no CDN."""
