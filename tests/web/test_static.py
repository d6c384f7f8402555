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


def test_the_scripts_never_write_html() -> None:
    scripts = sorted((HERE / "static").glob("*.js"))
    assert [p.name for p in scripts][:1] == ["app.js"]
    for path in scripts:
        lines = path.read_text().splitlines()
        code = "\n".join(line for line in lines if not line.strip().startswith("//"))
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function"):
            assert sink not in code, (path.name, sink)
