"""The dashboard's files: local only (no CDN), autoescaped, and a script that never
writes HTML."""

from __future__ import annotations

import re

from taskworks.web.pages import HERE, templates


def test_templates_autoescape() -> None:
    rendered = templates.env.from_string("{{ v }}").render(v="<b>x</b>")
    assert rendered == "&lt;b&gt;x&lt;/b&gt;"
    for path in (HERE / "templates").glob("*.html"):
        assert "|safe" not in path.read_text().replace(" ", ""), path.name


def test_no_file_loads_anything_from_another_origin() -> None:
    for path in [*(HERE / "templates").glob("*.html"), *(HERE / "static").iterdir()]:
        text = path.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path.name
        assert "cdn" not in text.lower(), path.name


def test_the_script_never_writes_html() -> None:
    script = (HERE / "static" / "app.js").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in code, sink
